"""`workbench cluster`: automatic supernodes and a readable circuit for a saved graph.

    workbench cluster GRAPH --out supernodes.json [--model M --transcoders T --labels L] [--budget K]
        [--no-labels] [--families F] [--prompts FILE | --activations DIR] [clustering flags]

Prunes the graph (or reads ``--prune FILE`` from ``workbench prune``), clusters the pruned graph's
features (:class:`analyses.supernodes.clustering.SupernodeClustering`), picks at most K groups
(:class:`analyses.supernodes.circuit.ReadableCircuit`) and writes JSON::

    {"supernodes": [{"label", "members": [{"layer", "pos", "feature"}], "node_ids": [...]}, ...],
     "pinnedIds": [...], "qParams": {"pinnedIds", "supernodes"},
     "scores": {"pruned": {"replacement", "completeness"}, "circuit": {...}, "compression",
                "sign_consistency": {...}, "interventions": {...}  (with --model)},
     "config": {...}, "argv": [...]}

``--transcoders`` adds the virtual-weight similarity and checks the graph against them; ``--model``
(with ``--transcoders``) ablates every group on the real model; ``--prompts`` (with both) runs
unlabelled text through them and adds the co-activation similarity (features that fire on the
same kind of token) and the features' roles (what each reads or predicts on that text,
:mod:`analyses.families.roles`: features of different roles never share a group, and without labels
the roles name the groups; ``roles.split_half`` says how steady they are on this sample: the share of features
that keep their role between its even and odd prompts, with a warning below 90%); ``--activations`` reads that
sample from a run of ``workbench activations`` instead (the roles need ``--model`` too). Feed the file to
``workbench export GRAPH --supernodes supernodes.json`` to open the groups in the viewers. Every flag's default
and help come from the configs in :mod:`analyses.supernodes.config` and, for the ``--role-*`` flags,
:class:`analyses.families.roles.RolesConfig`.
"""

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tracer.io import loads_json
from workbench.cli_model import add_model_placement, model_placement
from workbench.cli_threads import add_threads_argument, threaded
from workbench.cmd_graphtools import SUPERNODES_FORMAT as FORMAT
from workbench.cmd_graphtools import SUPERNODES_SCHEMA as SCHEMA_VERSION
from workbench.cmd_graphtools import read_prune
from workbench.config_cli import flag_name

logger = logging.getLogger(__name__)


def _given_thresholds(args: argparse.Namespace, cls: type) -> dict[str, float]:
    """The prune thresholds given on the command line; those not given get the config's defaults in ``args``."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    given = {}
    for key in ("node_threshold", "edge_threshold"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
        else:
            given[key] = float(getattr(args, key))
    return given


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from analyses.families.roles import RolesConfig
    from analyses.supernodes.config import CircuitConfig, ClusteringConfig, InterventionConfig
    from workbench.config_cli import add_config_arguments, plain_help

    p = sub.add_parser("cluster", help="automatic supernodes and a readable circuit for a graph",
                       description=plain_help(__doc__.split("\n\n")[0]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("graph", metavar="GRAPH", help="graph file (native .safetensors or .npz)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--model", default=None, help="local model folder: ablate every group on it (needs --transcoders)")
    add_model_placement(p, used="(with --model)")
    p.add_argument("--transcoders", default=None, help="the graph's transcoders: virtual-weight similarity, checks")
    names = p.add_mutually_exclusive_group()
    names.add_argument("--labels", default=None,
                       help="feature labels (our JSONL or a Neuronpedia export) to name groups")
    names.add_argument("--no-labels", action="store_true", help="use no labels at all (groups named by their "
                                                                "features' role with --prompts / --activations and "
                                                                "--model, else by layer, position and size)")
    p.add_argument("--families", default=None, help='feature families JSON ({"families": [{"layer", "features"}]})')
    sample = p.add_mutually_exclusive_group()
    sample.add_argument("--prompts", default=None,
                        help="unlabelled text, one prompt per line, for the co-activation similarity and the features' "
                             "roles (one role per group; needs --model and --transcoders; a few thousand sentences of "
                             "the model's usual text)")
    sample.add_argument("--activations", default=None, metavar="DIR",
                        help="the co-activation sample from a `workbench activations` run of these transcoders "
                             "(its feature layers) instead of --prompts (needs --transcoders; the roles need --model "
                             "too)")
    p.add_argument("--allow-unk", action="store_true",
                   help="with --prompts: read words the tokenizer does not know as its unknown token (default: refuse)")
    p.add_argument("--prune", default=None, help="a prune result from `workbench prune` (default: prune here)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="also draw the supernode graph (groups numbered in the order of the JSON's 'supernodes') "
                        "and the clustering's dendrogram into DIR, as PNG and SVG")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    add_threads_argument(p, default=None)
    add_config_arguments(p.add_argument_group("readable circuit"), CircuitConfig)
    add_config_arguments(p.add_argument_group("clustering"), ClusteringConfig)
    add_config_arguments(p.add_argument_group("intervention check (with --model)"), InterventionConfig)
    add_config_arguments(p.add_argument_group("feature roles (with --prompts, or --activations and --model)"),
                         RolesConfig, exclude=("families",), prefix="role_")  # --role-min-share, ...
    # None unless given: with --prune, a threshold given must be the file's (the config's default is filled in later)
    p.set_defaults(func=threaded(run_cluster), node_threshold=None, edge_threshold=None)


# ----------------------------------------------------------------------------- inputs
def read_families(path: str, graph: Any = None, transcoders_source: str | None = None,
                  d_transcoder: int | None = None) -> dict[tuple[int, int], int]:
    """(layer, feature) -> family index from a families JSON: ``{"families": [{"layer": L, "features":
    [f, ...]}]}`` (a feature may also be ``[layer, feature]``, for cross-layer families). With ``graph``,
    a layer beyond the graph's, a negative feature, or a file that names none of the graph's features
    is refused (families of other transcoders would silently change the clustering); with
    ``transcoders_source``, so is a file that records other transcoders (:func:`families_transcoders`)."""
    from tracer.errors import WorkbenchError

    try:
        data = loads_json(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkbenchError(f"--families file must exist; got {path!r}. Check the path.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"--families must be a JSON file; {path!r} is not ({err}).") from None
    families = data.get("families") if isinstance(data, dict) else None
    if not isinstance(families, list):
        raise WorkbenchError(f"--families must hold a 'families' list; got {type(families).__name__} in {path!r}.")
    if transcoders_source is not None:
        families_transcoders(data, transcoders_source, path)
    elif graph is not None:  # an .npz graph without --transcoders: nothing to compare the file's transcoders with
        logger.warning("--families: the graph records no transcoders and no --transcoders was given, so %s cannot be "
                       "checked against the graph's transcoders; pass --transcoders to check it", path)

    def whole(x: object) -> int:  # 1.5, "2" and true are no feature or layer numbers (int() took them)
        if type(x) is not int:
            raise TypeError(x)
        return x

    out: dict[tuple[int, int], int] = {}
    for k, fam in enumerate(families):
        try:
            for feat in fam["features"]:
                key = ((whole(feat[0]), whole(feat[1])) if isinstance(feat, list) and len(feat) == 2
                       else (whole(fam["layer"]), whole(feat)))
                out[key] = k
        except (KeyError, TypeError, ValueError, IndexError):
            raise WorkbenchError(f"--families entry {k} must have an integer 'layer' and integer 'features' (or "
                                 f"[layer, feature] pairs); got {str(fam)[:80]!r}.") from None
    if graph is not None:
        check_families_match(out, graph, path, d_transcoder)
    return out


def families_transcoders(doc: Any, transcoders_source: str, path: str) -> None:
    """A ``workbench families`` document must be of these transcoders: by the signature it records, or
    the folder it names (:func:`tracer.transcoders.identity.check_same_transcoders`)."""
    from tracer.transcoders.identity import check_same_transcoders

    if isinstance(doc, dict):
        check_same_transcoders(doc.get("transcoder_signature"), doc.get("transcoders"), transcoders_source,
                               "--families", path)


def check_families_match(families: dict[tuple[int, int], int], graph: Any, path: str,
                         d_transcoder: int | None = None) -> None:
    """Families must be of the graph's transcoders: layers in range, features >= 0 (and below
    ``d_transcoder`` when the transcoders are known), and at least one of the graph's active features in a
    family."""
    from tracer.errors import WorkbenchError

    width = d_transcoder if d_transcoder is not None else float("inf")
    bad = next(((lay, f) for lay, f in families if not 0 <= lay < graph.n_layers or not 0 <= f < width), None)
    if bad is not None:
        raise WorkbenchError(f"--families must name features of the graph's {graph.n_layers} transcoder layers; got "
                             f"layer {bad[0]}, feature {bad[1]} in {path!r}. Use families of these transcoders.")
    active = {(int(lay), int(f)) for lay, _, f in graph.active_features.tolist()}
    if families and not active & families.keys():
        raise WorkbenchError(f"--families must hold some of the graph's features; none of the {len(families)} "
                             f"features in {path!r} is active in the graph. Use families of these transcoders.")


def _inputs(args: argparse.Namespace, graph: Any, prompts: list[str] | None,
            roles_config: Any = None, device: Any = "cpu") -> dict[str, Any]:
    from tracer.errors import WorkbenchError
    from tracer.graph.checks import check_transcoders_match

    out: dict[str, Any] = {"loaded": None, "transcoders": None, "labels": None, "families": None, "prune": None,
                           "coactivation": None, "roles": None}
    if args.prune:  # first: it needs no model
        out["prune"], out["prune_thresholds"] = read_prune(args.prune, graph)
    if args.model:
        from tracer.models import load_model

        out["loaded"] = load_model(args.model, device=device)
    if args.transcoders:
        from tracer.transcoders.loaders import load_transcoders

        loaded = out["loaded"]
        out["transcoders"] = load_transcoders(args.transcoders, n_layers=loaded.n_layers if loaded else None,
                                              d_model=loaded.d_model if loaded else None)  # no model: the graph's
        # depth is checked below (the loader's message would name a model's num_hidden_layers)
        check_transcoders_match(graph, out["transcoders"], "--transcoders")
    if args.labels and not args.no_labels:
        if not Path(args.labels).is_file():
            raise WorkbenchError(f"--labels file must exist; got {args.labels!r}. Check the path.")
        from tracer.labels import check_labels_match, load_labels

        out["labels"] = load_labels(args.labels)
        tcs = out["transcoders"]  # an .npz graph records no set: the labels must then be --transcoders'
        if graph.scan or tcs is not None:  # else the estimator checks their layers and warns that it can do no more
            check_labels_match(out["labels"], n_layers=graph.n_layers, scan=graph.scan or tcs.scan,
                               source=args.labels, owner="the graph" if graph.scan else "--transcoders")
    if args.families:
        tcs = out.get("transcoders")  # without --transcoders: those the graph records, where they still exist
        out["families"] = read_families(args.families, graph, tcs.source if tcs is not None else
                                        (graph.transcoder_id or None), None if tcs is None else tcs.d_transcoder)
    if args.activations:
        from tracer.activations import ActivationStore
        from workbench.corpus_evidence import store_coactivation

        tcs = out["transcoders"]
        evidence = store_coactivation(
            ActivationStore(args.activations), n_layers=graph.n_layers, d_transcoder=tcs.d_transcoder, kind=tcs.kind,
            source=tcs.source, loaded=out["loaded"], roles_config=roles_config, split_half=True)
        out["coactivation"], out["roles"], out["roles_split_half"] = evidence
    if prompts is not None:
        from workbench.corpus_evidence import prompt_coactivation

        evidence = prompt_coactivation(out["loaded"], out["transcoders"], prompts, verbose=not args.quiet,
                                       allow_unk=args.allow_unk, roles_config=roles_config, split_half=True)
        out["coactivation"], out["roles"], out["roles_split_half"] = evidence
    return out


# ----------------------------------------------------------------------------- run
def analyse_circuit(graph: Any, inputs: dict[str, Any], configs: dict[str, Any], tokens: list[str] | None,
             verbose: bool) -> tuple[Any, Any]:
    """The readable circuit of ``graph`` and, when ``inputs["loaded"]`` holds a model, its ablation check.

    ``inputs``: loaded, transcoders, labels, families, prune, coactivation, roles (each may be None or absent);
    ``configs``: circuit, clustering, interventions (the config dataclasses)."""
    from analyses.supernodes.circuit import ReadableCircuit, group_nodes
    from analyses.supernodes.clustering import SupernodeClustering
    from analyses.supernodes.interventions import check_supernodes

    circuit = ReadableCircuit.from_config(configs["circuit"],
                                          clustering=SupernodeClustering.from_config(configs["clustering"]))
    circuit.fit(graph, prune_result=inputs["prune"], transcoders=inputs["transcoders"], families=inputs["families"],
                labels=inputs["labels"], token_strings=tokens, coactivation=inputs.get("coactivation"),
                roles=inputs.get("roles"))
    check = None
    if inputs["loaded"] is not None:
        coarse = circuit.coarse_graph_  # its order, the JSON's: the chosen_ order differs (rows went to other groups)
        groups = [coarse.members(i).tolist() for i in group_nodes(coarse)]
        check = check_supernodes(inputs["loaded"], inputs["transcoders"], graph, groups,
                                 config=configs["interventions"], verbose=verbose)
    return circuit, check


def coarse_links(coarse: Any) -> list[dict[str, Any]]:
    """Every link of the coarse graph that touches a supernode (the links the sign-consistency summary
    is over): its ends (a supernode's label, which is distinct, or a single node's viewer id), weight,
    sign consistency (the share of member-link |mass| whose sign matches the link's) and member-link
    |mass|, strongest first."""
    from analyses.supernodes.circuit import supernode_links

    sizes = coarse.sizes()
    name = [coarse.label[i] if sizes[i] > 1 else coarse.node(i).node_ids[0] for i in range(coarse.n_nodes)]
    rows = [{"source": name[j], "target": name[i], "weight": float(coarse.adjacency[i, j]),
             "sign_consistency": float(coarse.sign_consistency[i, j]), "mass": float(coarse.link_mass[i, j])}
            for i, j in zip(*(a.tolist() for a in supernode_links(coarse)))]
    return sorted(rows, key=lambda r: -r["mass"])


def supernodes_document(circuit: Any, check: Any, graph: Any,
                        prune: dict[str, float] | None = None) -> dict[str, Any]:
    """The JSON written by ``workbench cluster`` (without config and argv)."""
    from analyses.supernodes.circuit import group_nodes

    coarse = circuit.coarse_graph_
    groups = []
    for i in group_nodes(coarse):  # the order analyse_circuit's check ran the groups in
        node = coarse.node(i)
        groups.append({"label": node.label, "kind": node.kind,
                       "members": [{"layer": int(k[0]), "pos": int(k[1]), "feature": int(k[2])} for k in node.members],
                       "node_ids": list(node.node_ids)})
    scores = dataclasses.asdict(circuit.scores_)
    scores["links"] = coarse_links(coarse)
    if check is not None:
        per_group = [{"label": g["label"], "predicted_margin": float(check.predicted_margin[k]),
                      **{f"measured_margin_{m}": float(v[k]) for m, v in check.measured_margin.items()},
                      **{f"win_rate_{m}": float(v[k]) for m, v in check.win_rate.items()}}
                     for k, g in enumerate(groups)]
        scores["interventions"] = {"summary": check.summary, "clean_margin": check.clean_margin,
                                   "runner_up_in_graph": check.runner_up_in_graph, "n_unmatched": check.n_unmatched,
                                   "groups": per_group}
    qparams = coarse.qparams()
    doc: dict[str, Any] = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "prompt": graph.input_string,
                           "graph_fingerprint": graph.node_fingerprint(),
                           "similarities": list(circuit.clustering_.similarities_used_),
                           "role_constraint": bool(circuit.clustering_.roles_used_),
                           "supernodes": groups, "pinnedIds": qparams["pinnedIds"], "qParams": qparams,
                           "scores": scores}
    if prune is not None:  # the thresholds of the pruned view the node ids come from (`export` reads them)
        doc["prune"] = prune
    return doc


PLOT_FILES = tuple(f"{name}.{ext}" for name in ("supernode_graph", "dendrogram") for ext in ("png", "svg"))


def write_plots(circuit: Any, folder: Path) -> list[Path]:
    """The readable circuit's supernode graph (groups numbered as in the JSON) and the dendrogram of
    its clustering, as PNG and SVG."""
    from analyses.coarse import SupernodeGraphDisplay
    from analyses.supernodes.clustering import DendrogramDisplay
    from workbench.cli_safety import clear_outputs

    folder.mkdir(parents=True, exist_ok=True)
    graph = SupernodeGraphDisplay.from_coarse_graph(circuit.coarse_graph_, numbered=True)
    tree = DendrogramDisplay.from_result(circuit.clustering_)
    clear_outputs(folder, PLOT_FILES[0], PLOT_FILES[1:])  # an interrupted run leaves no plot of an earlier one
    return [display.savefig(folder / f"{name}.{ext}") for name, display in (("supernode_graph", graph),
                                                                            ("dendrogram", tree))
            for ext in ("png", "svg")]


def write_supernodes(path: str | Path, doc: dict[str, Any]) -> Path:
    """Write a supernodes document (strict JSON: NaN and inf become null) atomically."""
    from tracer.io import atomic_write_json

    return atomic_write_json(path, doc)


def _check_cluster_args(args: argparse.Namespace) -> Path:
    """Every input flag checked before any loading (which flags need which, inputs that exist, outputs that
    overwrite no input); returns the --out path."""
    from tracer.errors import WorkbenchError
    from workbench.cli_safety import check_out, need_input
    from workbench.cmd_graphtools import _check_graph_input

    _check_graph_input(args.graph)
    if args.model and not args.transcoders:
        raise WorkbenchError("--model needs --transcoders (the ablations run through them); got --model alone.")
    if args.activations and not args.transcoders:
        raise WorkbenchError("--activations needs --transcoders (the run must be of the graph's transcoders, and "
                             "they are checked against it); got --activations alone.")
    if args.prompts and not (args.model and args.transcoders):
        raise WorkbenchError("--prompts needs --model and --transcoders (the prompts run through them); got "
                             f"{'--model' if args.model else '--transcoders' if args.transcoders else 'neither'}.")
    _check_role_flags(args)
    inputs_given: list[str] = [args.graph]
    for flag, value, folder in (("--model", args.model, True), ("--transcoders", args.transcoders, True),
                                ("--labels", args.labels, False), ("--families", args.families, False),
                                ("--prune", args.prune, False), ("--prompts", args.prompts, False),
                                ("--activations", args.activations, True)):
        if value is not None:
            need_input(value, flag, folder=folder)
            inputs_given.append(value)
    out = check_out(args.out, inputs=inputs_given)
    if args.plots is not None:
        from workbench.cli_safety import check_distinct, check_out_files

        check_distinct(("--out", args.out), ("--plots", args.plots),  # --out must not be one of the plots either
                       *((f"--plots file {name!r}", Path(args.plots) / name) for name in PLOT_FILES))
        check_out(args.plots, inputs=inputs_given, folder=True, flag="--plots")
        check_out_files(args.plots, PLOT_FILES, inputs=[*inputs_given, args.out], flag="--plots")
    return out


def _check_role_flags(args: argparse.Namespace) -> None:
    """A --role-* flag set away from its default needs a sample that the roles are read from: --prompts, or
    --activations with --model (it would do nothing, yet be recorded)."""
    from analyses.families.roles import RolesConfig
    from tracer.errors import WorkbenchError

    default = RolesConfig()
    changed = [f.name for f in dataclasses.fields(RolesConfig) if f.name != "families"
               and getattr(args, "role_" + f.name) != getattr(default, f.name)]
    if changed and not (args.prompts or (args.activations and args.model)):
        flag = "--role-" + changed[0].replace("_", "-")
        raise WorkbenchError(f"{flag} needs a corpus sample to read the roles from; got none. Add --prompts (with "
                             "--model), or --activations with --model, or drop the flag.")


def _check_thresholds(given: dict[str, float], recorded: dict[str, float]) -> None:
    """Thresholds given on the command line must be the --prune file's (it was pruned at those)."""
    from tracer.errors import WorkbenchError

    for key, value in given.items():
        have = recorded.get(key)
        if have is not None and value != have:
            flag = flag_name(key)
            raise WorkbenchError(f"{flag} must match the --prune file's {have:g}; got {value:g}. Drop {flag}, "
                                 "or prune again at it with `workbench prune`.")


def run_cluster(args: argparse.Namespace) -> int:
    from analyses.families.roles import RolesConfig
    from analyses.supernodes.config import CircuitConfig, ClusteringConfig, InterventionConfig
    from tracer.errors import WorkbenchError
    from workbench.cmd_graphtools import _load_graph, _tokenizer
    from workbench.config_cli import config_from_args

    out = _check_cluster_args(args)
    _, device = model_placement(args)  # a bad --device is one line before any loading
    given = _given_thresholds(args, ClusteringConfig)
    try:
        configs: dict[str, Any] = {"circuit": config_from_args(CircuitConfig, args),
                                   "clustering": config_from_args(ClusteringConfig, args),
                                   "interventions": config_from_args(InterventionConfig, args),
                                   "roles": config_from_args(RolesConfig, args, prefix="role_")}
    except (ValueError, TypeError) as err:
        raise WorkbenchError(str(err)) from None
    prompts = None
    if args.prompts:
        from workbench.cmd_families import read_prompts

        prompts = read_prompts(args.prompts)  # before any loading: an empty file fails at once
    graph = _load_graph(args.graph)
    inputs = _inputs(args, graph, prompts, configs["roles"], device)
    _check_thresholds(given, inputs.get("prune_thresholds") or {})
    tok = inputs["loaded"].tokenizer if inputs["loaded"] is not None else _tokenizer(None, graph)
    tokens = [tok.decode([t]) for t in graph.input_tokens.tolist()] if tok is not None else None
    try:
        circuit, check = analyse_circuit(graph, inputs, configs, tokens, verbose=not args.quiet)
    except (ValueError, TypeError) as err:
        if isinstance(err, WorkbenchError):
            raise
        raise WorkbenchError(str(err).splitlines()[0]) from None
    clustering = configs["clustering"]
    thresholds = (inputs.get("prune_thresholds") if inputs["prune"] is not None else
                  {"node_threshold": clustering.node_threshold, "edge_threshold": clustering.edge_threshold})
    from workbench.provenance import run_record

    doc = supernodes_document(circuit, check, graph, thresholds)
    doc["graph"] = str(args.graph)
    if inputs["coactivation"] is not None:
        source = {"prompts": str(args.prompts)} if args.prompts else {"activations": str(args.activations)}
        doc["coactivation"] = {**source, "n_token_rows": int(inputs["coactivation"].n_rows)}
    if inputs["roles"] is not None:
        roles = inputs["roles"]
        steadiness = inputs.get("roles_split_half")
        doc["roles"] = {"n_roles": len(roles.names), "n_features": int((roles.role >= 0).sum()),
                        "min_share": roles.min_share, "predicts_on_word": roles.predicts_on_word,
                        "constraint": configs["clustering"].role_constraint,
                        "split_half": None if steadiness is None else steadiness.as_dict()}
    doc["config"] = {k: dataclasses.asdict(v) for k, v in configs.items()
                     if k != "roles" or inputs["roles"] is not None}  # roles settings only where roles were read
    if inputs["prune"] is not None:  # the --prune file's view was clustered, not one at the config's thresholds
        doc["config"]["clustering"].update(thresholds or {"node_threshold": None, "edge_threshold": None})
    doc["argv"] = list(getattr(args, "argv", sys.argv[1:]))
    doc["run"] = run_record(args)
    write_supernodes(out, doc)
    if args.plots is not None:
        write_plots(circuit, Path(args.plots))
    s = circuit.scores_
    print(f"clustered {args.graph}: {s.n_groups} groups ({s.n_supernodes} supernodes) hold {s.n_features}/"
          f"{s.n_pruned_features} features ({s.compression:.2f} per group); subgraph replacement/completeness "
          f"circuit {s.circuit['replacement']:.4f}/{s.circuit['completeness']:.4f}, pruned "
          f"{s.pruned['replacement']:.4f}/{s.pruned['completeness']:.4f}; similarities "
          f"{', '.join(doc['similarities'])} -> {out}")
    return 0

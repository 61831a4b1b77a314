"""`workbench prune`, `workbench export` and `workbench import-pt`: work on saved graphs.

* ``prune GRAPH --out PATH``: circuit-tracer's pruning; writes the node mask, the kept edges as
  (target, source) indices and the cumulative scores (``.npz``, or native safetensors with a JSON
  header), with the replacement/completeness scores of the full and the pruned graph, and prints
  a one-line summary.
* ``export GRAPH --format neuronpedia --out DIR``: the viewer JSON (``<slug>.json`` and
  ``graph-metadata.json``) for Neuronpedia or ``circuit-tracer start-server``.
* ``import-pt FILE.pt --out GRAPH --trust-pickle``: a circuit-tracer ``Graph.to_pt`` file to our
  format (native or ``.npz``).

Bad input raises ``WorkbenchError``: one line, exit status 2, nothing half-written.
"""

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

from tracer.io import loads_json
from workbench.config_cli import flag_name

logger = logging.getLogger(__name__)

_THRESHOLD_HELP = {
    "node": "keep the most influential nodes holding this fraction of the influence (default 0.8",
    "edge": "keep the highest-scoring edges holding this fraction of the edge score (default 0.98",
}
_SUPERNODES_DEFAULT = {"node": "; with --supernodes: the threshold the groups were made at, as their file records it",
                       "edge": "; with --supernodes: as recorded"}

SUPERNODES_FORMAT = "manifold-workbench-supernodes"
"""The ``format`` of a `workbench cluster` file (written by :mod:`workbench.cmd_cluster`, read by `export`)."""
SUPERNODES_SCHEMA = 1


def _add_thresholds(p: argparse.ArgumentParser, *, supernodes: bool = False) -> None:
    for kind in ("node", "edge"):
        p.add_argument(f"--{kind}-threshold", type=float, default=None,
                       help=_THRESHOLD_HELP[kind] + (_SUPERNODES_DEFAULT[kind] if supernodes else "") + ")")
    p.add_argument("--quiet", "-q", action="store_true", help="no info logs")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("prune", help="prune a saved graph and score it",
                       description="Prune a graph as circuit-tracer does and write the result "
                                   "(.npz, or native safetensors) with the graph scores.")
    p.add_argument("graph", metavar="GRAPH", help="graph file (native .safetensors or .npz)")
    p.add_argument("--out", required=True, help="output file (.npz, or native .safetensors)")
    _add_thresholds(p)
    p.set_defaults(func=run_prune)

    p = sub.add_parser("export", help="export a graph for the Neuronpedia / circuit-tracer viewer",
                       description="Write <slug>.json and graph-metadata.json into a folder that "
                                   "`circuit-tracer start-server --graph_file_dir` or Neuronpedia reads.")
    p.add_argument("graph", metavar="GRAPH", help="graph file (native .safetensors or .npz)")
    p.add_argument("--format", default="neuronpedia", choices=["neuronpedia"], help="output format")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--slug", default=None, help="graph name in the viewer (default: the file name without its "
                   "extension, with a short hash where it has other characters than letters, digits, '.', '_', '-'; a "
                   "default that names another graph in --out is refused, a --slug given replaces it)")
    p.add_argument("--labels", default=None, help="feature labels (our JSONL or a Neuronpedia export)")
    p.add_argument("--tokenizer", default=None,
                   help="local tokenizer folder or cached name to decode tokens (default: the graph's model)")
    p.add_argument("--scan", default=None, help="viewer scan / model id (default: the graph's)")
    p.add_argument("--supernodes", default=None,
                   help='JSON file: [["label", "node_id", ...], ...] (or {"supernodes": [...], "pinnedIds": '
                        '[...]}), or the output of `workbench cluster`')
    p.add_argument("--prune", default=None, help="a prune result of GRAPH from `workbench prune` (default: prune "
                   "here; a large graph prunes for minutes)")
    _add_thresholds(p, supernodes=True)
    p.set_defaults(func=run_export)

    p = sub.add_parser("import-pt", help="import a circuit-tracer .pt graph (a pickle: needs --trust-pickle)",
                       description="Convert a circuit-tracer Graph.to_pt file into our format. The file is a "
                                   "pickle, so this needs --trust-pickle; even then only graph data "
                                   "is loaded.")
    p.add_argument("pt_file", metavar="FILE.pt", help="circuit-tracer graph file")
    p.add_argument("--out", required=True, help="output graph (.npz, or native .safetensors)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="confirm that you trust the source of FILE.pt (it is a pickle)")
    p.add_argument("--quiet", "-q", action="store_true", help="no info logs")
    p.set_defaults(func=run_import_pt)


def _check_graph_input(path_str: str) -> Path:
    """GRAPH must be a readable native or .npz graph (a .pt gets the import hint)."""
    from tracer.errors import WorkbenchError
    from workbench.cli_safety import need_input

    if Path(path_str).suffix == ".pt":
        raise WorkbenchError(f"GRAPH must be a native (.safetensors) or .npz graph; got {path_str!r}, a "
                             "circuit-tracer .pt. Convert it first: workbench import-pt FILE.pt --out "
                             "graph.safetensors --trust-pickle")
    return need_input(path_str, "GRAPH")


def _load_graph(path_str: str) -> Any:
    from tracer.graph import Graph

    return Graph.load(_check_graph_input(path_str), mmap=True)  # read out of core, one block of rows at a time


def _prune_config(args: argparse.Namespace, recorded: dict[str, Any] | None = None) -> Any:
    """The thresholds given, else those ``recorded`` (a supernodes file's pruned view), else the defaults."""
    from tracer.graph import PruneConfig

    chosen = {k: v for k, v in (recorded or {}).items() if k in ("node_threshold", "edge_threshold")}
    for key in ("node_threshold", "edge_threshold"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    return PruneConfig(**chosen)


def read_prune(path: str, graph: Any) -> tuple[Any, dict[str, float] | None]:
    """``--prune`` of `cluster` and `export`: a `workbench prune` result of this very graph (same node
    fingerprint; a file from before fingerprints, by node count) and its thresholds (None when it records none)."""
    from tracer.errors import WorkbenchError
    from tracer.graph import load_prune_result

    result, meta = load_prune_result(path)
    thresholds = ({k: float(meta[k]) for k in ("node_threshold", "edge_threshold")}
                  if all(isinstance(meta.get(k), (int, float)) for k in ("node_threshold", "edge_threshold")) else None)
    if result.node_mask.numel() != graph.n_nodes:
        raise WorkbenchError(f"--prune must be a prune result of GRAPH ({graph.n_nodes} nodes); got one of "
                             f"{result.node_mask.numel()} nodes.")
    made_on = meta.get("graph_fingerprint")
    if made_on is not None and made_on != graph.node_fingerprint():
        raise WorkbenchError(f"--prune must be a prune result of GRAPH; got one of another graph "
                             f"({meta.get('graph')!r}: other tokens, features or logits, though the node count is the "
                             "same). Prune GRAPH with `workbench prune`, or drop --prune.")
    return result, thresholds


def run_prune(args: argparse.Namespace) -> int:
    from workbench.cli_safety import check_out

    _check_graph_input(args.graph)
    out = check_out(args.out, inputs=[args.graph])
    config = _prune_config(args)
    graph = _load_graph(args.graph)
    from tracer.graph import graph_scores, prune_graph, save_prune_result, subgraph_scores
    from workbench.provenance import run_record

    result = prune_graph(graph, config)
    logger.info("scoring the full and the pruned graph (replacement, completeness)")
    full = graph_scores(graph)
    pruned = subgraph_scores(graph, prune_result=result)
    meta = {
        "graph": str(args.graph), "graph_fingerprint": graph.node_fingerprint(),
        "node_threshold": config.node_threshold, "edge_threshold": config.edge_threshold, "n_nodes": graph.n_nodes,
        "n_kept_nodes": int(result.node_mask.sum()), "n_kept_edges": int(result.edge_index.shape[1]),
        "scores": {"full": full._asdict(), "pruned": pruned._asdict()}, "run": run_record(args),
    }
    save_prune_result(result, out, meta=meta)
    print(f"pruned {args.graph}: kept {meta['n_kept_nodes']}/{graph.n_nodes} nodes, "  # noqa: T201
          f"{meta['n_kept_edges']} "
          f"edges; replacement/completeness full {full.replacement:.4f}/{full.completeness:.4f}, "
          f"pruned {pruned.replacement:.4f}/{pruned.completeness:.4f} -> {out}")
    args.fast_exit = True  # nothing left to free: the CLI may end the process without teardown
    return 0


def _tokenizer(name: str | None, graph: Any) -> Any:
    """A local tokenizer (never downloads), or None with a warning."""
    from tracer.errors import WorkbenchError

    wanted = name or graph.model_id
    if not wanted:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(wanted, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - any failure: fall back or report
        if name:
            raise WorkbenchError(f"--tokenizer must be a local tokenizer folder or cached name; got {name!r} "
                                 f"({type(err).__name__}). Check the path.") from None
        logger.warning("could not load the tokenizer of %r locally (%s); prompt tokens are shown as ids",
                       wanted, type(err).__name__)
        return None


def _read_supernodes(path_str: str | None) -> tuple[Any, Any, dict[str, Any]]:
    """(viewer groups, pinned ids, what a `workbench cluster` file records of its graph: ``prompt`` and the
    ``prune`` thresholds of the view its node ids come from)."""
    from tracer.errors import WorkbenchError

    if path_str is None:
        return None, None, {}
    path = Path(path_str)
    try:
        data = loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkbenchError(f"--supernodes file must exist; got {path_str!r}. Check the path.") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise WorkbenchError(f"--supernodes must be a JSON file; {path_str!r} is not ({err}).") from None
    if isinstance(data, dict) and data.get("format") == SUPERNODES_FORMAT and (
            type(data.get("schema_version")) is not int or data["schema_version"] != SUPERNODES_SCHEMA):
        raise WorkbenchError(f"--supernodes schema_version must be {SUPERNODES_SCHEMA}; got "
                             f"{data.get('schema_version')!r} in {path_str!r}. Cluster the graph again.")
    if isinstance(data, dict) and "supernodes" not in data:  # another command's JSON (it said "got 'None'")
        raise WorkbenchError(f"--supernodes must be a `workbench cluster` file (a 'supernodes' list) or the viewer's "
                             f"[[label, node_id, ...], ...]; got {path_str!r}, a JSON object without 'supernodes' "
                             f"(keys {', '.join(list(data)[:5])}{', ...' if len(data) > 5 else ''}).")
    groups, pinned = (data.get("supernodes"), data.get("pinnedIds")) if isinstance(data, dict) else (data, None)
    groups = _viewer_groups(groups, path_str)
    if not isinstance(groups, list) or not all(isinstance(g, list) and all(isinstance(x, str) for x in g)
                                               for g in groups):
        raise WorkbenchError(f"--supernodes must hold a list of [label, node_id, ...] lists of strings; got "
                             f"{str(groups)[:60]!r} in {path_str!r}.")
    if pinned is not None and not (isinstance(pinned, list) and all(isinstance(x, str) for x in pinned)):
        raise WorkbenchError(f"--supernodes pinnedIds must be a list of node id strings; got {str(pinned)[:60]!r}.")
    recorded = {k: data[k] for k in ("prompt", "prune", "graph_fingerprint") if isinstance(data, dict) and k in data}
    if "prune" in recorded and not (isinstance(recorded["prune"], dict) and all(
            isinstance(recorded["prune"].get(k), (int, float)) for k in ("node_threshold", "edge_threshold"))):
        raise WorkbenchError(f"--supernodes 'prune' must hold node_threshold and edge_threshold numbers; got "
                             f"{str(recorded['prune'])[:60]!r} in {path_str!r}.")
    return groups, pinned, recorded


def _export_inputs(args: argparse.Namespace) -> tuple[Path, str, list[str | None]]:
    """Check every input and output of `export` before any work: (out folder, slug, inputs)."""
    from tracer.errors import WorkbenchError
    from workbench.cli_safety import check_name, check_out, check_out_files, need_input

    _check_graph_input(args.graph)
    for flag, value in (("--labels file", args.labels), ("--supernodes file", args.supernodes),
                        ("--prune file", args.prune)):
        if value is not None:
            need_input(value, flag)
    for flag, value in (("--slug", args.slug), ("--scan", args.scan)):
        if value is not None and not value.strip():  # "" fell back to the default silently
            raise WorkbenchError(f"{flag} must be non-empty; got {value!r}. Leave the flag out for the default.")
    slug = args.slug if args.slug is not None else default_slug(args.graph)
    check_name(slug, "--slug")
    if slug == "graph-metadata":
        raise WorkbenchError("--slug must not be 'graph-metadata'; got it. That name is the folder's index.")
    tokenizer_dir = args.tokenizer if args.tokenizer and Path(args.tokenizer).exists() else None
    inputs = [args.graph, args.labels, args.supernodes, args.prune, tokenizer_dir]
    out = check_out(args.out, inputs=inputs, folder=True)
    check_out_files(out, [f"{slug}.json", "graph-metadata.json"], inputs=inputs)
    return out, slug, inputs


def default_slug(graph_path: str) -> str:
    """The viewer name of a graph file: its stem in letters, digits, '.', '_' and '-'; where that loses
    characters ("月曜", "Tag ä", "day 1"), with 8 hex digits of the stem's sha256, so that two names never
    share a slug ("Tag ä" and "Tag ö" were both "Tag", and the second export replaced the first)."""
    import hashlib

    stem = Path(graph_path).stem
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:100]
    if slug == stem:
        return slug
    return f"{slug[:91].rstrip('-.') or 'graph'}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"


def _check_slug_free(out: Path, slug: str, graph: Any, chosen: bool) -> None:
    """A default slug that already names another graph in the folder's index is refused (its export would
    replace that graph's entry): another node fingerprint, or for an entry written before fingerprints,
    another prompt. A slug given with --slug replaces it, as asked. A damaged index is left to the
    export's own one-line check."""
    from tracer.errors import WorkbenchError

    if chosen:
        return
    index = out / "graph-metadata.json"
    try:
        doc = loads_json(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return
    graphs = doc.get("graphs") if isinstance(doc, dict) else None
    for entry in graphs if isinstance(graphs, list) else []:
        if not isinstance(entry, dict) or entry.get("slug") != slug:
            continue
        info = entry.get("info")
        theirs = info.get("graph_fingerprint") if isinstance(info, dict) else None
        prompt = entry.get("prompt")
        other = (theirs != graph.node_fingerprint() if isinstance(theirs, str) else
                 isinstance(prompt, str) and bool(prompt) and bool(graph.input_string) and prompt != graph.input_string)
        if other:
            raise WorkbenchError(f"--slug: the default {slug!r} already names another graph in {str(index)!r}; "
                                 f"pass --slug NAME to keep both, or --slug {slug} to replace it.")


def _viewer_groups(groups: Any, path_str: str) -> Any:
    """`workbench cluster`'s groups ({"label", "node_ids", ...}) -> [[label, node_id, ...]] for the
    groups of two or more nodes (single nodes are pinned, not grouped); viewer lists pass as they are."""
    from tracer.errors import WorkbenchError

    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups) or not groups:
        return groups
    out = []
    for k, g in enumerate(groups):
        ids = g.get("node_ids")
        if not isinstance(g.get("label"), str) or not isinstance(ids, list):
            raise WorkbenchError(f"--supernodes entry {k} must have a 'label' and 'node_ids'; got {str(g)[:80]!r} "
                                 f"in {path_str!r}.")
        if len(ids) > 1:
            out.append([g["label"], *[str(i) for i in ids]])
    return out


def run_export(args: argparse.Namespace) -> int:
    out, slug, _ = _export_inputs(args)
    supernodes, pinned, recorded = _read_supernodes(args.supernodes)
    config = _prune_config(args, recorded.get("prune"))
    labels = None
    if args.labels:
        from tracer.labels import load_labels

        labels = load_labels(args.labels)
    graph = _load_graph(args.graph)
    if labels is not None:
        from tracer.labels import check_labels_match

        check_labels_match(labels, n_layers=graph.n_layers, scan=graph.scan, source=args.labels)  # --scan: a viewer id
    _check_supernodes_graph(recorded, graph, args.supernodes)
    result = None
    if args.prune:
        result, config = _saved_prune(args, graph, recorded.get("prune"))
    _check_slug_free(out, slug, graph, chosen=args.slug is not None)
    from tracer.graph.export import export_neuronpedia

    path = export_neuronpedia(graph, out, slug=slug, prune_config=config, prune_result=result, labels=labels,
                              supernodes=supernodes, pinned_ids=pinned,
                              tokenizer=_tokenizer(args.tokenizer, graph), scan=args.scan,
                              unknown_ids="error" if supernodes or pinned else "warn")
    data = json.loads(path.read_text(encoding="utf-8"))
    print(f"exported {args.graph}: {len(data['nodes'])} nodes, {len(data['links'])} links -> {path}")  # noqa: T201
    return 0


def _saved_prune(args: argparse.Namespace, graph: Any, grouped_at: dict[str, Any] | None) -> tuple[Any, Any]:
    """``export --prune``: (the result, the PruneConfig the viewer records). The file's thresholds rule; thresholds
    given beside them, or a --supernodes file made at others, are refused rather than silently overridden."""
    from tracer.errors import WorkbenchError
    from tracer.graph import PruneConfig

    result, thresholds = read_prune(args.prune, graph)
    if thresholds is None:  # a file that records none (the reference harness's .npz): the thresholds given
        return result, _prune_config(args, grouped_at)
    for key in ("node_threshold", "edge_threshold"):
        flag, given = flag_name(key), getattr(args, key)
        if given is not None and given != thresholds[key]:
            raise WorkbenchError(f"{flag} must match the --prune file's {thresholds[key]:g}; got {given:g}. Drop "
                                 f"{flag}, or prune again at it with `workbench prune`.")
        if grouped_at is not None and float(grouped_at[key]) != thresholds[key]:
            raise WorkbenchError(f"--prune must be made at the --supernodes file's {key} {float(grouped_at[key]):g} "
                                 f"(its node ids come from that view); got {thresholds[key]:g}. Pass the prune result "
                                 "`workbench cluster` used, or drop --prune.")
    return result, PruneConfig(**thresholds)


def _check_supernodes_graph(recorded: dict[str, Any], graph: Any, path: str | None) -> None:
    """A `workbench cluster` file must be of this graph: by the node fingerprint it records (the same graph as
    .npz or safetensors passes), or for a file written before fingerprints, by its prompt."""
    from tracer.errors import WorkbenchError

    made_on = recorded.get("graph_fingerprint")
    if isinstance(made_on, str):
        if made_on != graph.node_fingerprint():
            raise WorkbenchError(f"--supernodes must be groups of this graph; got groups of another graph in {path!r} "
                                 "(its nodes differ: another prompt, other transcoders or another feature cap). "
                                 "Cluster this graph with `workbench cluster`.")
        return
    prompt = recorded.get("prompt")
    if isinstance(prompt, str) and prompt and graph.input_string and prompt != graph.input_string:
        raise WorkbenchError(f"--supernodes must be groups of this graph ({graph.input_string!r}); got groups of "
                             f"{prompt!r} in {path!r}. Cluster this graph with `workbench cluster`.")


def run_import_pt(args: argparse.Namespace) -> int:
    from tracer.errors import WorkbenchError
    from workbench.cli_safety import check_out, need_input

    need_input(args.pt_file, "FILE.pt")
    out = check_out(args.out, inputs=[args.pt_file])
    from tracer.graph.ct_import import load_circuit_tracer_pt

    if not args.trust_pickle and Path(args.pt_file).is_file():
        raise WorkbenchError(f"{args.pt_file!r} is a pickle; pass --trust-pickle only if you trust its source. "
                             "Loading a pickle can run code.")
    graph = load_circuit_tracer_pt(args.pt_file, trust_pickle=args.trust_pickle)
    graph.save(out)
    print(f"imported {args.pt_file}: {graph.n_nodes} nodes ({graph.n_selected} features, "  # noqa: T201
          f"{graph.n_logits} "
          f"logits) -> {out}")
    return 0

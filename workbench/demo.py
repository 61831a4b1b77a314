"""`workbench demo`: trace the demo world's prompts, prune, analyse, and write a plain HTML report.

On the embedded demo world (``data/world``) it traces a day-arithmetic and a two-hop prompt
through the per-layer transcoders, prunes each graph, scores it, labels its features and writes
``report.html`` plus the graphs (native format) and viewer JSON. With analyses (the default;
``--no-analyses`` skips them) each graph also gets its readable circuit of supernodes, checked by
ablation on the real model (``supernodes/<name>.json``), and the day prompt's family gets its
circle, fitted, checked by substitution and steered (``manifold/``; see
:mod:`workbench.demo_analyses`). Without the world it falls back to a small random model built on
the spot (and says so).
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from workbench.cli_threads import add_threads_argument, threaded

logger = logging.getLogger(__name__)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("demo", help="run the demo on the embedded demo world",
                       description="Trace the demo world's prompts, prune, score, and write an HTML report.")
    p.add_argument("--out", default="workbench-demo", help="output folder (default ./workbench-demo)")
    p.add_argument("--world", default=None, help="a world folder (default: the embedded demo world)")
    p.add_argument("--transcoder", default="plt", choices=["plt", "clt"], help="which transcoders to trace")
    p.add_argument("--allow-unk", action="store_true",
                   help="trace prompt words the tokenizer does not know as its unknown token (with a warning)")
    p.add_argument("--analyses", action=argparse.BooleanOptionalAction, default=True,
                   help="add each graph's readable circuit (supernodes, checked by ablation), the day circle "
                        "(fit, substitution, steering) and the ring ranking of a layer's feature families "
                        "(discovery) to the report (default: on)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    add_threads_argument(p)
    p.set_defaults(func=threaded(run_demo))


def _random_world(out: Path) -> tuple[Path, Path, dict[str, str], dict[str, str]]:
    """A small random Qwen3 + transcoders (used only when no demo world is installed)."""
    from workbench.bench.build import ensure_built
    from workbench.bench.config import ModelSpec

    spec = ModelSpec(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, vocab=128, d_transcoder=256, target_l0=16)
    built, _ = ensure_built(spec, out / "_random_model")
    prompts = {"random_words": " ".join(f"w{i}" for i in (17, 33, 45, 60, 72, 81, 99))}
    return built.model_dir, built.transcoder_dir("plt"), prompts, {}


def _read_manifest(world: Path) -> dict[str, Any]:
    """manifest.json of a world, checked before anything is written: an object whose demo prompt
    names are safe file names, whose prompts and answers are text, and whose files stay in the world."""
    from tracer.errors import WorkbenchError
    from tracer.io import loads_json, require_readable
    from workbench.cli_safety import check_name

    path = require_readable(world / "manifest.json", "world manifest.json")
    try:
        manifest = loads_json(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise WorkbenchError(f"world manifest.json must be valid UTF-8 JSON; got {str(path)!r} "
                             f"({type(err).__name__}). Rebuild the world.") from None
    if not isinstance(manifest, dict):
        raise WorkbenchError(f"world manifest.json must be an object; got {type(manifest).__name__} in {str(path)!r}.")
    prompts, answers = manifest.get("demo_prompts"), manifest.get("demo_answers", {})
    if not isinstance(prompts, dict) or not prompts or not all(isinstance(v, str) for v in prompts.values()):
        raise WorkbenchError(f"manifest demo_prompts must be a non-empty object of name -> prompt text; got "
                             f"{str(prompts)[:60]!r} in {str(path)!r}.")
    for name in prompts:
        check_name(name, "manifest demo_prompts name")
    if not isinstance(answers, dict) or not all(isinstance(v, str) for v in answers.values()):
        raise WorkbenchError(f"manifest demo_answers must be an object of name -> answer text; got "
                             f"{str(answers)[:60]!r} in {str(path)!r}.")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise WorkbenchError(f"manifest files must be an object of name -> relative path; got {str(files)[:60]!r}.")
    for key, rel in files.items():  # lexically inside (parts may be symlinks to shared folders)
        if Path(rel).is_absolute() or os.path.normpath(rel).split(os.sep)[0] in ("..", ".", ""):
            raise WorkbenchError(f"manifest files.{key} must be a path inside the world folder; got {rel!r}.")
    return manifest


def _sources(args: argparse.Namespace, out: Path):
    from workbench.paths import world_dir

    world = Path(args.world) if args.world else world_dir()
    manifest_path = world / "manifest.json"
    if not manifest_path.is_file():
        if args.world:
            from tracer.errors import WorkbenchError
            from tracer.folders import folder_hint

            raise WorkbenchError(f"--world must be a built world folder with manifest.json; got {args.world!r}. "
                                 f"Build one with `workbench world build --out DIR`.{folder_hint(world, 'world')}")
        logger.warning("no demo world installed at %s: tracing a small random model instead", world)
        model, tcs, prompts, answers = _random_world(out)
        return model, tcs, prompts, answers, None, "random model (no demo world installed)", None
    manifest = _read_manifest(world)
    files = manifest.get("files", {})
    labels = world / files.get(f"labels_{args.transcoder}", f"labels_{args.transcoder}.jsonl")
    return (world / files.get("model", "model"), world / files.get(args.transcoder, args.transcoder),
            manifest["demo_prompts"], manifest.get("demo_answers", {}), labels if labels.is_file() else None,
            "the embedded demo world" if not args.world else f"the world in {args.world}", manifest)


def _outputs(out: Path, prompts: dict[str, str], manifest: dict[str, Any] | None, analyses: bool) -> list[str]:
    """Every file the demo writes under `out` (checked before any work)."""
    from workbench.demo_analyses import manifold_outputs

    names = ["report.html", "summary.json", "viewer/graph-metadata.json"]
    names += [f"graphs/{n}.safetensors" for n in prompts] + [f"viewer/demo-{n}.json" for n in prompts]
    if analyses:
        names += [f"supernodes/{n}.json" for n in prompts]
        names += manifold_outputs(manifest) if manifest is not None else []
    return names


def run_demo(args: argparse.Namespace) -> int:
    from tracer.io import atomic_write_json
    from workbench.cli_safety import check_out, check_out_files
    from workbench.paths import world_dir

    t0 = time.perf_counter()
    world = Path(args.world) if args.world else world_dir()
    out = check_out(args.out, folder=True, inputs=[world])
    model_dir, tc_dir, prompts, answers, labels_path, what, manifest = _sources(args, out)
    inputs = [world, model_dir, tc_dir, labels_path]
    check_out(out, folder=True, inputs=inputs)
    check_out_files(out, _outputs(out, prompts, manifest, args.analyses), inputs=inputs)
    from tracer.labels import check_labels_match, load_labels
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.report import write_report

    loaded = load_model(model_dir, backend="auto")
    tcs = load_transcoders(tc_dir, n_layers=loaded.n_layers, d_model=loaded.d_model)
    labels = load_labels(labels_path) if labels_path else {}
    check_labels_match(labels, n_layers=tcs.n_layers, scan=tcs.scan, source=str(labels_path))
    from tracer.models import tokenize

    for prompt in prompts.values():  # every prompt before anything is written (a bad second one half-wrote --out)
        tokenize(loaded, prompt, allow_unk=args.allow_unk)
    sections, summary = [], {}
    corpus = None
    if args.analyses and manifest is not None:
        from workbench.demo_analyses import coactivation_sample

        corpus = coactivation_sample(loaded, tcs, world, manifest, verbose=not args.quiet)
    for name, prompt in prompts.items():
        section, stats = trace_section(loaded, tcs, labels, name, prompt, answers.get(name), out, args.quiet,
                                       allow_unk=args.allow_unk, analyses=args.analyses, corpus=corpus)
        sections.append(section)
        summary[name] = stats
    manifolds: list[Any] = []
    manifold_stats: dict[str, Any] = {}
    if args.analyses and manifest is not None:
        from workbench.demo_analyses import manifold_views

        manifolds, manifold_stats = manifold_views(loaded, tcs, world, manifest, out, paths=(model_dir, tc_dir),
                                                   labels=labels_path)
    intro = (f"Attribution graphs on {what}: model {model_dir}, {tcs.kind.upper()} transcoders {tc_dir}. "
             "Graphs are pruned at node threshold 0.8 and edge threshold 0.98 (circuit-tracer's defaults).")
    from workbench.report import DiscoveryView, ManifoldView

    report = write_report(out / "report.html", "manifold-workbench demo", intro, sections,
                          [m for m in manifolds if isinstance(m, ManifoldView)],
                          [m for m in manifolds if isinstance(m, DiscoveryView)])
    doc: dict[str, Any] = {"source": what, "graphs": summary}
    if manifold_stats:
        doc["manifolds"] = manifold_stats
    doc["seconds"] = round(time.perf_counter() - t0, 2)

    written = _outputs(out, prompts, manifest, args.analyses)
    earlier = _earlier_outputs(out / "summary.json")  # read before this run's summary replaces it
    doc["files"] = written
    atomic_write_json(out / "summary.json", doc, indent=2)
    remove_stale(out, written, earlier)
    # the scores are the result, on stdout as prune's or cluster's; "wrote ..." is status, on stderr as trace's
    sys.stdout.write("".join(line + "\n" for line in headline(summary, manifold_stats)))
    if not args.quiet:
        print(f"wrote {report} ({len(sections)} graphs) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


OWNED = ("graphs", "supernodes", "manifold")
"""Sub-folders of --out that hold only demo outputs: what an earlier run left there and this one did not
write is removed once this run has succeeded (a --no-analyses run after a full one kept the full run's
supernodes and manifolds next to the new graphs)."""


def _earlier_outputs(summary: Path) -> list[str]:
    """The files an earlier demo run recorded writing (``files`` of its summary.json; none when there is no
    readable one, or it predates the record)."""
    try:
        files = json.loads(summary.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def remove_stale(out: Path, written: list[str], earlier: list[str]) -> list[Path]:
    """Remove the files an earlier demo run wrote (``earlier``, paths relative to ``out``) under the
    :data:`OWNED` sub-folders that this run did not write (``written``), then those folders' empty folders;
    the removed files. A file no demo recorded writing is never touched (it removed the user's own files)."""
    keep = {(out / name).resolve() for name in written}
    owned = [(out / sub).resolve() for sub in OWNED]
    removed = []
    for name in earlier:
        path = (out / name).resolve()
        if path in keep or not any(path.is_relative_to(folder) for folder in owned) or not path.is_file():
            continue
        path.unlink()
        removed.append(path)
    for sub in OWNED:
        folder = out / sub
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in sorted(folder.rglob("*"), reverse=True):  # the folders left empty, deepest first
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
        if not any(folder.iterdir()):
            folder.rmdir()
    if removed:
        logger.info("removed %d files an earlier demo run left in %s", len(removed), out)
    return removed


def headline(graphs: dict[str, Any], manifolds: dict[str, Any]) -> list[str]:
    """One line per graph and per manifold: what the report shows, for the terminal."""
    lines = []
    for name, g in graphs.items():
        line = (f"{name}: answer {str(g['top_prediction']).strip()!r}, replacement {g['replacement_score']:.3f}, "
                f"pruned to {g['kept_nodes']} nodes")
        c = g.get("circuit")
        if c:
            line += (f"; readable circuit {c['n_features']} features in {c['n_groups']} groups, subgraph "
                     f"replacement {c['circuit']['replacement']:.3f} (pruned {c['pruned']['replacement']:.3f})")
        lines.append(line)
    for family, m in manifolds.items():
        if family == "discovery":
            if "ranking" in m:
                more = ", ..." if len(m["ranking"]) > 4 else ""
                verdict = {True: "yes", False: "no", None: "no ring evidence to compare"}[m["cyclic_above_all_other"]]
                lines.append(f"discovery at transcoder layer {m['feature_layer']}: {', '.join(m['ranking'][:4])}{more} "
                             f"(cyclic families first: {verdict})")
            continue
        a, steer = m["answer"], m["steering_demo_prompt"]
        order = "in order" if a["order_matches"] else "out of order"
        r2 = "n/a" if a.get("heldout_r2") is None else f"{a['heldout_r2']:.3f}"
        lines.append(f"{family}s: circle k={a['frequency']} {order} at L{a['layer']} (held-out R² {r2}); "
                     f"steering {steer['prompt']!r} around it: {steer['hits']}/{steer['n']} answers follow")
    return lines


def trace_section(loaded, tcs, labels, name: str, prompt: str, expected: str | None, out: Path, quiet: bool,
                  allow_unk: bool = False, analyses: bool = False, corpus: Any = None):
    """Trace, prune and score one prompt (and, with ``analyses``, build and check its readable circuit,
    with the co-activation similarity and the roles when ``corpus`` (context, roles) is given); save its files;
    return the report section and stats."""
    import torch

    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.graph import PruneConfig, graph_scores, node_ids, prune_graph, subgraph_scores
    from tracer.graph.export import export_neuronpedia
    from tracer.models import tokenize
    from workbench.report import GraphSection

    tokens = tokenize(loaded, prompt, allow_unk=allow_unk)
    graph = attribute(loaded, tcs, tokens, AttributionConfig(verbose=not quiet))
    prune_config = PruneConfig()
    result = prune_graph(graph, prune_config)
    full, pruned = graph_scores(graph), subgraph_scores(graph, prune_result=result)
    graph_path = graph.save(out / "graphs" / f"{name}.safetensors")
    tok_strs = [loaded.tokenizer.decode([t]) if loaded.tokenizer else str(t) for t in tokens.tolist()]
    viewer = export_neuronpedia(graph, out / "viewer", slug=f"demo-{name}", prune_config=prune_config,
                                prune_result=result, labels=labels, tokenizer=tok_strs)
    nodes = _node_views(graph, result, labels, node_ids(graph))
    ids = node_ids(graph)
    edges = [(ids[s], ids[t], float(graph.adjacency[t, s])) for t, s in result.edge_index.T.tolist()]
    probs = torch.softmax(loaded.model(tokens[None].to(loaded.device)).logits[0, -1].float(), -1)
    top = probs.topk(5)
    top_logits = [(loaded.tokenizer.decode([int(i)]) if loaded.tokenizer else str(int(i)), float(p))
                  for p, i in zip(top.values, top.indices)]
    kept_nodes, kept_edges = int(result.node_mask.sum()), int(result.edge_index.shape[1])
    stats = {"prompt": prompt, "expected": expected, "top_prediction": top_logits[0][0],
             "replacement_score": full.replacement, "completeness_score": full.completeness,
             "pruned_replacement_score": pruned.replacement, "pruned_completeness_score": pruned.completeness,
             "nodes": graph.n_nodes, "features": graph.n_selected, "kept_nodes": kept_nodes,
             "kept_edges": kept_edges, "graph": str(graph_path), "viewer_json": str(viewer)}
    circuit = None
    if analyses:
        from workbench.demo_analyses import circuit_view

        circuit, stats["circuit"] = circuit_view(loaded, tcs, graph, result, labels, tok_strs,
                                                 out / "supernodes" / f"{name}.json", verbose=not quiet,
                                                 corpus=corpus)
    section = GraphSection(
        title=f"{name}: {prompt}", prompt_tokens=tok_strs, expected=expected, top_logits=top_logits,
        scores={"replacement (full graph)": full.replacement, "completeness (full graph)": full.completeness,
                "replacement (pruned)": pruned.replacement, "completeness (pruned)": pruned.completeness},
        counts={"nodes": graph.n_nodes, "features": graph.n_selected, "kept nodes": kept_nodes,
                "kept edges": kept_edges},
        nodes=nodes, edges=edges, n_layers=graph.n_layers,
        files={"graph": str(graph_path), "viewer JSON": str(viewer)}, circuit=circuit)
    return section, stats


def _node_views(graph, result, labels, ids: list[str]):
    from workbench.report import NodeView, finite

    kinds = {0: "feature", 1: "error", 2: "token", 3: "logit"}
    types, layers, pos, index = graph.node_type(), graph.node_layer(), graph.node_pos(), graph.node_index()
    acts = graph.activation_values[graph.selected_features].tolist()
    views = []
    for i in result.node_mask.nonzero().flatten().tolist():
        kind = kinds[int(types[i])]
        label = ""
        if kind == "feature":
            lab = labels.get((int(layers[i]), int(index[i])))
            label = lab.label if lab is not None else f"feature {int(index[i])}"
        elif kind == "logit":
            label = graph.logit_tokens[i - graph.logit_start] if graph.logit_tokens else str(int(index[i]))
        views.append(NodeView(node_id=ids[i], kind=kind, layer=int(layers[i]), pos=int(pos[i]), label=label,
                              influence=finite(float(result.cumulative_scores[i])),
                              activation=acts[i] if kind == "feature" else None))
    return views

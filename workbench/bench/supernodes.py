"""Speed of automatic supernodes against attribution (issue 10, point 8).

    python -m workbench.bench.supernodes --out bench_supernodes.json [--n-tokens 64] [--transcoder plt clt]
        [--threads 2] [--repeats 3] [--work-dir DIR]

Builds (or reuses) the reference benchmark model of ``workbench bench`` (Qwen3, 4 layers, d_model
256, 8 heads / 2 KV, vocab 512, 2,048-feature transcoders at L0 48), traces a seeded random prompt
(64 tokens: about 15k nodes), then times, in the same process and thread setting:

* ``attribute``: the graph's attribution;
* ``prune``: circuit-tracer's pruning (needed by any viewer; reported apart);
* ``cluster``: :class:`analyses.supernodes.clustering.SupernodeClustering` on the pruned graph
  (edge-profile and virtual-weight similarities);
* ``circuit``: :class:`analyses.supernodes.circuit.ReadableCircuit` (clustering included) with the
  default budget, given the prune result.

Each timing is the median of ``--repeats`` runs (prune: one run). The target: ``circuit`` (clustering plus the
readable circuit) <= 10% of ``attribute``. The JSON also holds the graph's sizes and both ratios.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _median_time(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_one(built: Any, kind: str, n_tokens: int, repeats: int) -> dict[str, Any]:
    import torch

    from analyses.supernodes.circuit import ReadableCircuit
    from analyses.supernodes.clustering import SupernodeClustering
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.model import load_model
    from tracer.prune import prune_graph
    from tracer.transcoders.loaders import load_transcoders
    from workbench.bench.build import random_prompt

    loaded = load_model(built.model_dir, backend="auto")
    tcs = load_transcoders(built.transcoder_dir(kind), n_layers=loaded.n_layers, d_model=loaded.d_model)
    ids = torch.tensor(random_prompt(n_tokens, int(built.manifest["spec"]["vocab"]), 0))
    config = AttributionConfig(verbose=False)
    attribute(loaded, tcs, ids[:8], config)  # warm-up
    t_attr, graph = _median_time(lambda: attribute(loaded, tcs, ids, config), repeats)
    t_prune, pruned = _median_time(lambda: prune_graph(graph), 1)  # slow and not part of the target
    t_cluster, est = _median_time(
        lambda: SupernodeClustering().fit(graph, prune_result=pruned, transcoders=tcs), repeats)
    t_circuit, circuit = _median_time(
        lambda: ReadableCircuit().fit(graph, prune_result=pruned, transcoders=tcs), repeats)
    s = circuit.scores_
    return {
        "transcoder": kind, "n_tokens": n_tokens, "n_nodes": graph.n_nodes, "n_features": graph.n_selected,
        "n_pruned_nodes": int(pruned.node_mask.sum()), "n_candidates": int(est.candidates_.size),
        "n_groups_clustering": len(est.groups_), "n_groups_circuit": s.n_groups,
        "seconds": {"attribute": round(t_attr, 4), "prune": round(t_prune, 4), "cluster": round(t_cluster, 4),
                    "circuit": round(t_circuit, 4)},
        "ratio_circuit_to_attribute": round(t_circuit / t_attr, 4),
        "ratio_circuit_plus_prune_to_attribute": round((t_circuit + t_prune) / t_attr, 4),
        "target_met": t_circuit <= 0.1 * t_attr,
        "scores": {"pruned": s.pruned, "circuit": s.circuit, "compression": s.compression,
                   "replacement_ratio": s.replacement_ratio},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workbench.bench.supernodes", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--n-tokens", type=int, default=64, help="prompt length, BOS included (default 64)")
    p.add_argument("--transcoder", nargs="+", default=["plt", "clt"], choices=["plt", "clt"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3, help="runs per timing; the median is kept (default 3)")
    p.add_argument("--work-dir", default=None, help="benchmark model cache (default: workbench bench's)")
    args = p.parse_args(argv)
    import torch

    from workbench.bench.build import ensure_built
    from workbench.bench.config import ModelSpec, default_work_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = ModelSpec(arch="qwen3", n_layers=4, d_model=256, n_heads=8, n_kv_heads=2, vocab=512, d_transcoder=2048,
                     target_l0=48)
    built, reused = ensure_built(spec, Path(args.work_dir) if args.work_dir else default_work_dir())
    runs = [bench_one(built, kind, args.n_tokens, args.repeats) for kind in args.transcoder]
    report = {"spec": spec.key, "reused_build": reused, "torch_threads": torch.get_num_threads(),
              "repeats": args.repeats, "runs": runs}
    Path(args.out).write_text(json.dumps(report, indent=1))
    for r in runs:
        sec = r["seconds"]
        print(f"{r['transcoder']}: {r['n_nodes']} nodes ({r['n_candidates']} candidates): "  # noqa: T201
              f"attribute {sec['attribute']:.2f}s, "
              f"prune {sec['prune']:.2f}s, cluster {sec['cluster']:.3f}s, cluster+circuit {sec['circuit']:.3f}s = "
              f"{100 * r['ratio_circuit_to_attribute']:.1f}% of attribution")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``python -m workbench.bench.ours_runner``: load -> attribute -> prune -> scores, measured.

The in-process half of our side of the benchmark (the other half times the real
``workbench trace`` CLI as a whole process). It reports the seconds of :func:`tracer.attribution.attribute`
alone and the peak RSS of ``attribute`` and of ``prune_graph`` (the kernel's peak counter is reset
before each, see :mod:`workbench.bench.procs`), and writes the prune result for comparison with
circuit-tracer's. Outputs in --out-dir: ``prune.npz`` (``node_mask``, ``edge_target``,
``edge_source``, ``cumulative_scores``) and ``result.json``.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.bench.procs import peak_rss_mb, reset_peak_rss, rss_mb

if TYPE_CHECKING:
    from tracer.graph.prune import PruneResult


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workbench.bench.ours_runner", description=__doc__)
    p.add_argument("--model", required=True, help="local HF model folder")
    p.add_argument("--transcoders", required=True, help="transcoder folder")
    p.add_argument("--token-ids", required=True, help="comma-separated ids, BOS included")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-feature-nodes", type=int, default=None)
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    return p.parse_args(argv)


def _cuda_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _save_prune(result: "PruneResult", path: Path) -> dict[str, int]:
    import numpy as np

    from tracer.io import atomic_path

    edges = result.edge_index.cpu().numpy()  # (2, n_edges)
    node_mask = result.node_mask.cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, node_mask=node_mask, edge_target=edges[0].astype(np.int64),
                 edge_source=edges[1].astype(np.int64),
                 cumulative_scores=result.cumulative_scores.float().cpu().numpy())
    return {"kept_nodes": int(node_mask.sum()), "kept_edges": int(edges.shape[1])}


def run(args: argparse.Namespace) -> dict[str, object]:
    t_start = time.perf_counter()
    import torch

    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.graph import PruneConfig, graph_scores, prune_graph
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    if args.threads:
        torch.set_num_threads(args.threads)
    t_import = time.perf_counter() - t_start
    t = time.perf_counter()
    loaded = load_model(args.model, device=args.device, backend="auto")
    tc = load_transcoders(args.transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    t_load = time.perf_counter() - t
    cfg = AttributionConfig(batch_size=args.batch_size, max_feature_nodes=args.max_feature_nodes,
                            verbose=False)
    ids = torch.tensor([int(x) for x in args.token_ids.split(",")])
    rss_before = rss_mb()
    was_reset = reset_peak_rss()
    _cuda_reset(args.device)
    t = time.perf_counter()
    graph = attribute(loaded, tc, ids, cfg)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_attr = time.perf_counter() - t
    mem = {"rss_before_attribute_mb": rss_before, "peak_rss_attribute_mb": peak_rss_mb(was_reset),
           "cuda_peak_attribute_mb": _cuda_peak(args.device)}
    was_reset = reset_peak_rss()
    _cuda_reset(args.device)
    t = time.perf_counter()
    prune_cfg = PruneConfig(node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    pruned = prune_graph(graph, prune_cfg)
    t_prune = time.perf_counter() - t
    mem.update(peak_rss_prune_mb=peak_rss_mb(was_reset), cuda_peak_prune_mb=_cuda_peak(args.device))
    t = time.perf_counter()
    scores = graph_scores(graph)
    t_scores = time.perf_counter() - t
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept = _save_prune(pruned, out / "prune.npz")
    return {
        "device": args.device, "torch_threads": torch.get_num_threads(), "token_ids": ids.tolist(),
        "seconds": {"import": round(t_import, 3), "load": round(t_load, 3), "attribute": round(t_attr, 4),
                    "prune": round(t_prune, 4), "scores": round(t_scores, 4)},
        "memory": mem,
        "nodes": {"n_active_features": int(graph.active_features.shape[0]),
                  "n_selected_features": graph.n_selected,
                  "n_error": graph.n_layers * graph.n_pos, "n_token": graph.n_pos, "n_logits": graph.n_logits,
                  "n_nodes": graph.n_nodes},
        "flops": graph.extra.get("flops"),
        "logit_probability": round(float(graph.logit_probabilities.sum()), 6),
        "prune": kept,
        "scores": {"replacement": scores.replacement, "completeness": scores.completeness},
    }


def main(argv: list[str] | None = None) -> int:
    from tracer.io import atomic_path

    args = parse_args(argv)
    result = run(args)
    with atomic_path(Path(args.out_dir) / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

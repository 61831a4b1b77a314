#!/usr/bin/env python
"""Run circuit-tracer 0.5.0 on a `workbench bench` model and record what the benchmark compares.

A standalone script: ``workbench bench`` executes it *by path* with the baseline interpreter
(the one with circuit-tracer installed), so it imports nothing from manifold-workbench.

    python ct_runner.py --model NAME_OR_DIR --transcoders REF --ct-cache DIR [--hf-home DIR]
        --backend transformerlens|nnsight --token-ids 1,5,9 --out-dir DIR [--threads N] [--device cpu]

It calls ``attribute(ids, model, max_n_logits=10, desired_logit_prob=0.95, batch_size=256,
max_feature_nodes=..., verbose=False)``, timing that call alone, then ``prune_graph`` and
``compute_graph_scores``. Peak RSS is measured per phase: the kernel's peak counter (VmHWM) is
reset through ``/proc/self/clear_refs`` before ``attribute`` and before ``prune_graph`` (None where
unsupported). Writes into --out-dir:

* ``graph.npz`` (uncompressed): ``adjacency`` (float32 N x N, rows = targets, cols = sources),
  ``node_type`` (0 feature, 1 error, 2 token, 3 logit), ``node_layer``, ``node_pos``,
  ``node_index``, ``active_features``, ``activation_values``, ``selected_features``,
  ``input_tokens``, ``logit_token_ids``, ``logit_probabilities``, ``logit_vectors``, ``n_layers``,
  ``n_pos``; nodes in circuit-tracer's order (features, errors layer-major, tokens, logits);
* ``prune.npz``: ``node_mask``, ``edge_target``, ``edge_source`` (kept edges, row-major),
  ``cumulative_scores``;
* ``result.json``: timings, peak memory, node counts, scores, versions.
"""

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

# Executed by path, this folder would come first on sys.path and its modules (config, build, ...)
# could shadow top-level modules of circuit-tracer's dependencies.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="TransformerLens model name, or an HF folder (nnsight)")
    p.add_argument("--transcoders", required=True, help="transcoder reference inside --ct-cache")
    p.add_argument("--ct-cache", required=True, help="CIRCUIT_TRACER_CACHE_DIR")
    p.add_argument("--hf-home", default=None, help="HF_HOME (hub cache with the model's entry)")
    p.add_argument("--backend", choices=["transformerlens", "nnsight"], default="transformerlens")
    p.add_argument("--token-ids", required=True, help="comma-separated ids, BOS included")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-feature-nodes", type=int, default=None)
    p.add_argument("--max-n-logits", type=int, default=10)
    p.add_argument("--desired-logit-prob", type=float, default=0.95)
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    p.add_argument("--no-graph", action="store_true", help="do not write graph.npz")
    p.add_argument("--probe", action="store_true", help="only print versions and importable back ends (JSON)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_mb(was_reset: bool) -> float | None:
    kb = _status_kb("VmHWM") if was_reset else None
    return None if kb is None else round(kb / 1024, 1)


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024, 1)


def _cuda_reset(torch, device: str) -> None:  # noqa: ANN001
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(torch, device: str) -> float | None:  # noqa: ANN001
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


# ----------------------------------------------------------------------------- versions
def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for pkg in ("circuit-tracer", "torch", "transformers", "transformer-lens", "nnsight", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def probe() -> dict[str, object]:
    """Versions, and which back ends import (nnsight's needs nnsight 0.6/0.7)."""
    import circuit_tracer  # noqa: F401

    ok: dict[str, object] = {}
    for backend, module in (("transformerlens", "replacement_model_transformerlens"),
                            ("nnsight", "replacement_model_nnsight")):
        try:
            __import__(f"circuit_tracer.replacement_model.{module}")
            ok[backend] = True
        except Exception as err:  # noqa: BLE001 - report any import failure
            ok[backend] = f"{type(err).__name__}: {err}".splitlines()[0]
    return {"versions": versions(), "backends": ok}


# ----------------------------------------------------------------------------- graph export
def node_arrays(graph, np):  # noqa: ANN001, ANN201
    """node_type / layer / pos / index in circuit-tracer's node order."""
    L, P = int(graph.cfg.n_layers), int(graph.n_pos)
    sel = graph.active_features[graph.selected_features].cpu().long().numpy()  # (n_sel, 3)
    tokens = graph.input_tokens.cpu().long().numpy()
    logit_ids = graph.logit_token_ids.cpu().long().numpy()
    K, n_sel = len(logit_ids), len(sel)
    node_type = np.concatenate([np.zeros(n_sel), np.ones(L * P), np.full(P, 2), np.full(K, 3)])
    node_type = node_type.astype(np.int8)
    layer = np.concatenate([sel[:, 0], np.repeat(np.arange(L), P), np.full(P, -1), np.full(K, L)])
    pos = np.concatenate([sel[:, 1], np.tile(np.arange(P), L), np.arange(P), np.full(K, P - 1)])
    index = np.concatenate([sel[:, 2], np.full(L * P, -1), tokens, logit_ids])
    return node_type, layer.astype(np.int32), pos.astype(np.int32), index.astype(np.int64)


def save_graph(graph, model, backend: str, path: Path) -> None:  # noqa: ANN001
    import numpy as np

    node_type, layer, pos, index = node_arrays(graph, np)
    W_U = model.unembed_proj.detach().float().cpu()
    if backend == "nnsight":  # lm_head.weight (d_vocab, d_model); TransformerLens W_U is (d_model, d_vocab)
        W_U = W_U.T
    logit_ids = graph.logit_token_ids.cpu().long()
    logit_vectors = (W_U[:, logit_ids] - W_U.mean(dim=1, keepdim=True)).T.contiguous()  # (n_logits, d_model)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(
            fh, adjacency=graph.adjacency_matrix.detach().float().cpu().numpy(), node_type=node_type,
            node_layer=layer, node_pos=pos, node_index=index,
            active_features=graph.active_features.cpu().long().numpy(),
            activation_values=graph.activation_values.detach().float().cpu().numpy(),
            selected_features=graph.selected_features.cpu().long().numpy(),
            input_tokens=graph.input_tokens.cpu().long().numpy(), logit_token_ids=logit_ids.numpy(),
            logit_probabilities=graph.logit_probabilities.detach().float().cpu().numpy(),
            logit_vectors=logit_vectors.numpy(), n_layers=np.int64(graph.cfg.n_layers),
            n_pos=np.int64(graph.n_pos),
        )
    os.replace(tmp, path)


def save_prune(result, path: Path) -> dict[str, int]:  # noqa: ANN001
    import numpy as np

    target, source = np.nonzero(result.edge_mask.cpu().numpy())
    node_mask = result.node_mask.cpu().numpy()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, node_mask=node_mask, edge_target=target.astype(np.int64),
                 edge_source=source.astype(np.int64),
                 cumulative_scores=result.cumulative_scores.float().cpu().numpy())
    os.replace(tmp, path)
    return {"kept_nodes": int(node_mask.sum()), "kept_edges": int(len(target))}


# ----------------------------------------------------------------------------- main
def _set_env(args: argparse.Namespace) -> None:
    """Offline, and circuit-tracer / HF caches in the bench's work dir (before any import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["CIRCUIT_TRACER_CACHE_DIR"] = str(Path(args.ct_cache).resolve())
    if args.hf_home:
        os.environ["HF_HOME"] = str(Path(args.hf_home).resolve())


def run(args: argparse.Namespace) -> dict[str, object]:
    t_start = time.perf_counter()
    _set_env(args)
    import torch
    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.graph import compute_graph_scores, prune_graph

    if args.threads:
        torch.set_num_threads(args.threads)
    t_import = time.perf_counter() - t_start
    device = torch.device(args.device)
    t = time.perf_counter()
    model = ReplacementModel.from_pretrained(args.model, args.transcoders, backend=args.backend,
                                             device=device, dtype=torch.float32)
    t_load = time.perf_counter() - t
    ids = [int(x) for x in args.token_ids.split(",")]
    rss_before = rss_mb()
    was_reset = reset_peak()
    _cuda_reset(torch, args.device)
    t = time.perf_counter()
    graph = attribute(ids, model, max_n_logits=args.max_n_logits, desired_logit_prob=args.desired_logit_prob,
                      batch_size=args.batch_size, max_feature_nodes=args.max_feature_nodes, verbose=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_attr = time.perf_counter() - t
    mem = {"rss_before_attribute_mb": rss_before, "peak_rss_attribute_mb": peak_mb(was_reset),
           "cuda_peak_attribute_mb": _cuda_peak(torch, args.device)}
    was_reset = reset_peak()
    _cuda_reset(torch, args.device)
    t = time.perf_counter()
    pruned = prune_graph(graph, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    t_prune = time.perf_counter() - t
    mem.update(peak_rss_prune_mb=peak_mb(was_reset), cuda_peak_prune_mb=_cuda_peak(torch, args.device))
    t = time.perf_counter()
    replacement, completeness = compute_graph_scores(graph)
    t_scores = time.perf_counter() - t
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept = save_prune(pruned, out / "prune.npz")
    if not args.no_graph:
        save_graph(graph, model, args.backend, out / "graph.npz")
    L, P, K = int(graph.cfg.n_layers), int(graph.n_pos), len(graph.logit_targets)
    result = {
        "backend": args.backend, "device": args.device, "torch_threads": torch.get_num_threads(),
        "token_ids": ids, "versions": versions(),
        "seconds": {"import": round(t_import, 3), "load": round(t_load, 3), "attribute": round(t_attr, 4),
                    "prune": round(t_prune, 4), "scores": round(t_scores, 4)},
        "memory": mem,
        "nodes": {"n_active_features": int(graph.active_features.shape[0]),
                  "n_selected_features": int(len(graph.selected_features)), "n_error": L * P, "n_token": P,
                  "n_logits": K, "n_nodes": int(graph.adjacency_matrix.shape[0])},
        "logit_probability": round(float(graph.logit_probabilities.sum()), 6),
        "prune": kept,
        "scores": {"replacement": float(replacement), "completeness": float(completeness)},
    }
    del graph, pruned, model  # TransformerLensReplacementModel.__del__ misbehaves at interpreter exit
    gc.collect()
    return result


def main(argv: list[str] | None = None) -> int:
    if "--probe" in (sys.argv[1:] if argv is None else argv):
        print(json.dumps(probe()))
        return 0
    args = parse_args(argv)
    result = run(args)
    path = Path(args.out_dir) / "result.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

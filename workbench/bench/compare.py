"""Graph and prune equality between two graph files (ours and circuit-tracer's ``.npz``).

Either file may be a §2.3 ``.npz`` or our native format (read through :class:`tracer.graph.Graph`,
adjacency memory-mapped).

Nodes are keyed by ``(node_type, node_layer, node_pos, node_index)``. If the key sets differ the
graphs are unequal and nothing else is compared (``same_node_set`` False, with counts of the
nodes only one side has). Otherwise the adjacency is compared after aligning the second graph's
nodes to the first's order (``same_node_order`` says whether that was needed):

* ``max_abs_diff`` and ``max_rel_diff`` = max |A_ours - A_ct| / max |A_ct|;
* ``block_max_rel_diff``: the same per (target type <- source type) block, relative to that
  block's own max |A_ct| (feature/logit targets x feature/error/token sources);
* ``frac_entries_rel_gt_1e-3``: entries whose error exceeds 1e-3 of their own size (floored at
  1e-6 of the global max);
* token, logit-target, activation and logit-probability agreement.

Memory: uncompressed ``.npz`` members are memory-mapped and compared in blocks of rows, so two
N x N graphs are compared without loading either (N = 50k: 10 GB each).
"""

from pathlib import Path

import numpy as np
import torch

from workbench.bench.records import JSONRecord

_BLOCK_ROWS = 512
_TYPE_NAMES = ("feature", "error", "token", "logit")


def npz_array(path: Path, key: str) -> np.ndarray:
    """Member `key` of an .npz: memory-mapped if stored uncompressed, else read into memory."""
    from tracer.mapped import npz_member

    place = npz_member(path, key)
    if place is None:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    if place.dtype.hasobject:
        raise ValueError(f"{key} in {path} holds Python objects; refusing to load it")
    if int(np.prod(place.shape)) == 0:
        return np.zeros(place.shape, dtype=place.dtype)
    return np.memmap(path, dtype=place.dtype, mode="r", offset=place.offset, shape=place.shape,
                     order="F" if place.fortran_order else "C")


def graph_array(path: Path, key: str) -> np.ndarray:
    """A §2.3 npz key of a graph file, npz (memory-mapped members) or native (node arrays computed,
    adjacency memory-mapped)."""
    if path.suffix == ".npz":
        return npz_array(path, key)
    from tracer.graph import Graph

    graph = Graph.load(path, mmap=True)
    if key in ("node_type", "node_layer", "node_pos", "node_index"):
        return getattr(graph, key)()
    if key in ("n_layers", "n_pos"):
        return np.int64(getattr(graph, key))
    tensor = getattr(graph, key)
    return (tensor if tensor.dtype in (torch.float32, torch.float64, torch.int64) else tensor.float()).numpy()


def node_keys(path: Path) -> list[tuple[int, int, int, int]]:
    cols = [graph_array(path, k) for k in ("node_type", "node_layer", "node_pos", "node_index")]
    return list(zip(*(np.asarray(c).tolist() for c in cols), strict=True))


def _small(path: Path, key: str) -> np.ndarray:
    return np.asarray(graph_array(path, key))


def alignment(ours: Path, theirs: Path) -> tuple[JSONRecord, np.ndarray | None]:
    """Node-set comparison, and ``perm`` with theirs[perm] == ours (None if the sets differ)."""
    ka, kb = node_keys(ours), node_keys(theirs)
    out: JSONRecord = {"n_nodes_ours": len(ka), "n_nodes_ct": len(kb)}
    set_a, set_b = set(ka), set(kb)
    if set_a != set_b or len(set_a) != len(ka) or len(set_b) != len(kb):
        out.update(same_node_set=False, same_node_order=False, only_in_ours=len(set_a - set_b),
                   only_in_ct=len(set_b - set_a))
        return out, None
    index_b = {k: i for i, k in enumerate(kb)}
    perm = np.fromiter((index_b[k] for k in ka), dtype=np.int64, count=len(ka))
    out.update(same_node_set=True, same_node_order=bool((perm == np.arange(len(perm))).all()),
               only_in_ours=0, only_in_ct=0)
    return out, perm


def _max_abs(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def _row_block(X: np.ndarray, rows: np.ndarray | slice, cols: np.ndarray | None) -> np.ndarray:
    block = np.asarray(X[rows], dtype=np.float64)
    return block if cols is None else block[:, cols]


def _type_groups(types: np.ndarray) -> dict[int, slice | np.ndarray]:
    """Node indices of each type: slices when the types are in node order (always, for our graphs)."""
    if bool((np.diff(types) >= 0).all()):
        bounds = np.searchsorted(types, np.arange(5))
        return {t: slice(int(bounds[t]), int(bounds[t + 1])) for t in range(4) if bounds[t + 1] > bounds[t]}
    return {t: np.flatnonzero(types == t) for t in range(4) if (types == t).any()}


def _update_blocks(stats: np.ndarray, d: np.ndarray, b: np.ndarray, row_types: np.ndarray,
                   groups: dict[int, slice | np.ndarray]) -> None:
    """stats[0, t, s] / stats[1, t, s]: running max |diff| / max |A_ct| of block (target t, source s)."""
    for t in np.unique(row_types):
        rows = np.flatnonzero(row_types == t)
        rows_sel = slice(int(rows[0]), int(rows[-1]) + 1) if rows[-1] - rows[0] + 1 == len(rows) else rows
        for s, cols in groups.items():
            cell_d, cell_b = d[rows_sel][:, cols], b[rows_sel][:, cols]
            stats[0, t, s] = max(stats[0, t, s], float(cell_d.max(initial=0.0)))
            stats[1, t, s] = max(stats[1, t, s], float(np.abs(cell_b).max(initial=0.0)))


def compare_adjacency(ours: Path, theirs: Path, perm: np.ndarray) -> JSONRecord:
    """Block-wise max differences; `perm` aligns theirs to ours."""
    A, B = graph_array(ours, "adjacency"), graph_array(theirs, "adjacency")
    types = _small(ours, "node_type")
    groups = _type_groups(types)
    n = A.shape[0]
    identity = bool((perm == np.arange(n)).all())
    cols = None if identity else perm
    scale = max((_max_abs(_row_block(B, slice(r, r + _BLOCK_ROWS), None)) for r in range(0, n, _BLOCK_ROWS)),
                default=0.0)
    floor = 1e-6 * scale
    max_diff, n_bad = 0.0, 0
    stats = np.zeros((2, 4, 4))
    for r in range(0, n, _BLOCK_ROWS):
        rows = slice(r, min(r + _BLOCK_ROWS, n))
        a = _row_block(A, rows, None)  # (rows, n)
        b = _row_block(B, rows if identity else perm[rows], cols)  # (rows, n), aligned to ours
        d = np.abs(a - b)
        max_diff = max(max_diff, float(d.max(initial=0.0)))
        n_bad += int((d > 1e-3 * np.maximum(np.abs(b), floor)).sum())
        _update_blocks(stats, d, b, types[rows], groups)
    rel = np.divide(stats[0], stats[1], out=stats[0].copy(), where=stats[1] > 0)
    blocks = {f"{_TYPE_NAMES[t]}<-{_TYPE_NAMES[s]}": float(rel[t, s])
              for t in (0, 3) for s in (0, 1, 2) if t in groups and s in groups}
    return {"max_abs_adjacency_ct": scale, "max_abs_diff": max_diff,
            "max_rel_diff": max_diff / scale if scale else max_diff,
            "block_max_rel_diff": blocks, "frac_entries_rel_gt_1e-3": n_bad / max(n * n, 1)}


def compare_graphs(ours: Path, theirs: Path) -> JSONRecord:
    """Everything in the module docstring; ``equal`` = same nodes (order too) and max_rel_diff <= 1e-4."""
    out, perm = alignment(ours, theirs)
    out["same_tokens"] = bool(np.array_equal(_small(ours, "input_tokens"), _small(theirs, "input_tokens")))
    la, lb = _small(ours, "logit_token_ids"), _small(theirs, "logit_token_ids")
    out["same_logit_targets"] = bool(np.array_equal(la, lb))
    if out["same_logit_targets"]:
        pa, pb = _small(ours, "logit_probabilities"), _small(theirs, "logit_probabilities")
        out["logit_prob_max_abs_diff"] = float(np.abs(pa - pb).max(initial=0.0))
    fa, fb = _small(ours, "active_features"), _small(theirs, "active_features")
    out["same_active_features"] = bool(np.array_equal(fa, fb))
    if out["same_active_features"]:
        va, vb = _small(ours, "activation_values"), _small(theirs, "activation_values")
        out["activation_max_abs_diff"] = float(np.abs(va - vb).max(initial=0.0))
    if perm is None:
        out.update(max_abs_diff=None, max_rel_diff=None, block_max_rel_diff=None, equal=False)
        return out
    out.update(compare_adjacency(ours, theirs, perm))
    out["equal"] = bool(out["same_node_order"] and out["same_tokens"] and out["max_rel_diff"] <= 1e-4)
    return out


def compare_prune(ours: Path, theirs: Path, perm: np.ndarray | None) -> JSONRecord | None:
    """Node masks, kept edges (as sets) and cumulative scores; theirs is aligned with `perm`."""
    if perm is None:
        return None
    a, b = np.load(ours), np.load(theirs)
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))  # their node i is our node inverse[i]
    mask_a, mask_b = a["node_mask"], b["node_mask"][perm]
    n = len(perm)
    edges_a = a["edge_target"].astype(np.int64) * n + a["edge_source"]
    edges_b = inverse[b["edge_target"]].astype(np.int64) * n + inverse[b["edge_source"]]
    only_a = np.setdiff1d(edges_a, edges_b, assume_unique=True)
    only_b = np.setdiff1d(edges_b, edges_a, assume_unique=True)
    scores_a, scores_b = a["cumulative_scores"], b["cumulative_scores"][perm]
    return {
        "node_mask_equal": bool(np.array_equal(mask_a, mask_b)), "kept_nodes_ours": int(mask_a.sum()),
        "kept_nodes_ct": int(mask_b.sum()), "node_mask_mismatches": int((mask_a != mask_b).sum()),
        "edges_equal": bool(len(only_a) == 0 and len(only_b) == 0), "kept_edges_ours": int(len(edges_a)),
        "kept_edges_ct": int(len(edges_b)), "edges_only_ours": int(len(only_a)),
        "edges_only_ct": int(len(only_b)),
        "cumulative_scores_max_abs_diff": float(np.abs(scores_a - scores_b).max(initial=0.0)),
    }


def score_deltas(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """ours - circuit-tracer's, for replacement and completeness."""
    return {k: float(ours[k]) - float(theirs[k]) for k in ("replacement", "completeness")}

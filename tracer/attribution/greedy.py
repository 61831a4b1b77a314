"""Phase 3 with ``max_feature_nodes``: circuit-tracer's greedy feature selection, and row packing.

Every ``update_interval * batch_size`` features, the unvisited features are re-ranked by their
partial influence on the logits through the rows computed so far; the rows of the chosen ones are
computed next. :func:`greedy_select` is shared by the fast engine (which computes rows on demand)
and the reference (which has every row already, :func:`greedy_order`).
"""

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tracer.attribution.rows import RowSink
from tracer.config import AttributionConfig
from tracer.graph.influence import compute_partial_influences

_PACK_BLOCK_ELEMENTS = 1 << 24
"""Rows per packing block: about this many scratch elements."""


def greedy_select(compute: Callable[[Tensor, int], Tensor], buf: Tensor, row_to_node: Tensor,
                  probs: Tensor, cfg: AttributionConfig, n_active: int, cap: int, pbar: tqdm | None = None) -> Tensor:
    """circuit-tracer's greedy feature selection; returns the visited mask (n_active,).

    ``buf[:K]`` already holds the K logit rows; ``compute(pending, row_start)`` writes the rows of
    features ``pending`` from ``row_start`` on and returns the feature index of each row written.
    """
    K = int(probs.shape[0])
    visited = torch.zeros(n_active, dtype=torch.bool, device=buf.device)
    st = K
    while st - K < cap:
        infl = compute_partial_influences(buf[:st].float(), probs.float(), row_to_node[:st])
        rank = torch.argsort(infl[:n_active], descending=True)
        queue = min(cfg.update_interval * cfg.batch_size, cap - (st - K))
        pending = rank[~visited[rank]][:queue]
        done = compute(pending, st)
        row_to_node[st:st + done.shape[0]] = done
        visited[done] = True
        st += int(done.shape[0])
        if pbar is not None:
            pbar.update(int(done.shape[0]))
    return visited


def pack_greedy(buf: Tensor, row_to_node: Tensor, visited: Tensor, F: int, K: int, sink: RowSink) -> None:
    """Into `sink`: the selected features' rows, sorted by node, then the logit rows, keeping only
    the selected feature columns; one block of rows at a time (never an N x N copy)."""
    selected = torch.nonzero(visited).flatten()
    col_read = torch.cat([selected, torch.arange(F, buf.shape[1], device=buf.device)])  # (N,)
    N, n_sel = int(col_read.shape[0]), int(selected.shape[0])
    order = torch.argsort(row_to_node)  # selected features ascending, then logits
    step = max(16, _PACK_BLOCK_ELEMENTS // max(1, int(buf.shape[1])))
    for s in range(0, n_sel, step):
        src = order[s:min(s + step, n_sel)]
        sink.put(s, buf.index_select(0, src).index_select(1, col_read))  # (rows, N)
        sink.done(s + int(src.shape[0]))
    sink.zero(N - K)  # error and token nodes have no inputs
    sink.put(N - K, buf.index_select(0, order[n_sel:]).index_select(1, col_read))  # (K, N)
    sink.done(N)


def greedy_order(feature_rows: Tensor, logit_rows: Tensor, probs: Tensor, cfg: AttributionConfig,
                 n_active: int) -> Tensor:
    """Selected features when every row is already known (the reference engine)."""
    cap = cfg.max_feature_nodes
    if cap is None or cap >= n_active:
        return torch.arange(n_active)
    K = int(logit_rows.shape[0])
    buf = torch.zeros(cap + K, feature_rows.shape[1], dtype=feature_rows.dtype)
    buf[:K] = logit_rows
    row_to_node = torch.zeros(cap + K, dtype=torch.long)
    row_to_node[:K] = torch.arange(K) + feature_rows.shape[1] - K

    def copy(pending: Tensor, st: int) -> Tensor:
        buf[st:st + pending.shape[0]] = feature_rows[pending]
        return pending

    return torch.nonzero(greedy_select(copy, buf, row_to_node, probs, cfg, n_active, cap)).flatten()


def package_rows(feature_rows: Tensor, logit_rows: Tensor, selected: Tensor, n_active: int) -> Tensor:
    """N x N adjacency from full-width rows: selected feature rows/columns, then the rest."""
    total = feature_rows.shape[1]
    col_read = torch.cat([selected, torch.arange(n_active, total)])
    N, K = int(col_read.shape[0]), int(logit_rows.shape[0])
    A = torch.zeros(N, N, dtype=feature_rows.dtype)
    A[:selected.shape[0]] = feature_rows[selected][:, col_read]
    A[N - K:] = logit_rows[:, col_read]
    return A

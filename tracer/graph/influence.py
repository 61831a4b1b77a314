"""Influence of every node on the logits, without dense N x N copies (circuit-tracer's formulas).

``Â = |A| / max(rowsum |A|, 1e-10)`` (each target's incoming weights sum to 1 or 0) and
``influence = w Â + w Â² + ...`` with ``w`` the logit probabilities on the logit nodes. Â is
formed one block of rows at a time from A and the row sums (all rows at once only when the block
is at most 2048² entries), and block products continue MKL's accumulation chain (``addmv`` with
beta=1 over row blocks whose boundaries are multiples of 16 equals one ``x @ Â`` call), so the
numbers are bit-identical to circuit-tracer's on CPU (see :mod:`tracer.graph.prune`). A
memory-mapped adjacency (:mod:`tracer.mapped`) is read out of core: each block's pages are
dropped once it is used.
"""

import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.graph.core import Graph
from tracer.mapped import release_rows

_SINGLE_BLOCK_ELEMENTS = 2048 * 2048
"""Matrices up to this size are processed as one block: circuit-tracer's own BLAS call."""
_BLOCK_ROWS = 1024
"""Rows per block otherwise; a multiple of 16, so that MKL's accumulation chain is unchanged."""


def normalize_matrix(matrix: Tensor) -> Tensor:
    """``|A| / max(rowsum |A|, 1e-10)`` as a dense copy (for small matrices; prune never calls it)."""
    normalized = matrix.abs()
    return normalized / normalized.sum(dim=1, keepdim=True).clamp(min=1e-10)


def logit_weights(graph: Graph) -> Tensor:
    """(n_nodes,) float32: the logit probabilities on the logit nodes, zero elsewhere."""
    weights = torch.zeros(graph.n_nodes, device=graph.adjacency.device)  # (n_nodes,)
    weights[graph.logit_start:] = graph.logit_probabilities.to(weights)
    return weights


def _row_blocks(n_rows: int, n_cols: int) -> list[tuple[int, int]]:
    """Row ranges; never a 1-row block (torch would split that row's sum across threads)."""
    step = n_rows if n_rows * n_cols <= _SINGLE_BLOCK_ELEMENTS else _BLOCK_ROWS
    bounds = [*range(0, n_rows, max(step, 1)), n_rows]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _abs_block(matrix: Tensor, r0: int, r1: int, keep_cols: Tensor | None) -> Tensor:
    block = matrix[r0:r1].abs().to(torch.float32)  # (rows, n_cols)
    if keep_cols is not None:
        block.mul_(keep_cols)  # zero the columns of dropped nodes
    return block


def _abs_row_sums(matrix: Tensor, keep: Tensor | None, clamp: float) -> Tensor:
    """(n_rows,) max(rowsum |A|, clamp); rows and columns of dropped nodes count as zero.

    Dropped rows get +inf, so that their normalised rows are exactly 0, as in circuit-tracer.
    """
    n_rows, n_cols = matrix.shape
    keep_cols = None if keep is None else keep.to(torch.float32)
    sums = torch.empty(n_rows, dtype=torch.float32, device=matrix.device)  # (n_rows,)
    for r0, r1 in _row_blocks(n_rows, n_cols):
        sums[r0:r1] = _abs_block(matrix, r0, r1, keep_cols).sum(dim=1)
        release_rows(matrix, r0, r1)  # a memory-mapped matrix: drop the block's pages again
    sums.clamp_(min=clamp)
    if keep is not None:
        sums[~keep] = float("inf")
    return sums


def _vec_mat(matrix: Tensor, denom: Tensor, x: Tensor, keep: Tensor | None) -> Tensor:
    """``x @ Â`` (Â = |A| / denom row-wise, dropped columns zeroed), block by block."""
    n_rows, n_cols = matrix.shape
    keep_cols = None if keep is None else keep.to(torch.float32)
    out = torch.zeros(n_cols, dtype=torch.float32, device=matrix.device)  # (n_cols,)
    for r0, r1 in _row_blocks(n_rows, n_cols):
        x_block = x[r0:r1]  # (rows,)
        if not bool(x_block.any()):
            continue  # adds exact zeros: skipping it leaves the accumulation unchanged
        block = _abs_block(matrix, r0, r1, keep_cols).div_(denom[r0:r1, None])  # (rows, n_cols)
        out.addmv_(block.t(), x_block)
        del block  # one block alive at a time
        release_rows(matrix, r0, r1)
    return out


def _check_finite(vector: Tensor) -> None:
    """A NaN/inf in the adjacency (or its weights) shows up here first: say so, not "cyclic"."""
    if not bool(torch.isfinite(vector).all()):
        raise WorkbenchError("adjacency must be finite to compute influence; got NaN or inf values. The graph "
                             "was computed from non-finite weights or its file is damaged: re-create it.")


def _power_series(matrix: Tensor, denom: Tensor, weights: Tensor, keep: Tensor | None,
                  max_iter: int) -> Tensor:
    """``w Â + w Â² + ...`` until a term is exactly zero (circuit-tracer's compute_influence)."""
    current = _vec_mat(matrix, denom, weights, keep)  # (n,)
    _check_finite(current)
    influence = current.clone()
    iterations = 0
    while bool(current.any()):
        _check_finite(current)
        if iterations >= max_iter:
            raise WorkbenchError(f"influence must converge within {max_iter} iterations; it did "
                                 "not. The adjacency matrix must be acyclic (a DAG); check the graph.")
        current = _vec_mat(matrix, denom, current, keep)
        influence += current
        iterations += 1
    return influence


def compute_influence(adjacency: Tensor, weights: Tensor, *, node_mask: Tensor | None = None,
                      max_iter: int = 1000) -> Tensor:
    """(n_nodes,) influence of each node on `weights` through the normalised adjacency.

    Equals circuit-tracer's ``compute_influence(normalize_matrix(A'), weights)``, where A' is A
    with the rows and columns of nodes outside `node_mask` zeroed, without forming Â or A'.
    """
    denom = _abs_row_sums(adjacency, node_mask, 1e-10)  # (n_nodes,)
    return _power_series(adjacency, denom, weights.to(torch.float32), node_mask, max_iter)


def compute_partial_influences(edge_rows: Tensor, logit_probs: Tensor, row_to_node_index: Tensor,
                               max_iter: int = 128) -> Tensor:
    """(n_nodes,) estimated influence from the rows computed so far (greedy feature ranking).

    circuit-tracer's function, numerically: rows normalised with the clamp 1e-8; the product
    vector starts as the logit probabilities on the last nodes and is propagated through the
    rows (``prod[row_to_node_index] @ Â``) until it vanishes; the sum of the terms is returned.
    `edge_rows` is (n_rows, n_nodes); it is never copied whole.
    """
    n_nodes = edge_rows.shape[1]
    denom = _abs_row_sums(edge_rows, None, 1e-8)  # (n_rows,)
    influences = torch.zeros(n_nodes, dtype=torch.float32, device=edge_rows.device)  # (n_nodes,)
    prod = torch.zeros_like(influences)
    prod[n_nodes - len(logit_probs):] = logit_probs.to(prod)
    for _ in range(max_iter):
        prod = _vec_mat(edge_rows, denom, prod[row_to_node_index], None)  # (n_nodes,)
        _check_finite(prod)
        if not bool(prod.any()):
            return influences
        influences += prod
    raise WorkbenchError(f"partial influences must converge within {max_iter} iterations; they did "
                         "not. The rows must describe an acyclic graph.")


# ----------------------------------------------------------------------------- torch's sum, exactly

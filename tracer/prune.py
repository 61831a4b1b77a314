"""Influence, pruning and graph scores: circuit-tracer 0.5.0's, without dense N x N copies.

Formulas (``research/circuit-tracer-algorithm.md`` §6, ``research/geometry.md`` §3.3-3.4); node
order and orientation as in :mod:`tracer.graph` (rows = targets, cols = sources)::

    Â = |A| / max(rowsum |A|, 1e-10)       each target's incoming weights sum to 1 (or 0)
    influence = w Â + w Â² + ...            w = logit probabilities on the logit nodes
    node cut:  keep the most influential nodes holding node_threshold of the total influence
               (tokens and logits always kept)
    edge score[t, s] = Â_kept[t, s] · (influence_kept[t] + w[t]); keep edge_threshold of it
    then drop features/errors without a kept outgoing edge and features without an incoming one,
    until nothing changes.

**Memory.** circuit-tracer holds |A|, Â, a pruned copy, its normalisation and the edge scores:
5-6 dense N x N float32 copies (8 GB at N = 15k). Here nothing N x N is allocated besides the
caller's adjacency: Â is formed one block of rows at a time (all rows at once only when the block
is at most 2048² entries) from A and the row sums; the power series accumulates block products;
edge scores are formed only on the kept-node submatrix and only their non-zero values are kept
(4 bytes each). The one larger buffer is a zero-padded copy of those values (<= 134 MB at
N = 15k) used to reproduce torch's float32 ``sum`` over all N² scores (see
:func:`_torch_sum_of_prefix`). The edge mask is returned sparse (16 bytes per kept edge).

**Exactness.** On CPU with MKL and the same torch thread count as circuit-tracer's run, every
number is bit-identical to circuit-tracer's, hence so are the masks: row sums reduce the same
full-length rows with the same kernel; block products continue MKL's accumulation chain
(``addmv`` with beta=1 over row blocks whose boundaries are multiples of 16 equals one ``x @ Â``
call for N > 2048; smaller matrices are one block, i.e. the same call); the edge cut reproduces
torch's reduction order over the N² sorted scores (its cumulative sum accumulates in double, so
only the total needs care). Checked on circuit-tracer's own outputs for N = 1.3k-15k. On other
back ends (or MKL choosing another thread split) the numbers agree to float32 rounding and the
masks agree except at exact near-ties of a cut.

The peak memory beyond the adjacency at N = 15,314 is 160 MB (circuit-tracer: 6.3 GB).
"""

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.graph import Graph

logger = logging.getLogger(__name__)

_SINGLE_BLOCK_ELEMENTS = 2048 * 2048
"""Matrices up to this size are processed as one block: circuit-tracer's own BLAS call."""
_BLOCK_ROWS = 1024
"""Rows per block otherwise; a multiple of 16, so that MKL's accumulation chain is unchanged."""
_TORCH_GRAIN = 32768
"""``at::internal::GRAIN_SIZE``: torch splits a full reduction across threads above this."""
_VEC_WIDTHS = (4, 8, 16)
"""float lanes of torch's vectorised CPU kernels (NEON, AVX2, AVX512)."""
_EXACT_SPAN = 1 << 22
"""Reduction spans up to this length are replicated whole when reproducing torch's sum."""


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """How to prune an attribution graph (defaults are circuit-tracer 0.5.0's)."""

    node_threshold: float = 0.8
    """Keep the most influential nodes that together hold this fraction of the total influence."""
    edge_threshold: float = 0.98
    """Keep the highest-scoring edges that together hold this fraction of the total edge score."""

    def __post_init__(self) -> None:
        for name in ("node_threshold", "edge_threshold"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
            if not ok:
                raise WorkbenchError(f"{name} must be in [0, 1]; got {value!r}. It is a fraction of "
                                     "the total influence (defaults: node 0.8, edge 0.98).")


class PruneResult(NamedTuple):
    """What :func:`prune_graph` keeps."""

    node_mask: Tensor
    """(n_nodes,) bool: the nodes kept."""
    edge_mask: Tensor
    """(n_nodes, n_nodes) sparse COO bool, coalesced: the kept edges as (target, source), in
    row-major order. ``edge_mask.to_dense()`` is circuit-tracer's dense mask (except at
    edge_threshold 1.0, see :func:`prune_graph`); :attr:`edge_index` gives the indices."""
    cumulative_scores: Tensor
    """(n_nodes,) float32: fraction of the total influence held by the nodes at least as
    influential as this one (lower = more influential); the viewer's ``influence``."""

    @property
    def edge_index(self) -> Tensor:
        """(2, n_edges) int64: rows (target, source) of the kept edges, row-major order."""
        return self.edge_mask.indices()


class GraphScores(NamedTuple):
    """circuit-tracer's graph scores (higher = more of the computation explained by features)."""

    replacement: float
    """Fraction of the token-to-logit influence that does not pass through error nodes."""
    completeness: float
    """Influence-weighted fraction of the nodes' inputs that do not come from error nodes."""


class ViewerSubgraph(NamedTuple):
    """The nodes and links the viewer JSON holds after pruning (circuit-tracer's filtering)."""

    node_index: Tensor
    """(n_used,) int64 ascending: kept nodes with a kept link, plus every token and logit."""
    edge_index: Tensor
    """(2, n_links) int64 (target, source), row-major order."""


# ----------------------------------------------------------------------------- dense helpers
def normalize_matrix(matrix: Tensor) -> Tensor:
    """``|A| / max(rowsum |A|, 1e-10)`` as a dense copy (for small matrices; prune never calls it)."""
    normalized = matrix.abs()
    return normalized / normalized.sum(dim=1, keepdim=True).clamp(min=1e-10)


def find_threshold(scores: Tensor, threshold: float) -> Tensor:
    """The score at which the descending cumulative sum reaches `threshold` of the total."""
    sorted_scores = torch.sort(scores, descending=True).values  # (n,)
    cumulative = torch.cumsum(sorted_scores, dim=0) / torch.sum(sorted_scores)  # (n,)
    index = int(torch.searchsorted(cumulative, threshold).item())
    return sorted_scores[min(index, len(cumulative) - 1)]


def logit_weights(graph: Graph) -> Tensor:
    """(n_nodes,) float32: the logit probabilities on the logit nodes, zero elsewhere."""
    weights = torch.zeros(graph.n_nodes, device=graph.adjacency.device)  # (n_nodes,)
    weights[graph.logit_start:] = graph.logit_probabilities.to(weights)
    return weights


# ----------------------------------------------------------------------------- blocked kernels
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
    return out


def _power_series(matrix: Tensor, denom: Tensor, weights: Tensor, keep: Tensor | None,
                  max_iter: int) -> Tensor:
    """``w Â + w Â² + ...`` until a term is exactly zero (circuit-tracer's compute_influence)."""
    current = _vec_mat(matrix, denom, weights, keep)  # (n,)
    influence = current.clone()
    iterations = 0
    while bool(current.any()):
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
        if not bool(prod.any()):
            return influences
        influences += prod
    raise WorkbenchError(f"partial influences must converge within {max_iter} iterations; they did "
                         "not. The rows must describe an acyclic graph.")


# ----------------------------------------------------------------------------- torch's sum, exactly
def _ceil_log2(x: int) -> int:
    return 1 if x <= 2 else (x - 1).bit_length()


def _level_power(n: int, vec: int) -> int:
    """The cascade-sum level width torch uses for a contiguous span of `n` floats."""
    return max(4, _ceil_log2(n // vec // 4) // 4)


def _padded_length(n_values: int, span: int) -> int:
    """A length <= span whose zero-padded sum groups the first n_values like the whole span.

    torch's float32 sum accumulates in (vector lane x 4) streams with a cascade of 4 levels
    whose width depends only on the span length; trailing zeros change nothing else.
    """
    if span <= _EXACT_SPAN:
        return span
    target = {vec: _level_power(span, vec) for vec in _VEC_WIDTHS}
    need = [((1 << (4 * p - 1)) + 1) * 4 * vec for vec, p in target.items() if p > 4]
    length = -(-max([n_values, *need]) // 256) * 256
    if length <= span and all(_level_power(length, v) == p for v, p in target.items()):
        return length
    return span


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


def _torch_sum_of_prefix(prefix: Tensor, total_length: int) -> Tensor:
    """``torch.sum`` of `prefix` followed by zeros up to `total_length`, bit for bit, on CPU.

    circuit-tracer sums all N² sorted edge scores. torch splits a long reduction into one
    contiguous span per thread (``two_pass_reduction``), sums each span serially, then sums the
    per-thread partials; this replays that, materialising only enough zeros per span.
    """
    n_threads = torch.get_num_threads()
    if total_length < _TORCH_GRAIN or n_threads == 1:
        spans = [(0, total_length)]
    else:
        n_used = min(n_threads, -(-total_length // _TORCH_GRAIN))
        size = -(-total_length // n_used)
        spans = [(start, min(start + size, total_length)) for start in range(0, total_length, size)]
    partials = torch.zeros(n_threads if len(spans) > 1 else 1, dtype=prefix.dtype)  # (n_threads,)
    for i, (start, end) in enumerate(spans):
        values = prefix[start:min(end, prefix.numel())]  # (n_values,)
        if values.numel() == 0:
            continue
        padded = torch.zeros(_padded_length(values.numel(), end - start), dtype=prefix.dtype)
        padded[: values.numel()] = values
        with _single_thread():
            partials[i] = padded.sum()
        del padded
    return partials.sum() if len(spans) > 1 else partials[0]


def _edge_cut(scores: Tensor, n_entries: int, threshold: float) -> float:
    """circuit-tracer's find_threshold over all n_entries scores, given only the non-zero ones."""
    values = scores.numpy()
    values.sort()  # ascending, in place
    descending = torch.from_numpy(values).flip(0)  # (n_nonzero,)
    del values, scores
    if descending.numel() == 0:
        return 0.0
    total = _torch_sum_of_prefix(descending, n_entries)
    cumulative = torch.cumsum(descending, dim=0).div_(total)  # (n_nonzero,)
    index = min(int(torch.searchsorted(cumulative, threshold).item()), n_entries - 1)
    if index < descending.numel():
        return float(descending[index])
    return 0.0 if descending.numel() < n_entries else float(descending[-1])


# ----------------------------------------------------------------------------- pruning
def _kept_blocks(adjacency: Tensor, kept: Tensor, denom: Tensor, influence: Tensor) -> Iterator[Tensor]:
    """Edge scores on the kept-node submatrix, one block of kept rows at a time."""
    n_kept = int(kept.numel())
    for k0, k1 in _row_blocks(n_kept, adjacency.shape[1]):  # sized for the (rows, n_nodes) gather
        rows = kept[k0:k1]  # (rows,)
        block = adjacency.index_select(0, rows).index_select(1, kept).abs().to(torch.float32)
        yield block.div_(denom[rows, None]).mul_(influence[rows, None])  # (rows, n_kept)


def _select_edges(graph: Graph, node_mask: Tensor, threshold: float) -> tuple[Tensor, bool]:
    """(2, n_edges) kept (target, source) among kept nodes, and whether every pair was kept."""
    adjacency, weights = graph.adjacency, logit_weights(graph)
    denom = _abs_row_sums(adjacency, node_mask, 1e-10)  # (n_nodes,)
    influence = _power_series(adjacency, denom, weights, node_mask, 1000) + weights  # (n_nodes,)
    kept = node_mask.nonzero().squeeze(1)  # (n_kept,)
    nonzero = torch.cat([b[b > 0].cpu() for b in _kept_blocks(adjacency, kept, denom, influence)])
    cut = _edge_cut(nonzero, graph.n_nodes ** 2, threshold)
    del nonzero
    pieces, start = [], 0
    for block in _kept_blocks(adjacency, kept, denom, influence):
        targets, sources = (block >= cut).nonzero(as_tuple=True) if cut > 0 else block.nonzero(as_tuple=True)
        pieces.append(torch.stack([kept[targets + start], kept[sources]]))
        start += block.shape[0]
    edges = torch.cat(pieces, dim=1) if pieces else torch.zeros(2, 0, dtype=torch.long, device=kept.device)
    if cut <= 0:
        logger.warning("the edge cut is 0 (edge_threshold %.3g): circuit-tracer then marks every pair "
                       "of nodes as an edge; kept are the %d edges with a non-zero score", threshold,
                       edges.shape[1])
    return edges, cut <= 0


def _drop_dangling(node_mask: Tensor, edges: Tensor, n_features: int, n_inner: int) -> Tensor:
    """Drop features/errors without outgoing edges and features without incoming ones, to a fixed point."""
    alive = torch.ones(edges.shape[1], dtype=torch.bool, device=edges.device)  # (n_edges,)
    while True:
        old = node_mask.clone()
        has_out = torch.zeros_like(node_mask)
        has_out[edges[1, alive]] = True
        has_in = torch.zeros_like(node_mask)
        has_in[edges[0, alive]] = True
        node_mask[:n_inner] &= has_out[:n_inner]
        node_mask[:n_features] &= has_in[:n_features]
        if torch.equal(node_mask, old):
            return alive
        alive &= node_mask[edges[0]] & node_mask[edges[1]]


def _cumulative_scores(influence: Tensor) -> Tensor:
    sorted_scores, order = torch.sort(influence, descending=True)  # (n_nodes,)
    cumulative = torch.cumsum(sorted_scores, dim=0) / torch.sum(sorted_scores)  # (n_nodes,)
    scores = torch.zeros_like(influence)
    scores[order] = cumulative
    return scores


def prune_graph(graph: Graph, config: PruneConfig | None = None) -> PruneResult:
    """Prune `graph` as circuit-tracer's ``prune_graph`` does (see the module docstring).

    At ``edge_threshold`` 1.0 the edge cut can fall on a zero score; circuit-tracer's mask then
    marks all N² pairs (also zero-weight ones and those of dropped nodes). Here the edge mask
    then holds every pair with a non-zero score; node masks and scores are circuit-tracer's.
    """
    config = config or PruneConfig()
    influence = compute_influence(graph.adjacency, logit_weights(graph))  # (n_nodes,)
    node_mask = influence >= find_threshold(influence, config.node_threshold)  # (n_nodes,)
    node_mask[graph.token_start:] = True
    edges, every_pair = _select_edges(graph, node_mask, config.edge_threshold)
    if not every_pair:
        alive = _drop_dangling(node_mask, edges, graph.n_selected, graph.token_start)
        edges = edges[:, alive]
    n = graph.n_nodes
    ones = torch.ones(edges.shape[1], dtype=torch.bool, device=edges.device)  # (n_edges,)
    edge_mask = torch.sparse_coo_tensor(edges, ones, (n, n), is_coalesced=True, check_invariants=False)
    logger.info("pruned to %d of %d nodes, %d edges", int(node_mask.sum()), n, edges.shape[1])
    return PruneResult(node_mask, edge_mask, _cumulative_scores(influence))


# ----------------------------------------------------------------------------- scores
def graph_scores(graph: Graph) -> GraphScores:
    """circuit-tracer's ``compute_graph_scores`` on the full graph, without a normalised copy."""
    adjacency, weights = graph.adjacency, logit_weights(graph)
    denom = _abs_row_sums(adjacency, None, 1e-10)  # (n_nodes,)
    influence = _power_series(adjacency, denom, weights, None, 1000)  # (n_nodes,)
    errors = slice(graph.error_start, graph.token_start)
    token_influence = influence[graph.token_start:graph.logit_start].sum()
    error_influence = influence[errors].sum()
    replacement = token_influence / (token_influence + error_influence)
    error_fraction = torch.empty_like(influence)  # (n_nodes,)
    for r0, r1 in _row_blocks(graph.n_nodes, graph.token_start - graph.error_start):
        block = adjacency[r0:r1, errors].abs().to(torch.float32).div_(denom[r0:r1, None])  # (rows, n_err)
        error_fraction[r0:r1] = block.sum(dim=-1)
    output = influence + weights  # (n_nodes,)
    completeness = ((1 - error_fraction) * output).sum() / output.sum()
    return GraphScores(float(replacement), float(completeness))


def viewer_subgraph(graph: Graph, result: PruneResult) -> ViewerSubgraph:
    """The nodes and links of the viewer JSON: kept edges between kept nodes; kept nodes that
    touch one of them, plus all tokens and logits (circuit-tracer's create_graph_files)."""
    node_mask = result.node_mask
    edges = result.edge_index  # (2, n_edges)
    edges = edges[:, node_mask[edges[0]] & node_mask[edges[1]]]
    used = torch.zeros_like(node_mask)  # (n_nodes,)
    used[edges[0]] = True
    used[edges[1]] = True
    used[graph.token_start:] = True
    return ViewerSubgraph((used & node_mask).nonzero().squeeze(1), edges)


def _pinned_mask(graph: Graph, pinned: Sequence[str | int]) -> Tensor:
    mask = torch.zeros(graph.n_nodes, dtype=torch.bool)  # (n_nodes,)
    names = [p for p in pinned if isinstance(p, str)]
    for p in pinned:
        if not isinstance(p, str) and not 0 <= int(p) < graph.n_nodes:
            raise WorkbenchError(f"pinned node indices must be in [0, {graph.n_nodes}); got {p!r}. "
                                 "Pass node ids such as '3_1234_5' or valid indices.")
        if not isinstance(p, str):
            mask[int(p)] = True
    if names:
        from tracer.export import node_ids  # export imports this module

        wanted = set(names)
        mask |= torch.tensor([i in wanted for i in node_ids(graph)], dtype=torch.bool)
    return mask


def _scores_from_links(graph: Graph, edges: Tensor, weights: Tensor) -> GraphScores:
    """Replacement and completeness of the graph made of these links, in float64 (Neuronpedia)."""
    targets, sources = edges
    magnitude = weights.abs()  # (n_edges,)
    row_sums = torch.zeros(graph.n_nodes, dtype=torch.float64).index_add_(0, targets, magnitude)
    normalized = magnitude / row_sums[targets].clamp(min=1e-10)  # (n_edges,)
    logit_w = logit_weights(graph).cpu().double()  # (n_nodes,)

    def step(x: Tensor) -> Tensor:
        return torch.zeros_like(x).index_add_(0, sources, x[targets] * normalized)

    current = step(logit_w)
    influence = current.clone()
    for _ in range(1000):
        if not bool(current.any()):
            break
        current = step(current)
        influence += current
    else:
        raise WorkbenchError("influence must converge within 1000 iterations; it did not. "
                             "The graph must be acyclic.")
    token_influence = influence[graph.token_start:graph.logit_start].sum()
    error_influence = influence[graph.error_start:graph.token_start].sum()
    from_error = (sources >= graph.error_start) & (sources < graph.token_start)  # (n_edges,)
    error_fraction = torch.zeros_like(influence).index_add_(0, targets[from_error], normalized[from_error])
    output = influence + logit_w
    replacement = float(token_influence / (token_influence + error_influence))
    completeness = float(((1 - error_fraction) * output).sum() / output.sum())
    return GraphScores(*(0.0 if value != value else value for value in (replacement, completeness)))


class SubgraphScorer:
    """Neuronpedia's subgraph scores of one pruned graph for many pinned sets (:func:`subgraph_scores`
    is one such call). The viewer's links are gathered once, with, for every link, the bucket it
    joins when its source feature is merged into the error node of its (layer, pos): each call then
    sums the links per bucket (one ``bincount``) instead of merging the link list again."""

    def __init__(self, graph: Graph, prune_result: PruneResult, *, view: ViewerSubgraph | None = None) -> None:
        view = view if view is not None else viewer_subgraph(graph, prune_result)
        self.graph = graph
        self.edges = view.edge_index.cpu()  # (2, n_edges)
        self.weights = graph.adjacency[view.edge_index[0], view.edge_index[1]].cpu().double()  # (n_edges,)
        self.used = torch.zeros(graph.n_nodes, dtype=torch.bool)  # (n_nodes,)
        self.used[view.node_index.cpu()] = True
        n, n_features = graph.n_nodes, graph.n_selected
        redirect = torch.arange(n)  # (n_nodes,): a feature's error node
        layer = torch.from_numpy(graph.node_layer()[:n_features]).long()
        pos = torch.from_numpy(graph.node_pos()[:n_features]).long()
        redirect[:n_features] = graph.error_start + layer * graph.n_pos + pos
        targets, sources = self.edges
        merged_key = targets * n + redirect[sources]  # (n_edges,) the link's key once its source is merged
        bucket_keys, self._merged_bucket = torch.unique(merged_key, return_inverse=True)
        self._is_error_source = (sources >= graph.error_start) & (sources < graph.token_start)
        keys = torch.cat([bucket_keys, targets * n + sources])  # (n_buckets + n_edges,) every bucket's link
        self._bucket_target, self._bucket_source = keys // n, keys % n
        self._bucket_order = torch.argsort(keys)  # row-major, as a sorted merge gives
        self._own_bucket = bucket_keys.numel() + torch.arange(targets.numel())  # (n_edges,)

    def __call__(self, pinned: Sequence[str | int] | Tensor = ()) -> GraphScores:
        """Scores with `pinned` node ids / indices (or a bool node mask) pinned; () pins everything."""
        if isinstance(pinned, Tensor) and pinned.dtype == torch.bool:
            if pinned.shape != (self.graph.n_nodes,):
                raise WorkbenchError(f"pinned mask must have shape ({self.graph.n_nodes},); got "
                                     f"{tuple(pinned.shape)}.")
            mask = pinned.cpu()
        elif len(pinned) == 0:
            return _scores_from_links(self.graph, self.edges, self.weights)
        else:
            mask = _pinned_mask(self.graph, [int(p) if isinstance(p, Tensor) else p for p in pinned])
        return _scores_from_links(self.graph, *self._merge(mask))

    def _merge(self, pinned: Tensor) -> tuple[Tensor, Tensor]:
        """Neuronpedia's subgraph surgery on the link list: each unpinned feature's outgoing links
        move to the error node of its (layer, pos) (dropped if that node is not in the graph); its
        incoming links go. Parallel links are summed."""
        graph, n = self.graph, self.graph.n_nodes
        merged = torch.zeros(n, dtype=torch.bool)  # (n_nodes,)
        merged[:graph.n_selected] = self.used[:graph.n_selected] & ~pinned[:graph.n_selected]
        moved = merged[self.edges[1]] | self._is_error_source  # (n_edges,) links that join a merged bucket
        bucket = torch.where(moved, self._merged_bucket, self._own_bucket)  # (n_edges,)
        n_all = self._bucket_order.numel()
        summed = torch.zeros(n_all, dtype=self.weights.dtype).index_add_(0, bucket, self.weights)
        count = torch.bincount(bucket, minlength=n_all)
        new_t, new_s = self._bucket_target, self._bucket_source
        keep = (count > 0) & ~merged[new_t] & self.used[new_s]  # (n_all,)
        idx = self._bucket_order[keep[self._bucket_order]]  # kept buckets, row-major
        return torch.stack([new_t[idx], new_s[idx]]), summed[idx]


def subgraph_scores(graph: Graph, pinned: Sequence[str | int] = (), *,
                    prune_result: PruneResult | None = None,
                    config: PruneConfig | None = None) -> GraphScores:
    """Neuronpedia's subgraph scores (``score.worker.ts``; circuit-tracer PR #42).

    Computed on the pruned graph the viewer shows (`prune_result`, or prune with `config`).
    With `pinned` node ids (``"3_1234_5"``) or node indices, every unpinned feature is merged
    into the error node of its (layer, pos) before both scores are recomputed; with nothing
    pinned these are the scores of the pruned graph. float64 throughout, like the viewer.
    For many pinned sets of one graph, use :class:`SubgraphScorer`.
    """
    result = prune_result if prune_result is not None else prune_graph(graph, config)
    return SubgraphScorer(graph, result)(pinned)

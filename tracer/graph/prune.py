"""Pruning: circuit-tracer 0.5.0's ``prune_graph``, without dense N x N copies.

Formulas (``research/circuit-tracer-algorithm.md`` §6, ``research/geometry.md`` §3.3-3.4); node
order and orientation as in :mod:`tracer.graph.core` (rows = targets, cols = sources); influence
in :mod:`tracer.graph.influence`, scores in :mod:`tracer.graph.scores`::

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
(4 bytes each). The one larger buffer is a zero-padded copy of those values used to reproduce
torch's float32 ``sum`` over all N² scores (see :func:`_torch_sum_of_prefix`); its zeros are the
kernel's shared zero page (:func:`tracer.mapped.lazy_zeros`), so only the values take memory
(the padding itself is up to 2^31 floats per thread at N = 75k). The edge mask is returned sparse
(16 bytes per kept edge).

**Exactness.** On CPU with MKL and the same torch thread count as circuit-tracer's run, every
number is bit-identical to circuit-tracer's, hence so are the masks: row sums reduce the same
full-length rows with the same kernel; block products continue MKL's accumulation chain
(``addmv`` with beta=1 over row blocks whose boundaries are multiples of 16 equals one ``x @ Â``
call for N > 2048; smaller matrices are one block, i.e. the same call); the edge cut reproduces
torch's reduction order over the N² sorted scores (its cumulative sum accumulates in double, so
only the total needs care). Checked on circuit-tracer's own outputs for N = 1.3k-15k. On other
back ends (or MKL choosing another thread split) the numbers agree to float32 rounding and the
masks agree except at exact near-ties of a cut.

The peak memory beyond the adjacency at N = 15,314 is 160 MB (circuit-tracer: 6.3 GB). A
memory-mapped adjacency (``Graph.load(path, mmap=True)``) is read out of core, one block of rows
at a time.
"""

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from tracer.config import PruneConfig
from tracer.errors import WorkbenchError
from tracer.graph.core import Graph
from tracer.graph.influence import _abs_row_sums, _power_series, _row_blocks, compute_influence, logit_weights
from tracer.io import atomic_path, loads_json
from tracer.mapped import lazy_zeros, release_rows
from tracer.threads import torch_threads

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""of the prune-result files written by :func:`save_prune_result`"""

_TORCH_GRAIN = 32768
"""``at::internal::GRAIN_SIZE``: torch splits a full reduction across threads above this."""
_VEC_WIDTHS = (4, 8, 16)
"""float lanes of torch's vectorised CPU kernels (NEON, AVX2, AVX512)."""
_EXACT_SPAN = 1 << 22
"""Reduction spans up to this length are replicated whole when reproducing torch's sum."""


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


class ViewerSubgraph(NamedTuple):
    """The nodes and links the viewer JSON holds after pruning (circuit-tracer's filtering)."""

    node_index: Tensor
    """(n_used,) int64 ascending: kept nodes with a kept link, plus every token and logit."""
    edge_index: Tensor
    """(2, n_links) int64 (target, source), row-major order."""


# ----------------------------------------------------------------------------- dense helpers
def find_threshold(scores: Tensor, threshold: float) -> Tensor:
    """The score at which the descending cumulative sum reaches `threshold` of the total."""
    sorted_scores = torch.sort(scores, descending=True).values  # (n,)
    cumulative = torch.cumsum(sorted_scores, dim=0) / torch.sum(sorted_scores)  # (n,)
    index = int(torch.searchsorted(cumulative, threshold).item())
    return sorted_scores[min(index, len(cumulative) - 1)]


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
        padded = lazy_zeros(_padded_length(values.numel(), end - start), prefix.dtype)  # zero pages: no memory
        padded[: values.numel()] = values
        with torch_threads(1):
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
        if rows.numel():
            release_rows(adjacency, int(rows[0]), int(rows[-1]) + 1)  # kept is ascending
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
    # phases logged: on a large memory-mapped graph each reads the file several times (minutes)
    logger.info("pruning %d nodes: influence of each node on the logits", graph.n_nodes)
    influence = compute_influence(graph.adjacency, logit_weights(graph))  # (n_nodes,)
    node_mask = influence >= find_threshold(influence, config.node_threshold)  # (n_nodes,)
    node_mask[graph.token_start:] = True
    logger.info("pruning: %d nodes hold node_threshold %g of the influence; scoring their edges",
                int(node_mask.sum()), config.node_threshold)
    edges, every_pair = _select_edges(graph, node_mask, config.edge_threshold)
    if not every_pair:
        alive = _drop_dangling(node_mask, edges, graph.n_selected, graph.token_start)
        edges = edges[:, alive]
    n = graph.n_nodes
    ones = torch.ones(edges.shape[1], dtype=torch.bool, device=edges.device)  # (n_edges,)
    edge_mask = torch.sparse_coo_tensor(edges, ones, (n, n), is_coalesced=True, check_invariants=False)
    logger.info("pruned to %d of %d nodes, %d edges", int(node_mask.sum()), n, edges.shape[1])
    return PruneResult(node_mask, edge_mask, _cumulative_scores(influence))


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


def save_prune_result(result: PruneResult, path: str | Path, *,
                      meta: Mapping[str, Any] | None = None) -> Path:
    """Write a prune result: ``.npz`` (the reference harness's prune.npz keys plus ``meta_json``) or
    native safetensors (tensors + JSON header). Tensors: ``node_mask`` (bool), ``edge_target`` and
    ``edge_source`` (int64, row-major), ``cumulative_scores`` (float32). `meta` (thresholds,
    scores...) must be JSON-serialisable. Atomic."""
    import numpy as np

    path = Path(path)
    edges = result.edge_index.cpu()
    tensors = {"node_mask": result.node_mask.cpu(), "edge_target": edges[0].contiguous(),
               "edge_source": edges[1].contiguous(),
               "cumulative_scores": result.cumulative_scores.cpu().float()}
    header = json.dumps({"schema_version": SCHEMA_VERSION, **(meta or {})})
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as fh:
                arrays: dict[str, Any] = {k: v.numpy() for k, v in tensors.items()}
                np.savez(fh, meta_json=np.array(header), **arrays)
        else:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata={"manifold_workbench_prune": header})
    return path


def load_prune_result(path: str | Path) -> tuple[PruneResult, dict[str, Any]]:
    """Read :func:`save_prune_result`'s file: (result, meta). A file that is not one (unreadable, damaged,
    hand-edited: edges outside the nodes, a mask that is not 1-D, thresholds outside [0, 1], another
    schema) is a one-line :class:`~tracer.errors.WorkbenchError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"prune result file must exist; got {str(path)!r}. Check the path.")

    def bad(why: str) -> WorkbenchError:
        return WorkbenchError(f"prune result must be a file written by `workbench prune`; {str(path)!r} is not "
                              f"({why[:160]}).")

    arrays, header = _read_prune_file(path, bad)
    try:
        meta = loads_json(header)
    except (ValueError, RecursionError) as err:
        raise bad(f"its metadata is not JSON: {err}") from None
    _check_prune_meta(meta, bad)
    node_mask, cumulative = arrays["node_mask"], arrays["cumulative_scores"]
    if node_mask.dim() != 1 or cumulative.shape != node_mask.shape:
        raise bad(f"node_mask {tuple(node_mask.shape)} and cumulative_scores {tuple(cumulative.shape)} must be one "
                  "value per node")
    n = int(node_mask.numel())
    edges = torch.stack([arrays["edge_target"].reshape(-1).long(), arrays["edge_source"].reshape(-1).long()])
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= n):
        raise bad(f"edge ends must be node indices in [0, {n}); got {int(edges.min())}..{int(edges.max())}")
    mask = torch.sparse_coo_tensor(edges, torch.ones(edges.shape[1], dtype=torch.bool), (n, n),
                                   is_coalesced=True, check_invariants=False)
    result = PruneResult(node_mask.bool(), mask, cumulative.float())
    return result, meta


_PRUNE_KEYS = ("node_mask", "edge_target", "edge_source", "cumulative_scores")


def _read_prune_file(path: Path, bad: Any) -> tuple[dict[str, Tensor], str]:
    """The four tensors and the metadata text of a prune result file (.npz or safetensors)."""
    import zipfile

    import numpy as np
    from safetensors import SafetensorError, safe_open

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: torch.from_numpy(np.asarray(z[k])) for k in _PRUNE_KEYS}
                header = str(z["meta_json"]) if "meta_json" in z.files else "{}"
        else:
            with safe_open(str(path), framework="pt") as f:
                header = (f.metadata() or {}).get("manifold_workbench_prune", "{}")
                arrays = {k: f.get_tensor(k) for k in _PRUNE_KEYS}
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, EOFError, zipfile.BadZipFile,
            SafetensorError) as err:
        raise bad(f"{type(err).__name__}: {str(err)[:100]}") from None
    for k, t in arrays.items():
        if t.dtype.is_complex or (t.is_floating_point() and not bool(torch.isfinite(t).all())):
            raise bad(f"{k} must hold finite real numbers")
    return arrays, header


def _check_prune_meta(meta: object, bad: Any) -> None:
    """The metadata: a JSON object of this schema whose thresholds, when present, are numbers in [0, 1]."""
    if not isinstance(meta, dict):
        raise bad(f"its metadata must be a JSON object; got {type(meta).__name__}")
    version = meta.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise bad(f"schema_version must be {SCHEMA_VERSION}; got {version!r}")
    for key in ("node_threshold", "edge_threshold"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 1):
            raise bad(f"{key} must be a number in [0, 1]; got {value!r}")

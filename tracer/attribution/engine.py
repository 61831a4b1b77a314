"""Attribution graphs: circuit-tracer 0.5.0's graph, computed with an explicit backward.

Phases (each a function below):

0. ``build_context``: one forward pass; encode transcoders; decoder vectors, errors, tokens.
1. ``select_logits``: the salient logit targets and their demeaned unembedding vectors.
2. logit rows: one sweep from the final norm.
3. feature rows: all features, or greedily by estimated influence when ``max_feature_nodes``
   is set (re-ranked every ``update_interval`` batches, exactly as circuit-tracer does).
4. packaging into the ``Graph`` node order (see :mod:`tracer.graph`).
"""

import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tracer.attribution.context import AttributionContext, build_context
from tracer.attribution.greedy import greedy_select, pack_greedy
from tracer.attribution.packaging import make_graph
from tracer.attribution.rows import RowSink
from tracer.attribution.settings import adjacency_dtype, as_config
from tracer.attribution.sweep import sweep
from tracer.attribution.targets import LogitTargets, select_logits
from tracer.config import AttributionConfig
from tracer.graph.core import Graph, header_reserve
from tracer.graph.stream import open_graph_file
from tracer.mapped import map_tensor
from tracer.memory import adjacency_bytes, check_adjacency_fits, graph_nodes
from tracer.models.loaded import LoadedModel
from tracer.models.tokens import check_token_ids
from tracer.threads import torch_threads
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import check_against_model

logger = logging.getLogger(__name__)


def feature_batches(ctx: AttributionContext, idx: Tensor, rows: int) -> list[Tensor]:
    """Split feature indices into batches of one layer each, sorted by position (less padding)."""
    layer, pos = ctx.active_features[idx, 0], ctx.active_features[idx, 1]
    order = torch.argsort(layer * ctx.n_pos + pos, stable=True)
    idx, layer = idx[order], layer[order]
    batches: list[Tensor] = []
    bounds = torch.searchsorted(layer, torch.arange(ctx.n_layers + 1, device=layer.device))
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        batches.extend(idx[s:min(s + rows, hi)] for s in range(lo, hi, rows))
    return batches


class _Runner:
    """Runs sweeps, in parallel single-threaded workers on CPU (small ops do not scale across
    OpenMP threads; independent batches do), writing disjoint rows of one sink."""

    def __init__(self, ctx: AttributionContext, sink: RowSink, cfg: AttributionConfig) -> None:
        self.ctx, self.sink = ctx, sink
        on_cpu = sink.device.type == "cpu"
        self.n_workers = cfg.n_workers or (torch.get_num_threads() if on_cpu else 1)

    def run(self, jobs: list[tuple[int, Tensor]], pbar: tqdm | None, report: bool = False) -> None:
        """jobs: (first row, feature indices of one layer). With `report`, each job's rows are
        reported done to the sink in job order (jobs must then cover consecutive rows)."""
        ctx, sink = self.ctx, self.sink

        def one(job: tuple[int, Tensor]) -> tuple[int, int]:
            row, batch = job
            layer = int(ctx.active_features[batch[0], 0])
            pos, vecs = ctx.active_features[batch, 1], ctx.encoder_vecs[batch]
            sink.compute(lambda buf, first: sweep(ctx, buf, first, layer, pos, vecs), row, int(batch.shape[0]))
            return row + int(batch.shape[0]), int(batch.shape[0])

        def finished(end: int, n: int) -> None:
            if report:
                sink.done(end)
            if pbar is not None:
                pbar.update(n)

        if self.n_workers <= 1:
            for job in jobs:
                finished(*one(job))
            return
        with torch_threads(1), ThreadPoolExecutor(self.n_workers) as pool:
            for end, n in pool.map(one, jobs):
                finished(end, n)


def compute_feature_rows(runner: _Runner, row_start: int, idx: Tensor, rows: int,
                         pbar: tqdm | None = None, report: bool = False) -> Tensor:
    """Rows of features ``idx`` into the sink from row_start on; returns the feature index of each row."""
    batches = feature_batches(runner.ctx, idx, rows)
    starts = torch.cumsum(torch.tensor([0] + [int(b.shape[0]) for b in batches]), 0).tolist()
    runner.run([(row_start + s, b) for s, b in zip(starts, batches)], pbar, report)
    return torch.cat(batches) if batches else idx[:0]


def _logit_rows(ctx: AttributionContext, targets: LogitTargets, sink: RowSink, row: int) -> None:
    K, L, P = int(targets.token_ids.shape[0]), ctx.n_layers, ctx.n_pos
    pos = torch.full((K,), P - 1, device=targets.vectors.device)
    sink.compute(lambda buf, first: sweep(ctx, buf, first, L, pos, targets.vectors), row, K)


def _all_features(ctx: AttributionContext, targets: LogitTargets, cfg: AttributionConfig,
                  sink: RowSink) -> Tensor:
    """Every feature: rows go straight into the final N x N matrix (batch rows = node rows)."""
    F, K, N = ctx.n_active, int(targets.token_ids.shape[0]), sink.n_nodes
    _logit_rows(ctx, targets, sink, N - K)
    dev = ctx.encoder_vecs.device
    with tqdm(total=F, desc="feature rows", disable=not cfg.verbose) as pbar:
        compute_feature_rows(_Runner(ctx, sink, cfg), 0, torch.arange(F, device=dev), cfg.sweep_rows, pbar,
                             report=True)
    sink.zero(N - K)  # error and token nodes have no inputs
    sink.done(N)
    return torch.arange(F, device=dev)


def _greedy_features(ctx: AttributionContext, targets: LogitTargets, cfg: AttributionConfig,
                     sink: RowSink, cap: int) -> Tensor:
    """Rows computed only for greedily selected features (capped graphs), into a full-width
    scratch buffer of cap + n_logits rows, then packed into the sink block by block."""
    F, L, P, K = ctx.n_active, ctx.n_layers, ctx.n_pos, int(targets.token_ids.shape[0])
    total = F + (L + 1) * P + K
    dev = ctx.encoder_vecs.device
    buf = torch.zeros(cap + K, total, dtype=sink.dtype, device=dev)  # (cap + K, total)
    scratch = RowSink(buf, sink.dtype, dev)
    row_to_node = torch.zeros(cap + K, dtype=torch.long, device=dev)
    _logit_rows(ctx, targets, scratch, 0)
    row_to_node[:K] = torch.arange(K, device=dev) + F + (L + 1) * P
    runner = _Runner(ctx, scratch, cfg)
    with tqdm(total=cap, desc="feature rows", disable=not cfg.verbose) as pbar:
        visited = greedy_select(lambda pending, st: compute_feature_rows(runner, st, pending, cfg.sweep_rows),
                                buf, row_to_node, targets.probabilities, cfg, F, cap, pbar)
    pack_greedy(buf, row_to_node, visited, F, K, sink)
    return torch.nonzero(visited).flatten()


def _fill(ctx: AttributionContext, targets: LogitTargets, cfg: AttributionConfig, sink: RowSink) -> Tensor:
    """Every row of the adjacency into `sink`; returns the selected features."""
    cap = cfg.max_feature_nodes
    if cap is None or cap >= ctx.n_active:
        return _all_features(ctx, targets, cfg, sink)
    return _greedy_features(ctx, targets, cfg, sink, cap)


def check_memory(ctx: AttributionContext, n_logits: int, cap: int | None, adj_dtype: torch.dtype, *,
                 streamed: bool = False) -> None:
    """Stop before allocating if what stays in memory would not fit. In memory, all features: N x N;
    capped: the (cap + logits) x N_all row buffer plus the packed N x N. Streamed to a file, only the
    capped row buffer stays in memory (the file's disk space is checked when it is opened)."""
    n_all = graph_nodes(ctx.n_active, ctx.n_layers, ctx.n_pos, n_logits)
    dev = ctx.encoder_vecs.device
    if cap is None or cap >= ctx.n_active:
        if not streamed:
            check_adjacency_fits(n_all, adjacency_bytes(n_all, n_all, adj_dtype), adj_dtype, dev)
        return
    n = graph_nodes(cap, ctx.n_layers, ctx.n_pos, n_logits)
    need = adjacency_bytes(cap + n_logits, n_all, adj_dtype) + (0 if streamed else adjacency_bytes(n, n, adj_dtype))
    check_adjacency_fits(n, need, adj_dtype, dev, streamed=streamed)


def attribute_fast(loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | list[int],
                   config: AttributionConfig | None = None, *, out: str | os.PathLike[str] | None = None) -> Graph:
    """The fast engine's attribution graph of ``tokens`` (BOS included, used exactly as given).

    With `out` (a path: ``.npz``, else native) the rows are streamed into that file as they are
    computed (see :func:`tracer.attribution.attribute`).
    """
    cfg = as_config(config)
    t0 = time.perf_counter()
    tokens = check_token_ids(loaded, tokens)
    check_against_model(transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    dtype = loaded.dtype
    with torch.no_grad():
        ctx = build_context(loaded, transcoders, tokens, dtype)  # its replacement checks the run is finite
        W_U = loaded.W_U.detach().to(dtype)
        targets = select_logits(ctx.cache.logits[-1].to(dtype), W_U, cfg.max_n_logits, cfg.desired_logit_prob)
        logger.info("phase 1: %d logit targets cover p=%.3f", targets.token_ids.shape[0],
                    float(targets.probabilities.sum()))
        adj_dtype = adjacency_dtype(cfg, dtype)
        n_selected = min(ctx.n_active, cfg.max_feature_nodes or ctx.n_active)
        N = n_selected + (ctx.n_layers + 1) * ctx.n_pos + int(targets.token_ids.shape[0])
        dev = ctx.encoder_vecs.device
        check_memory(ctx, int(targets.token_ids.shape[0]), cfg.max_feature_nodes, adj_dtype, streamed=out is not None)
        if out is not None:
            return _attribute_to_file(loaded, transcoders, tokens, ctx, targets, cfg, adj_dtype, N, Path(out), t0)
        A = torch.zeros(N, N, dtype=adj_dtype, device=dev)
        selected = _fill(ctx, targets, cfg, RowSink(A, adj_dtype, dev))
    seconds = time.perf_counter() - t0
    logger.info("attribution: %d nodes in %.2fs", N, seconds)
    graph = make_graph(loaded, transcoders, tokens, ctx.active_features, ctx.activation_values, targets, A,
                       selected, cfg, seconds)
    graph.extra["flops"] = int(sum(ctx.flops))
    return graph


def _attribute_to_file(loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor, ctx: AttributionContext,
                       targets: LogitTargets, cfg: AttributionConfig, adj_dtype: torch.dtype, N: int, out: Path,
                       t0: float) -> Graph:
    """The rows streamed into `out`; returns the graph with its adjacency mapped from the file."""
    dev = ctx.encoder_vecs.device
    probe = make_graph(loaded, transcoders, tokens, ctx.active_features, ctx.activation_values, targets,
                       torch.zeros(()).expand(N, N), ctx.active_features[:0, 0], cfg, 0.0)
    with open_graph_file(out, N, adj_dtype, header_reserve=header_reserve(probe) + 256) as writer:
        sink = RowSink(writer.adjacency, adj_dtype, dev, writer.rows_done, writer.rows_zero)
        selected = _fill(ctx, targets, cfg, sink)
        seconds = time.perf_counter() - t0
        logger.info("attribution: %d nodes in %.2fs, streamed to %s", N, seconds, out)
        graph = make_graph(loaded, transcoders, tokens, ctx.active_features, ctx.activation_values, targets,
                           writer.adjacency, selected, cfg, seconds)
        graph.extra["flops"] = int(sum(ctx.flops))
        t_finish = time.perf_counter()
        writer.finish(graph)
        place = (writer.data_offset, writer.dtype)
        del sink
    mapped = map_tensor(out, place[0], place[1], (N, N))
    graph = dataclasses.replace(graph, adjacency=mapped, extra={**graph.extra,
                                "finish_seconds": round(time.perf_counter() - t_finish, 3)})
    return graph

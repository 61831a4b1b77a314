"""Attribution graphs: circuit-tracer 0.5.0's graph, computed with an explicit backward.

Phases (each a function below):

0. ``build_context``: one forward pass; encode transcoders; decoder vectors, errors, tokens.
1. ``select_logits``: the salient logit targets and their demeaned unembedding vectors.
2. logit rows: one sweep from the final norm.
3. feature rows: all features, or greedily by estimated influence when ``max_feature_nodes``
   is set (re-ranked every ``update_interval`` batches, exactly as circuit-tracer does).
4. packaging into the ``Graph`` node order (see :mod:`tracer.graph`).
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tracer.attribution.context import AttributionContext, build_context
from tracer.attribution.greedy import greedy_select, pack_greedy
from tracer.attribution.packaging import make_graph
from tracer.attribution.sweep import sweep
from tracer.attribution.targets import LogitTargets, select_logits
from tracer.config import AttributionConfig
from tracer.errors import WorkbenchError
from tracer.graph.core import Graph
from tracer.memory import adjacency_bytes, check_adjacency_fits, graph_nodes
from tracer.models.loaded import LoadedModel
from tracer.models.tokens import check_token_ids
from tracer.threads import torch_threads
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import check_against_model
from tracer.weights import find_non_finite_weight

logger = logging.getLogger(__name__)

_ADJ_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
               "float16": torch.float16}


def _check_finite(ctx: AttributionContext, loaded: LoadedModel, transcoders: Transcoders) -> None:
    for name, t in (("activations", ctx.activation_values), ("residual stream", ctx.cache.resid_pre),
                    ("logits", ctx.cache.logits)):
        if not torch.isfinite(t).all():
            find_non_finite_weight(loaded, transcoders)  # names the weight, if one is to blame
            raise WorkbenchError(f"{name} must be finite; got NaN/inf for this prompt. The model or "
                                 "transcoder weights contain NaNs or overflow in this dtype; try float32.")


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
    OpenMP threads; independent batches do), writing disjoint rows of one buffer."""

    def __init__(self, ctx: AttributionContext, buf: Tensor, cfg: AttributionConfig) -> None:
        self.ctx, self.buf = ctx, buf
        on_cpu = buf.device.type == "cpu"
        self.n_workers = cfg.n_workers or (torch.get_num_threads() if on_cpu else 1)

    def run(self, jobs: list[tuple[int, Tensor]], pbar: tqdm | None) -> None:
        """jobs: (first buffer row, feature indices of one layer)."""
        ctx = self.ctx

        def one(job: tuple[int, Tensor]) -> int:
            row, batch = job
            layer = int(ctx.active_features[batch[0], 0])
            sweep(ctx, self.buf, row, layer, ctx.active_features[batch, 1], ctx.encoder_vecs[batch])
            return int(batch.shape[0])

        if self.n_workers <= 1:
            for job in jobs:
                n = one(job)
                if pbar is not None:
                    pbar.update(n)
            return
        with torch_threads(1), ThreadPoolExecutor(self.n_workers) as pool:
            for n in pool.map(one, jobs):
                if pbar is not None:
                    pbar.update(n)


def compute_feature_rows(runner: _Runner, row_start: int, idx: Tensor, rows: int,
                         pbar: tqdm | None = None) -> Tensor:
    """Rows of features ``idx`` into buf[row_start:]; returns the feature index of each row written."""
    batches = feature_batches(runner.ctx, idx, rows)
    starts = torch.cumsum(torch.tensor([0] + [int(b.shape[0]) for b in batches]), 0).tolist()
    runner.run([(row_start + s, b) for s, b in zip(starts, batches)], pbar)
    return torch.cat(batches) if batches else idx[:0]


def _all_features(ctx: AttributionContext, targets: LogitTargets, cfg: AttributionConfig,
                  adj_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Every feature: rows go straight into the final N x N matrix (batch rows = node rows)."""
    F, L, P, K = ctx.n_active, ctx.n_layers, ctx.n_pos, int(targets.token_ids.shape[0])
    N = F + (L + 1) * P + K
    A = torch.zeros(N, N, dtype=adj_dtype, device=ctx.encoder_vecs.device)
    sweep(ctx, A, N - K, L, torch.full((K,), P - 1, device=A.device), targets.vectors)
    with tqdm(total=F, desc="feature rows", disable=not cfg.verbose) as pbar:
        compute_feature_rows(_Runner(ctx, A, cfg), 0, torch.arange(F, device=A.device), cfg.sweep_rows, pbar)
    return A, torch.arange(F, device=A.device)


def _greedy_features(ctx: AttributionContext, targets: LogitTargets, cfg: AttributionConfig,
                     adj_dtype: torch.dtype, cap: int) -> tuple[Tensor, Tensor]:
    """Rows computed only for greedily selected features (capped graphs)."""
    F, L, P, K = ctx.n_active, ctx.n_layers, ctx.n_pos, int(targets.token_ids.shape[0])
    total = F + (L + 1) * P + K
    dev = ctx.encoder_vecs.device
    buf = torch.zeros(cap + K, total, dtype=adj_dtype, device=dev)
    row_to_node = torch.zeros(cap + K, dtype=torch.long, device=dev)
    sweep(ctx, buf, 0, L, torch.full((K,), P - 1, device=dev), targets.vectors)
    row_to_node[:K] = torch.arange(K, device=dev) + F + (L + 1) * P
    runner = _Runner(ctx, buf, cfg)
    with tqdm(total=cap, desc="feature rows", disable=not cfg.verbose) as pbar:
        visited = greedy_select(lambda pending, st: compute_feature_rows(runner, st, pending, cfg.sweep_rows),
                                buf, row_to_node, targets.probabilities, cfg, F, cap, pbar)
    return pack_greedy(buf, row_to_node, visited, F, K), torch.nonzero(visited).flatten()


def check_memory(ctx: AttributionContext, n_logits: int, cap: int | None, adj_dtype: torch.dtype) -> None:
    """Stop before allocating if the adjacency would not fit (all features: N x N; capped: the
    (cap + logits) x N_all row buffer plus the packed N x N)."""
    n_all = graph_nodes(ctx.n_active, ctx.n_layers, ctx.n_pos, n_logits)
    dev = ctx.encoder_vecs.device
    if cap is None or cap >= ctx.n_active:
        check_adjacency_fits(n_all, adjacency_bytes(n_all, n_all, adj_dtype), adj_dtype, dev)
        return
    n = graph_nodes(cap, ctx.n_layers, ctx.n_pos, n_logits)
    need = adjacency_bytes(cap + n_logits, n_all, adj_dtype) + adjacency_bytes(n, n, adj_dtype)
    check_adjacency_fits(n, need, adj_dtype, dev)


def attribute_fast(loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | list[int],
                   config: AttributionConfig | None = None) -> Graph:
    """The fast engine's attribution graph of ``tokens`` (BOS included, used exactly as given)."""
    cfg = config or AttributionConfig()
    t0 = time.perf_counter()
    tokens = check_token_ids(loaded, tokens)
    check_against_model(transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    dtype = loaded.dtype
    with torch.no_grad():
        ctx = build_context(loaded, transcoders, tokens, dtype)
        _check_finite(ctx, loaded, transcoders)
        W_U = loaded.W_U.detach().to(dtype)
        targets = select_logits(ctx.cache.logits[-1].to(dtype), W_U, cfg.max_n_logits, cfg.desired_logit_prob)
        logger.info("phase 1: %d logit targets cover p=%.3f", targets.token_ids.shape[0],
                    float(targets.probabilities.sum()))
        adj_dtype = (torch.float64 if dtype == torch.float64 else torch.float32) \
            if cfg.adjacency_dtype == "auto" else _ADJ_DTYPES[cfg.adjacency_dtype]
        cap = cfg.max_feature_nodes
        check_memory(ctx, int(targets.token_ids.shape[0]), cap, adj_dtype)
        if cap is None or cap >= ctx.n_active:
            A, selected = _all_features(ctx, targets, cfg, adj_dtype)
        else:
            A, selected = _greedy_features(ctx, targets, cfg, adj_dtype, cap)
    seconds = time.perf_counter() - t0
    logger.info("attribution: %d nodes in %.2fs", A.shape[0], seconds)
    graph = make_graph(loaded, transcoders, tokens, ctx.active_features, ctx.activation_values, targets, A,
                       selected, cfg, seconds)
    graph.extra["flops"] = int(sum(ctx.flops))
    return graph

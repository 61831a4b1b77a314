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
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tracer.config import AttributionConfig
from tracer.context import AttributionContext, build_context
from tracer.errors import WorkbenchError
from tracer.graph import Graph
from tracer.model import LoadedModel, check_token_ids
from tracer.sweep import sweep
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import check_against_model

logger = logging.getLogger(__name__)

_ADJ_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
               "float16": torch.float16}


class LogitTargets(NamedTuple):
    token_ids: Tensor
    """(n_logits,)"""
    probabilities: Tensor
    """(n_logits,)"""
    vectors: Tensor
    """(n_logits, d_model) demeaned unembedding rows"""


def select_logits(logits_last: Tensor, W_U: Tensor, max_n_logits: int, desired_logit_prob: float) -> LogitTargets:
    """The smallest top-k set (k <= max_n_logits) whose probability reaches desired_logit_prob."""
    probs = torch.softmax(logits_last, dim=-1)  # (d_vocab,)
    k = min(max_n_logits, int(probs.shape[0]))
    top_p, top_idx = torch.topk(probs, k)
    cutoff = min(int(torch.searchsorted(torch.cumsum(top_p, 0), desired_logit_prob)) + 1, k)
    ids = top_idx[:cutoff]
    vectors = W_U[ids] - W_U.mean(0, keepdim=True)  # (n_logits, d_model)
    return LogitTargets(ids, top_p[:cutoff], vectors)


def _check_finite(ctx: AttributionContext) -> None:
    for name, t in (("activations", ctx.activation_values), ("residual stream", ctx.cache.resid_pre),
                    ("logits", ctx.cache.logits)):
        if not torch.isfinite(t).all():
            raise WorkbenchError(f"{name} must be finite; got NaN/inf for this prompt. The model or "
                                 "transcoder weights contain NaNs or overflow in this dtype; try --dtype float32.")


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
        from concurrent.futures import ThreadPoolExecutor

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(self.n_workers) as pool:
                for n in pool.map(one, jobs):
                    if pbar is not None:
                        pbar.update(n)
        finally:
            torch.set_num_threads(threads)


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


def greedy_select(compute: Callable[[Tensor, int], Tensor], buf: Tensor, row_to_node: Tensor,
                  probs: Tensor, cfg: AttributionConfig, n_active: int, cap: int, pbar: tqdm | None = None) -> Tensor:
    """circuit-tracer's greedy feature selection; returns the visited mask (n_active,).

    ``buf[:K]`` already holds the K logit rows; ``compute(pending, row_start)`` writes the rows of
    features ``pending`` from ``row_start`` on and returns the feature index of each row written.
    Every ``update_interval * batch_size`` features, unvisited features are re-ranked by their
    partial influence on the logits through the rows computed so far.
    """
    from tracer.prune import compute_partial_influences

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
    return _pack_greedy(buf, row_to_node, visited, F, K), torch.nonzero(visited).flatten()


def _pack_greedy(buf: Tensor, row_to_node: Tensor, visited: Tensor, F: int, K: int) -> Tensor:
    """Keep selected feature columns; sort rows by node; place logit rows last (chunked copy)."""
    selected = torch.nonzero(visited).flatten()
    col_read = torch.cat([selected, torch.arange(F, buf.shape[1], device=buf.device)])
    N, n_sel = int(col_read.shape[0]), int(selected.shape[0])
    A = torch.zeros(N, N, dtype=buf.dtype, device=buf.device)
    order = torch.argsort(row_to_node)  # selected features ascending, then logits
    for s in range(0, int(order.shape[0]), 1024):
        src = order[s:s + 1024]
        dest = torch.arange(s, s + src.shape[0], device=buf.device)
        dest = torch.where(dest < n_sel, dest, dest - n_sel + (N - K))
        A[dest] = buf[src][:, col_read]
    return A


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


def attribute(loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | list[int],
              config: AttributionConfig | None = None, *, dtype: torch.dtype | None = None) -> Graph:
    """The attribution graph of ``tokens`` (BOS included, used exactly as given)."""
    cfg = config or AttributionConfig()
    if cfg.engine == "autograd":
        from tracer.reference import reference_attribute

        return reference_attribute(loaded, transcoders, tokens, cfg)
    t0 = time.perf_counter()
    tokens = check_token_ids(loaded, tokens)
    check_against_model(transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    dtype = dtype or loaded.dtype
    with torch.no_grad():
        ctx = build_context(loaded, transcoders, tokens, dtype)
        _check_finite(ctx)
        W_U = loaded.model.get_output_embeddings().weight.detach().to(dtype)  # type: ignore[operator,union-attr]
        targets = select_logits(ctx.cache.logits[-1].to(dtype), W_U, cfg.max_n_logits, cfg.desired_logit_prob)
        logger.info("phase 1: %d logit targets cover p=%.3f", targets.token_ids.shape[0],
                    float(targets.probabilities.sum()))
        adj_dtype = (torch.float64 if dtype == torch.float64 else torch.float32) \
            if cfg.adjacency_dtype == "auto" else _ADJ_DTYPES[cfg.adjacency_dtype]
        cap = cfg.max_feature_nodes
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


def make_graph(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, active: Tensor, values: Tensor,
               targets: LogitTargets, A: Tensor, selected: Tensor, cfg: AttributionConfig, seconds: float) -> Graph:
    tok = loaded.tokenizer
    decode = (lambda ids: tok.decode(ids)) if tok is not None else (lambda ids: " ".join(map(str, ids)))  # type: ignore[attr-defined]
    return Graph(
        adjacency=A, input_tokens=tokens.cpu(), active_features=active.cpu(),
        activation_values=values.float().cpu(), selected_features=selected.cpu(),
        logit_token_ids=targets.token_ids.cpu(), logit_probabilities=targets.probabilities.float().cpu(),
        logit_vectors=targets.vectors.float().cpu(), n_layers=loaded.n_layers, d_vocab=loaded.d_vocab,
        model_id=loaded.model_id, transcoder_id=tc.source, scan=tc.scan,
        input_string=decode(tokens.tolist()),
        logit_tokens=tuple(decode([int(i)]) for i in targets.token_ids.tolist()),
        extra={"config": {k: v for k, v in vars(cfg).items()}, "attribution_seconds": round(seconds, 3),
               "transcoder_kind": tc.kind},
    )

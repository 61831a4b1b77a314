"""Check supernodes by ablation on the real model, against the graph's prediction and random groups.

For each group (``research/geometry.md`` §7a step 8; issue 10 point 5):

* **measured**: every member is set to 0 at its (layer, position) with
  :func:`tracer.interventions.feature_intervention` (attention frozen, and free; effects propagate
  through later transcoder features); the change of the target's logit margin
  ``logit[target] - logit[runner-up]`` (runner-up: the clean run's second token) and of the target's
  demeaned logit ``logit[target] - mean logit`` at the last position;
* **predicted**: the same change in the linearised graph: removing the members (δ = -1 of their
  activation) moves each later feature t by the fraction ``sum_s A[t, s] δ_s / a_t`` and each logit
  node by ``sum_s A[logit, s] δ_s``, layer by layer over every feature of the graph. The predicted
  margin uses the runner-up's logit node when the graph has one, else only the target's;
* **random matches**: ``n_random`` groups with one random other active feature at each member's
  (layer, position), ablated the same way.

Reported per mode: Spearman correlation of predicted against measured (margin and logit), each
group's win rate (share of its random matches whose |measured margin change| it exceeds; ties
count half), the mean win rate and the share of groups that beat all / the median of their matches.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from analyses.results import check_shapes, register_result
from analyses.supernodes.config import InterventionConfig
from tracer.graph import Graph
from tracer.interventions import feature_intervention, measured_columns, prepare
from tracer.mapped import release_rows
from tracer.models import LoadedModel
from tracer.transcoders.base import Transcoders

logger = logging.getLogger(__name__)


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class InterventionCheck:
    """Predicted against measured ablation effects of supernodes (see the module docstring)."""

    SCHEMA_VERSION = 1

    group_sizes: np.ndarray
    """(n_groups,) int64 members per group."""
    predicted_margin: np.ndarray
    """(n_groups,) float64 predicted change of the target's margin."""
    predicted_logit: np.ndarray
    """(n_groups,) float64 predicted change of the target's demeaned logit."""
    measured_margin: dict[str, np.ndarray]
    """mode -> (n_groups,) measured change of the margin."""
    measured_logit: dict[str, np.ndarray]
    """mode -> (n_groups,) measured change of the demeaned target logit."""
    random_margin: dict[str, np.ndarray]
    """mode -> (n_groups, n_random) measured margin change of the random matches."""
    win_rate: dict[str, np.ndarray]
    """mode -> (n_groups,) share of random matches each group beats in |margin change|."""
    summary: dict[str, dict[str, float]]
    """mode -> spearman_margin, spearman_logit, mean_win_rate, share_beat_all, share_beat_median."""
    target_token: int
    runner_up_token: int
    runner_up_in_graph: bool
    clean_margin: float
    n_unmatched: int
    """Member slots without a random replacement at their (layer, position) (matches are smaller)."""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file): per-group arrays of other lengths."""
        check_shapes(self, {"group_sizes": (None,)}, kinds={"group_sizes": "iu"})
        g = len(self.group_sizes)
        per_mode = {f"{name}[{mode!r}]": value for name in ("measured_margin", "measured_logit", "win_rate")
                    for mode, value in getattr(self, name).items()}
        randoms = {f"random_margin[{mode!r}]": value for mode, value in self.random_margin.items()}
        check_shapes(self, {"predicted_margin": (g,), "predicted_logit": (g,), **{k: (g,) for k in per_mode},
                            **{k: (g, None) for k in randoms}}, {**per_mode, **randoms})


def check_graph_matches(loaded: LoadedModel, transcoders: Transcoders, graph: Graph, clean: Any, *,
                        rtol: float = 1e-3, n_columns: int = 2) -> None:
    """Raise ValueError unless the model and transcoders reproduce the graph: its feature activations,
    and the adjacency columns of its ``n_columns`` most active features (by intervention on the
    frozen model, :func:`tracer.interventions.measured_columns`)."""
    sel = graph.active_features[graph.selected_features].cpu()
    if sel.numel() == 0:
        return
    hint = "Pass the model and transcoders the graph was traced with."
    acts = torch.stack([clean.activations(int(layer))[int(p), int(f)].detach().cpu().double()
                        for layer, p, f in sel.tolist()])  # (n_selected,)
    want = graph.activation_values[graph.selected_features].cpu().double()
    worst = float((acts - want).abs().max())
    if worst > rtol * max(1.0, float(want.abs().max())):
        raise ValueError(f"the model and transcoders must reproduce the graph's activations; got a difference of "
                         f"{worst:.3g}. {hint}")
    nodes = torch.argsort(want, descending=True, stable=True)[:n_columns].tolist()
    measured = measured_columns(loaded, transcoders, graph, nodes, clean=clean).cpu().double()  # (n, k)
    expected = _columns(graph.adjacency, nodes).double()  # (n_nodes, k)
    scale = float(expected.abs().max().clamp(min=1e-6))
    worst = float((measured - expected).abs().max())
    if worst > 1e-2 * scale:
        raise ValueError(f"the model and transcoders must reproduce the graph's edges; got a difference of "
                         f"{worst:.3g} (edges up to {scale:.3g}). {hint}")


_BLOCK_BYTES = 64 * 2**20
"""Adjacency rows read (and widened to float64) at once by :func:`predicted_effects`."""


def _rows_times(A: torch.Tensor, rows: torch.Tensor, n_cols: int, right: torch.Tensor) -> torch.Tensor:
    """(len(rows), k) float64 ``A[rows, :n_cols] @ right``, reading ``A`` (possibly memory-mapped, possibly on
    another device) a block of rows at a time so that memory stays at :data:`_BLOCK_BYTES`, not rows x n_cols;
    a memory-mapped file's pages are dropped after each block (as pruning does), so they do not pile up."""
    step = max(1, _BLOCK_BYTES // (8 * max(n_cols, 1)))
    out = torch.empty(len(rows), right.shape[1], dtype=torch.float64)  # (n_rows, k)
    for start in range(0, len(rows), step):
        block = rows[start:start + step]  # (b,)
        out[start:start + step] = A[block.to(A.device), :n_cols].cpu().double() @ right  # (b, k)
        release_rows(A, int(block.min()), int(block.max()) + 1)
    return out


def _columns(A: torch.Tensor, cols: list[int]) -> torch.Tensor:
    """(n_rows, k) ``A[:, cols]`` on the CPU, read a block of rows at a time with a memory-mapped file's pages
    dropped after each block (one column touches a page of every row: 10 GB of file pages at 88,890 nodes)."""
    n_rows = A.shape[0]
    step = max(1, _BLOCK_BYTES // (A.shape[1] * A.element_size()))
    index = torch.as_tensor(cols, dtype=torch.long, device=A.device)  # (k,)
    parts = []
    for r0 in range(0, n_rows, step):
        parts.append(A[r0:r0 + step].index_select(1, index).cpu())  # (b, k)
        release_rows(A, r0, min(r0 + step, n_rows))
    return torch.cat(parts) if parts else torch.zeros(0, len(cols), dtype=A.dtype)


def predicted_effects(graph: Graph, groups: Sequence[np.ndarray]) -> np.ndarray:
    """(n_logits, n_groups) predicted change of each logit node when each group is removed.

    Reads the adjacency's feature rows blockwise (:func:`_rows_times`): a large unpruned graph's
    memory-mapped adjacency is never copied whole."""
    F = graph.n_selected
    A = graph.adjacency
    acts = graph.activation_values[graph.selected_features].double().cpu()  # (F,)
    layers = graph.active_features[graph.selected_features, 0].cpu()  # (F,)
    delta = torch.zeros(F, len(groups), dtype=torch.float64)  # (F, n_groups) fraction of activation change
    member = torch.zeros(F, len(groups), dtype=torch.bool)
    for g, nodes in enumerate(groups):
        member[torch.as_tensor(nodes, dtype=torch.long), g] = True
    for layer in torch.unique(layers).tolist():
        idx = (layers == layer).nonzero().flatten()  # (n_l,)
        change = _rows_times(A, idx, F, delta)  # (n_l, n_groups) pre-activation change
        delta[idx] = torch.where(member[idx], -1.0, change / acts[idx, None].clamp(min=1e-12))
    logit_rows = torch.arange(graph.logit_start, A.shape[0])  # (n_logits,)
    return _rows_times(A, logit_rows, F, delta).numpy()  # (n_logits, n_groups)


def _random_matches(graph: Graph, groups: Sequence[np.ndarray], n_random: int,
                    rng: np.random.Generator) -> tuple[list[list[list[tuple[int, int, int]]]], int]:
    """For each group, n_random lists of (layer, pos, feature): other active features at the
    members' (layer, pos) cells; and the number of member slots left without a match."""
    active = graph.active_features.cpu().numpy()
    cells: dict[tuple[int, int], np.ndarray] = {}
    for layer, pos in {(int(a[0]), int(a[1])) for a in active}:
        cells[(layer, pos)] = active[(active[:, 0] == layer) & (active[:, 1] == pos), 2]
    sel = graph.active_features[graph.selected_features].cpu().numpy()
    out, unmatched = [], 0
    for nodes in groups:
        keys = sel[np.asarray(nodes)]
        need = {c: int(((keys[:, 0] == c[0]) & (keys[:, 1] == c[1])).sum()) for c in {(int(k[0]), int(k[1]))
                                                                                    for k in keys}}
        draws = []
        for _ in range(n_random):
            items = []
            for (layer, pos), k in sorted(need.items()):
                pool = np.setdiff1d(cells[(layer, pos)], keys[(keys[:, 0] == layer) & (keys[:, 1] == pos), 2])
                take = rng.choice(pool, size=min(k, pool.size), replace=False)
                unmatched += k - take.size
                items += [(layer, pos, int(f)) for f in take]
            draws.append(items)
        out.append(draws)
    return out, unmatched


def _measure(loaded: LoadedModel, transcoders: Transcoders, clean: Any, items: list[tuple[int, int, int]],
             freeze: bool, target: int, runner_up: int) -> tuple[float, float]:
    """(margin, demeaned target logit) at the last position with ``items`` set to 0."""
    res = feature_intervention(loaded, transcoders, clean.tokens, [(l, p, f, 0.0) for l, p, f in items],
                               freeze_attention=freeze, return_activations=False, clean=clean)
    last = res.logits[-1].double()
    return float(last[target] - last[runner_up]), float(last[target] - last.mean())


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _win_rates(measured: np.ndarray, random: np.ndarray) -> np.ndarray:
    mine, theirs = np.abs(measured)[:, None], np.abs(random)
    return ((mine > theirs) + 0.5 * (mine == theirs)).mean(1)


def check_supernodes(loaded: LoadedModel, transcoders: Transcoders, graph: Graph, groups: Sequence[Sequence[int]],
                     *, config: InterventionConfig | None = None, verbose: bool = False) -> InterventionCheck:
    """Ablate every group of feature nodes on the real model (see the module docstring)."""
    config = config or InterventionConfig()
    arrays = [np.asarray(g, dtype=np.int64) for g in groups]
    if not arrays or any(g.size == 0 or g.min() < 0 or g.max() >= graph.n_selected for g in arrays):
        raise ValueError(f"groups must be non-empty lists of feature node indices in [0, {graph.n_selected}); got "
                         f"{len(groups)} groups.")
    clean = prepare(loaded, transcoders, graph.input_tokens)
    check_graph_matches(loaded, transcoders, graph, clean)
    last = clean.cache.logits[-1].double().cpu()  # (d_vocab,) the model may be on a GPU
    target = int(graph.logit_token_ids[0])
    runner_up = int(torch.topk(torch.where(torch.arange(last.numel()) == target, -torch.inf, last), 1).indices)
    logit_ids = graph.logit_token_ids.tolist()
    pred = predicted_effects(graph, arrays)  # (n_logits, n_groups)
    in_graph = runner_up in logit_ids
    pred_margin = pred[0] - pred[logit_ids.index(runner_up)] if in_graph else pred[0]
    sel = graph.active_features[graph.selected_features].cpu().numpy()
    matches, unmatched = _random_matches(graph, arrays, config.n_random, np.random.default_rng(config.seed))
    measured_m, measured_l, random_m, wins, summary = {}, {}, {}, {}, {}
    # one run list per mode: the clean baseline, each group, then each group's random matches (group-major)
    members = [[(int(k[0]), int(k[1]), int(k[2])) for k in sel[g]] for g in arrays]
    jobs: list[list[tuple[int, int, int]]] = [[], *members, *(items for draws in matches for items in draws)]
    for mode in config.modes:
        runs = np.array([_measure(loaded, transcoders, clean, items, mode == "frozen", target, runner_up)
                         for items in tqdm(jobs, desc=f"ablate groups and random matches ({mode})",
                                           disable=not verbose)])  # (n_jobs, 2) margin, demeaned logit
        base, rows = runs[0], runs[1:len(arrays) + 1]  # (2,), (n_groups, 2)
        measured_m[mode] = rows[:, 0] - base[0]
        measured_l[mode] = rows[:, 1] - base[1]
        randoms = runs[len(arrays) + 1:, 0].reshape(len(arrays), config.n_random)  # (n_groups, n_random)
        random_m[mode] = randoms - base[0]
        wins[mode] = _win_rates(measured_m[mode], random_m[mode])
        summary[mode] = {"spearman_margin": _spearman(pred_margin, measured_m[mode]),
                         "spearman_logit": _spearman(pred[0], measured_l[mode]),
                         "mean_win_rate": float(wins[mode].mean()),
                         "share_beat_all": float((wins[mode] == 1.0).mean()),
                         "share_beat_median": float((wins[mode] > 0.5).mean())}
    return InterventionCheck(
        group_sizes=np.array([g.size for g in arrays]), predicted_margin=pred_margin, predicted_logit=pred[0],
        measured_margin=measured_m, measured_logit=measured_l, random_margin=random_m, win_rate=wins,
        summary=summary, target_token=target, runner_up_token=runner_up, runner_up_in_graph=in_graph,
        clean_margin=float(last[target] - last[runner_up]), n_unmatched=unmatched,
        meta={"n_random": config.n_random, "seed": config.seed, "modes": list(config.modes)})

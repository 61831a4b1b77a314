"""Scoring manifold fits on held-out prompts, with 95% bootstrap intervals (issue 11, point 7).

Two kinds of "held out", always reported apart:

* **fit-held-out** (cross-fitting): the prompts are split into ``K`` folds (stratified by value,
  seeded); each fold is scored by the fit made on the other folds, so every prompt is scored once
  by a fit that did not see it. This gives hundreds of prompts per family.
* **model-held-out**: the fit uses the prompts the model was trained on, and the prompts whose
  (start, offset, direction) combination the model never saw are scored (few: 28 / 48 / 48).

Per point: the squared distance in the fit's subspace to the curve at the true value (``res2``),
the squared distance to the mean of its scored group (``tot2``), the angle error and whether the
nearest value is right. Pooled R² = 1 - Σ res2 / Σ tot2. Intervals: 1000 bootstrap resamples of
the prompts (a prompt's substitutions or steering runs stay together).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analyses.manifolds.causal import (
    MEDIATION_MARGIN,
    CausalResult,
    SteeringResult,
    SubstitutionCase,
    causal_check,
    clean_runs,
    steer_check,
)
from analyses.manifolds.curves import r2_from_sums
from analyses.manifolds.fit import ManifoldFit, ManifoldFitConfig, ManifoldFitResult
from tracer.models import LoadedModel
from tracer.transcoders.base import Transcoders
from workbench.scoring.bootstrap import interval, resamples


def grouped_rate(outcomes: np.ndarray, group: np.ndarray, n_groups: int) -> tuple[float, list[float]]:
    """Success rate of bool ``outcomes`` (n,) and its interval, resampling whole groups (prompts)."""
    if len(outcomes) == 0:
        return float("nan"), [float("nan"), float("nan")]
    hits = np.bincount(group, weights=outcomes.astype(float), minlength=n_groups)  # (n_groups,)
    runs = np.bincount(group, minlength=n_groups).astype(float)
    idx = resamples(n_groups)  # (B, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = hits[idx].sum(1) / runs[idx].sum(1)
    return float(outcomes.mean()), interval(boot)


def stratified_folds(values: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(n,) fold id in [0, k) per point: within each value, a seeded shuffle dealt round-robin."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(values), dtype=np.int64)
    offset = 0
    for v in np.unique(values):
        idx = rng.permutation(np.flatnonzero(values == v))
        folds[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return folds


@dataclass(frozen=True, kw_only=True)
class FitSpec:
    """What a fit is made of and labelled with."""

    period: int
    names: list[str]
    layer: int
    position: str
    source: str
    config: ManifoldFitConfig = field(default_factory=ManifoldFitConfig)
    """fit parameters (its period is replaced by ``period``)"""


def layer_rank(between_class_fraction: float, layer: int) -> tuple[float, int]:
    """Sort key of the layer where a variable is represented: the largest between-class share of a fit
    on fit data (class means explain most of the points), the earlier layer on a tie."""
    return between_class_fraction, -layer


def make_fit(spec: FitSpec, X: np.ndarray, y: np.ndarray) -> ManifoldFitResult:
    """A curve fitted on ``X`` (n, d) with values ``y`` (n,)."""
    est = ManifoldFit.from_config(spec.config, period=spec.period)
    return est.fit(X, y, value_names=spec.names, layer=spec.layer, position=spec.position,
                   source=spec.source).result_


def point_scores(fit: ManifoldFitResult, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per point (n,): res2, tot2, squared angle error, value correct; and for the radial diagnostics, the
    point's distance from the centre over its curve point's (``radius_ratio``) and res2 / tot2 of the point
    moved along its own direction to its curve point's distance (``res2_matched`` / ``tot2_matched``)."""
    u_hat, u = fit.transform(X), fit.value_coordinate(y)
    Z = fit.project(X)  # (n, m)
    C = fit.project(fit.curve(u))  # (n, m) the curve at each point's true value
    res2 = ((Z - C) ** 2).sum(1)
    tot2 = ((Z - Z.mean(0)) ** 2).sum(1)
    err2 = np.angle(np.exp(1j * (u_hat - u))) ** 2
    correct = (fit.coordinate_to_value(u_hat) == y).astype(float)
    radius, curve_radius = np.linalg.norm(Z, axis=1), np.linalg.norm(C, axis=1)  # (n,), (n,)
    Z_matched = Z * (curve_radius / np.maximum(radius, 1e-12))[:, None]  # (n, m)
    return {"res2": res2, "tot2": tot2, "err2": err2, "correct": correct,
            "radius_ratio": radius / np.maximum(curve_radius, 1e-12),
            "res2_matched": ((Z_matched - C) ** 2).sum(1),
            "tot2_matched": ((Z_matched - Z_matched.mean(0)) ** 2).sum(1)}


def summarize(scores: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pooled R², angle RMSE and value accuracy with 95% intervals over the scored prompts; and the mean radius
    ratio (a point's distance from the centre over its curve point's: below 1, the points sit inside the curve)
    with its interval, and the R² of the points moved along their own directions to the curve's distance."""
    res2, tot2, err2, correct = (scores[k] for k in ("res2", "tot2", "err2", "correct"))
    ratio, res2_m, tot2_m = scores["radius_ratio"], scores["res2_matched"], scores["tot2_matched"]
    idx = resamples(len(res2))  # (B, n)
    r2_b = r2_from_sums(res2[idx].sum(1), tot2[idx].sum(1))  # (B,) nan where the points do not vary
    r2_matched_b = r2_from_sums(res2_m[idx].sum(1), tot2_m[idx].sum(1))  # (B,)
    out = {"n": len(res2), "r2": float(r2_from_sums(res2.sum(), tot2.sum())), "r2_ci": interval(r2_b),
           "angle_rmse": float(np.sqrt(err2.mean())), "angle_rmse_ci": interval(np.sqrt(err2[idx].mean(1))),
           "accuracy": float(correct.mean()), "accuracy_ci": interval(correct[idx].mean(1))}
    # diagnostics of a miss: how far in or out of the curve the points sit, and the R² without that
    return out | {"radius_ratio": float(ratio.mean()), "radius_ratio_ci": interval(ratio[idx].mean(1)),
                  "r2_radius_matched": float(r2_from_sums(res2_m.sum(), tot2_m.sum())),
                  "r2_radius_matched_ci": interval(r2_matched_b)}


@dataclass(frozen=True, kw_only=True, eq=False)
class SplitFits:
    """Fits of one kind of hold-out: ``fits[g]`` scores the prompts with ``group == g`` (-1: not scored)."""

    fits: list[ManifoldFitResult]
    group: np.ndarray
    """(n,)"""
    scores: dict[str, Any]
    """summarize() of the scored prompts, plus the fits' frequencies and order checks"""


def split_fits(spec: FitSpec, X: np.ndarray, y: np.ndarray, group: np.ndarray,
               train_of: Callable[[int], np.ndarray]) -> SplitFits:
    """One fit per scored group g on ``train_of(g)`` (a mask), scored on ``group == g``."""
    gs = sorted(int(g) for g in np.unique(group) if g >= 0)
    fits, parts = [], []
    for g in gs:
        fit = make_fit(spec, X[train_of(g)], y[train_of(g)])
        fits.append(fit)
        parts.append(point_scores(fit, X[group == g], y[group == g]))
    pooled = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    scores = summarize(pooled)
    scores["frequencies"] = [f.frequency for f in fits]
    scores["order_matches"] = [f.order_matches_values() for f in fits]
    return SplitFits(fits=fits, group=group, scores=scores)


def crossfit(spec: FitSpec, X: np.ndarray, y: np.ndarray, k: int, seed: int = 0) -> SplitFits:
    """Fit-held-out scoring: ``k`` stratified folds, each scored by the fit on the others."""
    folds = stratified_folds(y, k, seed)
    return split_fits(spec, X, y, folds, lambda g: folds != g)


def model_heldout(spec: FitSpec, X: np.ndarray, y: np.ndarray, heldout: np.ndarray) -> SplitFits:
    """Model-held-out scoring: fit on the model's training prompts, score its held-out ones."""
    group = np.where(heldout, 0, -1)
    return split_fits(spec, X, y, group, lambda g: ~heldout)


# ----------------------------------------------------------------------------- on the real model
def pick_targets(value: int, period: int, n_targets: int | None, rng: np.random.Generator) -> list[int]:
    """Values v' != value to move to: all of them (None) or a seeded sample of ``n_targets``."""
    others = [v for v in range(period) if v != value]
    if n_targets is None or n_targets >= len(others):
        return others
    return sorted(int(v) for v in rng.choice(others, n_targets, replace=False))


def cases_for(tokens: Sequence[Sequence[int]], position: Sequence[int] | np.ndarray, values: np.ndarray,
              answers: Sequence[Sequence[int]] | np.ndarray, vectors: np.ndarray | None, n_targets: int | None,
              seed: int = 0) -> list[SubstitutionCase]:
    """Cases: ``answers[i][v']`` is the token id prompt i should answer when its variable is v'."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (tok, pos, v) in enumerate(zip(tokens, position, values)):
        targets = {t: int(answers[i][t]) for t in pick_targets(int(v), len(answers[i]), n_targets, rng)}
        out.append(SubstitutionCase(tokens=list(tok), position=int(pos), value=int(v), targets=targets,
                                    vector=None if vectors is None else vectors[i]))
    return out


def _merge(results: Sequence[CausalResult | SteeringResult], offsets: Sequence[np.ndarray]) -> tuple[
        np.ndarray, np.ndarray]:
    """Concatenate per-group outcomes, mapping case indices back to prompt indices."""
    outs = np.concatenate([r.outcomes for r in results])
    idx = np.concatenate([off[r.case_index] for r, off in zip(results, offsets)])
    return outs, idx


def real_model_scores(loaded: LoadedModel, tcs: Transcoders, splits: SplitFits, cases: Sequence[SubstitutionCase],
                      *, use: np.ndarray | None = None, seed: int = 0, freeze_attention: bool = False,
                      steering: bool = True) -> dict[str, Any]:
    """Substitution (fitted / random / full) and steering of the scored cases (``use``: a subset mask) by
    their group's fit; intervals resample prompts."""
    use = np.ones(len(cases), bool) if use is None else use
    causal, steer, offsets = [], [], []
    groups = sorted(int(x) for x in np.unique(splits.group) if x >= 0)
    for g, fit in zip(groups, splits.fits):
        members = np.flatnonzero((splits.group == g) & use)
        if len(members) == 0:
            continue
        sub = [cases[int(i)] for i in members]
        cleans = clean_runs(loaded, tcs, sub)
        causal.append(causal_check(loaded, tcs, fit, sub, seed=seed + g, freeze_attention=freeze_attention,
                                   cleans=cleans))
        if steering:
            steer.append(steer_check(loaded, tcs, fit, sub, freeze_attention=freeze_attention, cleans=cleans))
        offsets.append(members)
    scored = np.concatenate(offsets)  # prompt indices, in run order
    compact = [np.searchsorted(np.sort(scored), o) for o in offsets]  # prompt -> 0..n_scored-1
    c_out, c_idx = _merge(causal, compact)
    n = len(scored)
    report: dict[str, Any] = {"n_prompts": n, "n_substitutions": len(c_out)}
    for j, kind in enumerate(("fitted", "random", "full")):
        rate, ci = grouped_rate(c_out[:, j], c_idx, n)
        report[f"{kind}_success"], report[f"{kind}_success_ci"] = rate, ci
    report["mediates"] = bool(report["fitted_success"] - report["random_success"] >= MEDIATION_MARGIN)
    if steering:
        s_out, s_idx = _merge(steer, compact)
        report["steering_success"], report["steering_success_ci"] = grouped_rate(s_out, s_idx, n)
        report["n_steering"] = len(s_out)
    report["n_components"] = [f.n_components for f in splits.fits]
    return report

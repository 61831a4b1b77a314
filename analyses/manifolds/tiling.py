"""How a family's features tile a manifold: tuning curves over the manifold coordinate.

Input: a coordinate per token row (an angle for closed manifolds -- from
:meth:`ManifoldFitResult.transform` or discovery's principal curve -- or a position in [0, 1] for
open ones), the members' activations on those rows (zeros included), optionally their decoder
rows and the true value per row. Per feature:

* tuning curve: mean activation per coordinate bin;
* preferred coordinate: the activation-weighted circular mean (closed) or mean (open);
* selectivity: the resultant length ``|Σ a e^{iu}| / Σ a`` (closed), or ``1 - std / std_uniform``
  of the activation-weighted position (open); 1 = fires at one point, 0 = flat;
* width: the share of the manifold (radians, or position units) where the tuning curve is at
  least half its peak.

For the family: coverage (share of occupied bins where some feature is at least half its peak), the mean
overlap (histogram intersection of normalised tuning curves) of neighbours in preferred order,
the share of selective features (>= 0.7), the Pearson correlation between decoder cosine and
closeness of preferred coordinates (``cos Δu`` closed, ``-|Δu|`` open) over feature pairs, and --
with true values -- each feature's tuning over the values, the values covered (some live feature's
mean activation there is at least half its peak over the values, as the bin coverage) and the
stricter set of values that are some live feature's peak.
"""

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from analyses.base import as_integers, check_number, check_real
from analyses.manifolds.fit import class_means
from analyses.results import check_shapes, register_result

SELECTIVE = 0.7
"""Selectivity from which a feature counts as unimodally tuned (research note §7b.6)."""


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class TilingResult:
    """Tuning statistics of a family over a manifold coordinate."""

    SCHEMA_VERSION = 2

    features: list[int]
    """feature ids (the columns of the activations, in order)"""
    closed: bool
    """coordinate is an angle in [0, 2π) (else a position in [0, 1])"""
    bin_centres: np.ndarray
    """(n_bins,)"""
    tuning: np.ndarray
    """(n_features, n_bins) mean activation per bin (NaN for an empty bin)"""
    live: np.ndarray
    """(n_features,) fired on at least one row"""
    preferred: np.ndarray
    """(n_features,) preferred coordinate (NaN when dead)"""
    selectivity: np.ndarray
    """(n_features,)"""
    width: np.ndarray
    """(n_features,) extent where the tuning curve is >= half its peak"""
    peak: np.ndarray
    """(n_features,) maximum of the tuning curve"""
    coverage: float
    """share of the occupied bins (holding at least one row) where some live feature is >= half its peak"""
    neighbour_overlap: float
    """mean histogram intersection of neighbours' normalised tuning curves (NaN with < 2 live features)"""
    fraction_selective: float
    """share of live features with selectivity >= 0.7 (NaN when selectivity is undefined: a constant coordinate)"""
    decoder_cosine_r: float | None
    """Pearson r of decoder cosine vs closeness of preferred coordinates (None without decoders)"""
    value_tuning: np.ndarray | None
    """(n_features, period) mean activation per true value, when values were given"""
    covered_values: list[int] | None
    """values where some live feature's mean activation is >= half its peak over the values"""
    peak_values: list[int] | None
    """values that are some live feature's peak value (stricter)"""

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file): per-feature or per-bin arrays
        of other lengths."""
        check_shapes(self, {"bin_centres": (None,)})
        f, b = len(self.features), len(self.bin_centres)
        check_shapes(self, {"tuning": (f, b), "live": (f,), "preferred": (f,), "selectivity": (f,), "width": (f,),
                            "peak": (f,), **({"value_tuning": (f, None)} if self.value_tuning is not None else {})})

    @property
    def value_coverage(self) -> float | None:
        """Share of the values covered (see ``covered_values``)."""
        if self.covered_values is None or self.value_tuning is None:
            return None
        return len(self.covered_values) / self.value_tuning.shape[1]

    @property
    def peak_coverage(self) -> float | None:
        """Share of the values that are some live feature's peak."""
        if self.peak_values is None or self.value_tuning is None:
            return None
        return len(self.peak_values) / self.value_tuning.shape[1]

    def summary(self) -> dict[str, object]:
        return {"n_features": len(self.features), "n_live": int(self.live.sum()), "coverage": self.coverage,
                "neighbour_overlap": self.neighbour_overlap, "fraction_selective": self.fraction_selective,
                "median_selectivity": (float(np.nanmedian(self.selectivity)) if np.isfinite(self.selectivity).any()
                                       else None),
                "decoder_cosine_r": self.decoder_cosine_r, "covered_values": self.covered_values,
                "value_coverage": self.value_coverage, "peak_values": self.peak_values,
                "peak_coverage": self.peak_coverage, "per_feature": self.per_feature()}

    def per_feature(self) -> list[dict[str, object]]:
        """Each feature's tuning numbers (JSON-friendly: NaN as None): preferred coordinate (circular mean for an
        angle), width, selectivity, peak, and with values its peak value."""
        def num(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        rows: list[dict[str, object]] = []
        for i, f in enumerate(self.features):
            vt = None if self.value_tuning is None else self.value_tuning[i]
            best = None if vt is None or not self.live[i] or not np.isfinite(vt).any() else int(np.nanargmax(vt))
            rows.append({"feature": int(f), "live": bool(self.live[i]), "preferred": num(self.preferred[i]),
                         "width": num(self.width[i]), "selectivity": num(self.selectivity[i]),
                         "peak": num(self.peak[i]), "peak_value": best})
        return rows


def _dense(A: Any, n_rows: int) -> np.ndarray:
    M = A.toarray() if sp.issparse(A) else np.asarray(A)
    if M.ndim != 2 or M.shape[0] != n_rows:
        raise ValueError(f"activations must have shape ({n_rows}, n_features) (one row per coordinate); got "
                         f"{M.shape}.")
    check_real("activations", M, hint="A NaN row would make every feature look dead: drop that row.")
    return np.asarray(M, dtype=np.float64)


def _coordinate(coordinate: Any, closed: bool) -> np.ndarray:
    """(n,) angles reduced to [0, 2π) (closed) or positions that must lie in [0, 1] (open)."""
    u = np.asarray(coordinate).ravel()
    check_real("coordinate", u, hint="Drop the rows without a coordinate.")
    u = u.astype(np.float64)
    if closed:
        return np.mod(u, 2 * np.pi)
    if u.size and (u.min() < 0.0 or u.max() > 1.0):
        raise ValueError(f"coordinate must be positions in [0, 1] when closed=False; got values from {u.min():.6g} "
                         f"to {u.max():.6g}. Rescale it, or pass closed=True for an angle.")
    return u


def _decoders(W_dec: Any, n_features: int) -> np.ndarray:
    W = np.asarray(W_dec)
    if W.ndim != 2 or W.shape[0] != n_features:
        raise ValueError(f"W_dec must have shape ({n_features}, d_model) (one row per column of the activations); "
                         f"got {W.shape}.")
    check_real("W_dec", W)
    return W.astype(np.float64)


def _values(values: Any, period: int | None, n_rows: int) -> tuple[np.ndarray, int]:
    """(n_rows,) int64 true values and the period (default: the largest value + 1)."""
    v = as_integers("values", values).ravel()
    if period is not None:
        check_number("period", period, lo=1, integer=True)
    p = (int(v.max()) + 1 if v.size else 1) if period is None else int(period)
    if v.shape != (n_rows,) or (v.size and (v.min() < 0 or v.max() >= p)):
        raise ValueError(f"values must be integers in [0, {p}), one per row ({n_rows}); got shape {v.shape}"
                         f"{f', values from {v.min()} to {v.max()}' if v.size else ''}.")
    return v, p


def bin_means(u: np.ndarray, A: np.ndarray, n_bins: int, closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres (n_bins,) and mean activation per bin (n_features, n_bins)."""
    span = 2 * np.pi if closed else 1.0
    idx = np.clip((u / span * n_bins).astype(np.int64), 0, n_bins - 1)  # (n,)
    means, _ = class_means(A, idx, n_bins)  # (n_bins, n_features)
    return (np.arange(n_bins) + 0.5) * span / n_bins, means.T


def preferred_and_selectivity(u: np.ndarray, A: np.ndarray, closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n_features,) activation-weighted preferred coordinate and selectivity."""
    total = A.sum(0)  # (n_features,)
    with np.errstate(invalid="ignore", divide="ignore"):
        if closed:
            resultant = (A * np.exp(1j * u)[:, None]).sum(0) / total  # (n_features,)
            return np.mod(np.angle(resultant), 2 * np.pi), np.abs(resultant)
        mean = (A * u[:, None]).sum(0) / total
        std = np.sqrt((A * (u[:, None] - mean) ** 2).sum(0) / total)
        return mean, np.clip(1 - std / np.sqrt(1 / 12), 0, 1)


def _neighbour_overlap(tuning: np.ndarray, preferred: np.ndarray, closed: bool) -> float:
    T = np.nan_to_num(tuning).clip(min=0)  # (n_live, n_bins)
    if len(T) < 2:
        return float("nan")
    H = T / np.where(T.sum(1, keepdims=True) > 0, T.sum(1, keepdims=True), 1.0)
    order = np.argsort(preferred)
    pairs = list(zip(order[:-1], order[1:])) + ([(order[-1], order[0])] if closed and len(order) > 2 else [])
    return float(np.mean([np.minimum(H[i], H[j]).sum() for i, j in pairs]))


def decoder_closeness_r(W: np.ndarray, preferred: np.ndarray, closed: bool) -> float:
    """Pearson r over feature pairs of decoder cosine vs closeness of preferred coordinates."""
    if len(W) < 3:
        return float("nan")
    Wn = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    iu = np.triu_indices(len(W), 1)
    cos = (Wn @ Wn.T)[iu]
    diff = preferred[:, None] - preferred[None, :]
    close = (np.cos(diff) if closed else -np.abs(diff))[iu]
    if cos.std() == 0 or close.std() == 0:
        return float("nan")
    return float(np.corrcoef(cos, close)[0, 1])


def value_cover(value_tuning: np.ndarray) -> tuple[list[int], list[int]]:
    """Values covered at half peak, and values that are some feature's peak, from (n_live, p) tuning."""
    T = np.nan_to_num(value_tuning)  # a value without rows counts as 0
    if len(T) == 0:
        return [], []
    half = T >= 0.5 * T.max(1, keepdims=True)  # (n_live, p)
    return [int(v) for v in np.flatnonzero(half.any(0))], sorted({int(v) for v in T.argmax(1)})


def compute_tiling(coordinate: np.ndarray, activations: object, W_dec: np.ndarray | None = None, *,
                   closed: bool = True, n_bins: int = 36, features: list[int] | None = None,
                   values: np.ndarray | None = None, period: int | None = None) -> TilingResult:
    """Tuning statistics of the activations (n_rows, n_features) over ``coordinate`` (n_rows,): angles
    (``closed``) or positions in [0, 1]. Inputs must be finite; ``W_dec`` (n_features, d_model);
    ``values`` (n_rows,) integers in [0, ``period``). A constant coordinate leaves selectivity undefined:
    it is NaN (with a warning), as is ``fraction_selective``."""
    check_number("n_bins", n_bins, lo=2, integer=True)
    if not isinstance(closed, (bool, np.bool_)):  # saved with the result: it must load back
        raise TypeError(f"closed must be a bool (True: angles, False: positions in [0, 1]); got {closed!r}.")
    closed = bool(closed)
    u = _coordinate(coordinate, closed)
    A = _dense(activations, len(u))
    ids = list(range(A.shape[1])) if features is None else as_integers("features", features).ravel().tolist()
    if len(ids) != A.shape[1]:
        raise ValueError(f"features must name {A.shape[1]} features (one per column); got {len(ids)}.")
    W = None if W_dec is None else _decoders(W_dec, A.shape[1])
    v, p = (None, 0) if values is None else _values(values, period, len(u))
    centres, tuning = bin_means(u, A, n_bins, closed)
    live = A.max(0) > 0 if len(A) else np.zeros(A.shape[1], bool)
    preferred, selectivity = preferred_and_selectivity(u, A, closed)
    if len(u) and np.ptp(u) == 0:
        warnings.warn(f"coordinate is constant ({u[0]:.6g} on every row): selectivity is undefined and reported "
                      "as NaN.", stacklevel=2)
        selectivity = np.full(A.shape[1], np.nan)
    peak = np.nanmax(np.where(np.isnan(tuning), -np.inf, tuning), axis=1)
    above = np.nan_to_num(tuning) >= 0.5 * peak[:, None]  # (n_features, n_bins)
    occupied = ~np.isnan(tuning).all(0) if len(tuning) else np.zeros(n_bins, bool)  # bins holding a row
    width = above.sum(1) * (2 * np.pi if closed else 1.0) / n_bins
    lv = np.flatnonzero(live)
    value_tuning = covered = peaks = None
    if v is not None:
        value_tuning = class_means(A, v, p)[0].T  # (n_features, p)
        covered, peaks = value_cover(value_tuning[lv])
    return TilingResult(
        features=ids, closed=closed, bin_centres=centres, tuning=tuning, live=live,
        preferred=np.where(live, preferred, np.nan), selectivity=np.where(live, selectivity, np.nan),
        width=width, peak=peak, coverage=float(above[lv][:, occupied].any(0).mean()) if len(lv) else 0.0,
        neighbour_overlap=_neighbour_overlap(tuning[lv], preferred[lv], closed),
        fraction_selective=_fraction_selective(selectivity[lv]),
        decoder_cosine_r=None if W is None else decoder_closeness_r(W[lv], preferred[lv], closed),
        value_tuning=value_tuning, covered_values=covered, peak_values=peaks)


def _fraction_selective(selectivity: np.ndarray) -> float:
    """Share of ``selectivity`` (n_live,) at least :data:`SELECTIVE`; 0 without live features, NaN when
    selectivity is undefined (a constant coordinate)."""
    if selectivity.size == 0:
        return 0.0
    if np.isnan(selectivity).all():
        return float("nan")
    return float((selectivity >= SELECTIVE).mean())

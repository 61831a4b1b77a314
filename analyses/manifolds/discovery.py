"""Unsupervised manifold discovery for feature families (research note §1.2, §7b).

Input: one layer's feature activations ``A`` (n_tokens, n_features), a ``scipy.sparse`` matrix (as
``ActivationStore.layer_matrix(layer)`` returns) or a dense array, the decoder rows ``W_dec``
(n_features, d_model) and the candidate families ``{name: [feature index, ...]}``. Per family:

1. **Point cloud.** On every token row where a member fires (> ``activation_threshold``), the
   reconstruction ``r_t = Σ_{i∈F} a_i(t) W_dec[i]`` (up to ``max_points`` rows, a seeded sample).
2. **PCA** of the r_t (centred) to ``min(n_components, |F|)`` components.
3. **Irreducibility** of each consecutive PC pair (M_ε, S; :mod:`analyses.manifolds.irreducibility`)
   on up to ``metric_points`` of the points; score = mean over pairs of ``(1 - M) · S``.
4. **Loop test** on the direction cloud ``r_t / |r_t|`` (features = direction x intensity): for
   each consecutive pair of its PCs, the circular coordinate ``atan2`` with a quality number
   ``max(0, 1 - cv / cv_gauss) · (1 - gap / 2π)`` (cv: coefficient of variation of the radius,
   cv_gauss = sqrt(4/π - 1) that of an isotropic 2-D Gaussian; gap: the widest empty angular
   arc): 1 for a thin, evenly covered ring, 0 for a blob. Persistent H1 (ripser) where importable.
5. **Principal curves** with free positions in the direction cloud's PC space: a closed Fourier
   curve started from the loop coordinate, and an open one started from PC1, each alternating a
   least-squares fit of the coefficients with moving every point to its nearest curve coordinate.

Families are ranked by the irreducibility score (highest first; families too small to score last).
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from analyses.base import Estimator, check_number
from analyses.manifolds import curves
from analyses.manifolds.irreducibility import IrreducibilityConfig, pair_scores
from analyses.results import register_result

logger = logging.getLogger(__name__)

CV_GAUSS = float(np.sqrt(4 / np.pi - 1))
"""Coefficient of variation of the radius of an isotropic 2-D Gaussian (Rayleigh)."""


@dataclass(frozen=True, kw_only=True)
class DiscoveryConfig:
    """Parameters of :class:`ManifoldDiscovery` (the one source of their defaults)."""

    max_points: int = 20_000
    """Most reconstruction points per family (a seeded sample of the firing rows)."""
    metric_points: int = 4000
    """Points used for the irreducibility indices (the §6.1 calibration used 4000)."""
    n_components: int = 5
    """Principal components scored (consecutive pairs 1-2 ... 4-5, as Engels)."""
    activation_threshold: float = 0.0
    """A member fires on a row when its activation exceeds this."""
    min_points: int = 20
    """Families firing on fewer rows are not scored."""
    min_variance_ratio: float = 1e-4
    """Principal components below this share of the cloud's variance are not scored (a degenerate
    component's rounding noise has arbitrary irreducibility)."""
    n_harmonics: int = 3
    """Harmonics of the principal curves."""
    curve_iterations: int = 15
    """Alternations of the principal-curve fits."""
    seed: int = 0
    """Seed of the row sample and of the irreducibility restarts."""
    irreducibility: IrreducibilityConfig = field(default_factory=IrreducibilityConfig)
    """Settings of M_ε and S (defaults: the note's §6.1 calibration)."""

    def __post_init__(self) -> None:
        for name in ("max_points", "metric_points", "min_points", "curve_iterations"):
            check_number(name, getattr(self, name), lo=1, integer=True)
        check_number("n_components", self.n_components, lo=2, integer=True)
        check_number("activation_threshold", self.activation_threshold)
        check_number("min_variance_ratio", self.min_variance_ratio, lo=0, hi=1)
        check_number("n_harmonics", self.n_harmonics, lo=1, hi=3, integer=True)
        check_number("seed", self.seed, lo=0, integer=True)
        if not isinstance(self.irreducibility, IrreducibilityConfig):
            raise TypeError(f"irreducibility must be an IrreducibilityConfig; got {self.irreducibility!r}.")


_DEFAULTS = DiscoveryConfig()


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class FamilyManifold:
    """What discovery found for one family."""

    SCHEMA_VERSION = 1

    name: str
    members: list[int]
    """feature indices (columns of A, rows of W_dec)"""
    n_points: int
    """reconstruction points used (rows where a member fires, capped)"""
    scored: bool
    """False when the family fired on fewer than min_points rows or has a single member"""
    explained_variance_ratio: np.ndarray
    """(n_pca,) of the reconstruction cloud (components >= min_variance_ratio)"""
    mixture: list[float]
    """M_ε per consecutive PC pair"""
    separability: list[float]
    """S (bits) per consecutive PC pair"""
    score: float
    """mean (1 - M) · S (NaN when not scored)"""
    loop_pair: int
    """i: the direction cloud's PC pair (i, i+1) with the best loop quality"""
    loop_quality: float
    """max(0, 1 - cv / cv_gauss) · (1 - gap / 2π) on that pair"""
    radius_cv: float
    largest_gap: float
    """widest empty arc of the circular coordinate (radians)"""
    h1_persistence: float | None
    """longest H1 bar / diameter of the direction cloud (ripser), None without ripser"""
    curve_r2_closed: float
    """R² of the closed principal curve in the direction cloud's PC space"""
    curve_r2_open: float
    """R² of the open principal curve"""
    mean: np.ndarray
    """(d_model,) mean reconstruction"""
    components: np.ndarray
    """(d_model, n_pca) principal axes of the reconstruction cloud"""
    direction_mean: np.ndarray
    """(d_model,) mean of the unit-normalised reconstructions"""
    direction_components: np.ndarray
    """(d_model, n_pca) their principal axes"""
    curve_coefficients: np.ndarray
    """(n_basis, n_pca) closed principal curve (circle basis, :mod:`analyses.manifolds.curves`)"""
    rows: np.ndarray
    """(n_points,) token rows of A the points came from"""
    coordinate: np.ndarray
    """(n_points,) each point's angle on the closed principal curve"""


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class DiscoveryResult:
    """Families ranked by irreducibility score (highest first)."""

    SCHEMA_VERSION = 1

    families: list[FamilyManifold]
    layer: int | None
    """residual / transcoder layer the activations came from, if known"""

    @property
    def ranking(self) -> list[str]:
        return [f.name for f in self.families]

    def family(self, name: str) -> FamilyManifold:
        for fam in self.families:
            if fam.name == name:
                return fam
        raise ValueError(f"family must be one of {self.ranking}; got {name!r}.")


# ----------------------------------------------------------------------------- pure steps
def reconstruction_cloud(A: sp.csr_matrix, W: np.ndarray, threshold: float, max_points: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows (n,) where a member fires and their reconstructions (n, d_model) ``Σ a_i W[i]``.

    A (n_tokens, n_members) csr; W (n_members, d_model). Activations <= threshold count as 0."""
    A = A.tocsr(copy=True)
    A.data = np.where(A.data > threshold, A.data, 0.0)
    A.eliminate_zeros()
    rows = np.flatnonzero(np.diff(A.indptr) > 0)  # (n_fired,)
    if len(rows) > max_points:
        rows = np.sort(rng.choice(rows, max_points, replace=False))
    R = np.asarray(A[rows] @ W, dtype=np.float64)  # (n, d_model)
    return rows, R


def pca(R: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (d,), axes (d, k) and variance ratios (k,) of the rows of ``R`` (n, d), via the covariance."""
    mean = R.mean(0)
    Rc = R - mean
    cov = Rc.T @ Rc / max(len(R) - 1, 1)  # (d, d)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:n_components]
    total = evals.clip(min=0).sum()
    ratios = evals[order].clip(min=0) / total if total > 0 else np.zeros(len(order))
    axes = evecs[:, order]  # (d, k)
    flip = np.sign(axes[np.abs(axes).argmax(0), np.arange(axes.shape[1])])
    return mean, axes * np.where(flip == 0, 1.0, flip), ratios


def loop_test(Z2: np.ndarray, n_bins: int = 72) -> tuple[float, float, float, np.ndarray]:
    """Quality, radius cv, widest empty arc (radians) and angles (n,) of a 2-D cloud ``Z2`` (n, 2)."""
    Zc = Z2 - Z2.mean(0)
    r = np.linalg.norm(Zc, axis=1)
    cv = float(r.std() / r.mean()) if r.mean() > 0 else float("inf")
    theta = np.mod(np.arctan2(Zc[:, 1], Zc[:, 0]), 2 * np.pi)  # (n,)
    occupied = np.bincount((theta / (2 * np.pi) * n_bins).astype(int) % n_bins, minlength=n_bins) > 0
    gap = _longest_circular_run(~occupied) * 2 * np.pi / n_bins
    quality = max(0.0, 1.0 - cv / CV_GAUSS) * (1.0 - gap / (2 * np.pi))
    return float(quality), cv, float(gap), theta


def _longest_circular_run(mask: np.ndarray) -> int:
    if mask.all():
        return len(mask)
    doubled = np.r_[mask, mask].astype(int)
    best = run = 0
    for x in doubled:
        run = run + 1 if x else 0
        best = max(best, run)
    return min(best, len(mask))


def principal_curve(Z: np.ndarray, u0: np.ndarray, *, closed: bool, n_harmonics: int,
                    n_iter: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Fourier principal curve with free positions: coefficients, coordinates (n,) and R².

    Z (n, m); u0 (n,) starting coordinates (angles when closed, positions in [0, 1] when open)."""
    shape = "circle" if closed else "interval"
    u = u0.copy()
    coef = curves.lstsq_fit(curves.design_matrix(u, shape, 1, n_harmonics), Z)  # (n_basis, m)
    r2 = -np.inf
    for _ in range(n_iter):
        u = curves.nearest_coordinate(Z, coef, shape, 1, n_harmonics, grid_size=256)
        coef = curves.lstsq_fit(curves.design_matrix(u, shape, 1, n_harmonics), Z)
        new = curves.r2_score(Z, curves.design_matrix(u, shape, 1, n_harmonics) @ coef)
        if new - r2 < 1e-5:
            r2 = max(r2, new)
            break
        r2 = new
    return coef, u, float(r2)


def h1_persistence(Z: np.ndarray, rng: np.random.Generator, n_max: int = 400) -> float | None:
    """Longest H1 bar divided by the cloud's diameter (Vietoris-Rips via ripser), or None without ripser."""
    try:
        from ripser import ripser  # optional dependency
    except ImportError:
        return None
    pts = Z if len(Z) <= n_max else Z[rng.choice(len(Z), n_max, replace=False)]
    bars = ripser(pts, maxdim=1)["dgms"][1]
    if len(bars) == 0:
        return 0.0
    finite = bars[np.isfinite(bars[:, 1])]
    diameter = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    return float((finite[:, 1] - finite[:, 0]).max() / diameter) if len(finite) and diameter > 0 else 0.0


def _unscored(name: str, members: list[int], rows: np.ndarray, d: int, n_basis: int) -> FamilyManifold:
    nan = float("nan")
    return FamilyManifold(
        name=name, members=members, n_points=len(rows), scored=False, explained_variance_ratio=np.zeros(0),
        mixture=[], separability=[], score=nan, loop_pair=0, loop_quality=nan, radius_cv=nan, largest_gap=nan,
        h1_persistence=None, curve_r2_closed=nan, curve_r2_open=nan, mean=np.zeros(d), components=np.zeros((d, 0)),
        direction_mean=np.zeros(d), direction_components=np.zeros((d, 0)), curve_coefficients=np.zeros((n_basis, 0)),
        rows=rows.astype(np.int64), coordinate=np.zeros(len(rows)))


def _best_loop(Zn: np.ndarray) -> tuple[int, tuple[float, float, float, np.ndarray]]:
    """The consecutive PC pair of the direction cloud with the best loop quality."""
    tests = [loop_test(Zn[:, i:i + 2]) for i in range(Zn.shape[1] - 1)]
    best = int(np.argmax([t[0] for t in tests]))
    return best, tests[best]


def family_manifold(name: str, A: sp.csr_matrix, W: np.ndarray, members: list[int], cfg: DiscoveryConfig,
                    rng: np.random.Generator) -> FamilyManifold:
    """Discovery for one family: ``A`` (n_tokens, n_members) and ``W`` (n_members, d_model)."""
    rows, R = reconstruction_cloud(A, W, cfg.activation_threshold, cfg.max_points, rng)
    k = min(cfg.n_components, len(members), W.shape[1])
    n_basis = 1 + 2 * cfg.n_harmonics
    if len(rows) < cfg.min_points or k < 2:
        return _unscored(name, members, rows, W.shape[1], n_basis)
    mean, axes, ratios = pca(R, k)
    k = int((ratios >= cfg.min_variance_ratio).sum())  # drop (numerically) empty components
    if k < 2:
        return _unscored(name, members, rows, W.shape[1], n_basis)
    axes, ratios = axes[:, :k], ratios[:k]
    Z = (R - mean) @ axes  # (n, k)
    sub = rng.choice(len(Z), cfg.metric_points, replace=False) if len(Z) > cfg.metric_points else slice(None)
    scores = pair_scores(Z[sub], cfg.irreducibility)
    norms = np.linalg.norm(R, axis=1, keepdims=True)
    Rn = R / np.where(norms > 0, norms, 1.0)  # (n, d) directions
    n_mean, n_axes, _ = pca(Rn, k)
    Zn = (Rn - n_mean) @ n_axes  # (n, k)
    pair, (quality, cv, gap, theta) = _best_loop(Zn)
    coef, coord, r2_closed = principal_curve(Zn, theta, closed=True, n_harmonics=cfg.n_harmonics,
                                             n_iter=cfg.curve_iterations)
    pos0 = np.argsort(np.argsort(Zn[:, 0])) / max(len(Zn) - 1, 1)  # PC1 rank in [0, 1]
    _, _, r2_open = principal_curve(Zn, pos0, closed=False, n_harmonics=cfg.n_harmonics,
                                    n_iter=cfg.curve_iterations)
    return FamilyManifold(
        name=name, members=members, n_points=len(rows), scored=True, explained_variance_ratio=ratios,
        mixture=scores.mixture, separability=scores.separability, score=scores.score, loop_pair=pair,
        loop_quality=quality, radius_cv=cv, largest_gap=gap, h1_persistence=h1_persistence(Zn, rng),
        curve_r2_closed=r2_closed, curve_r2_open=r2_open, mean=mean, components=axes, direction_mean=n_mean,
        direction_components=n_axes, curve_coefficients=coef, rows=rows.astype(np.int64), coordinate=coord)


def _check_inputs(A: Any, W_dec: Any, families: Any) -> tuple[sp.csr_matrix, np.ndarray, dict[str, list[int]]]:
    W = np.asarray(W_dec, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W_dec must have shape (n_features, d_model); got {W.shape}.")
    A_csr = sp.csr_matrix(A) if not sp.issparse(A) else A.tocsr()
    if A_csr.ndim != 2 or A_csr.shape[1] != W.shape[0]:
        raise ValueError(f"A must have shape (n_tokens, {W.shape[0]}) (one column per row of W_dec); got "
                         f"{A_csr.shape}.")
    if not isinstance(families, Mapping) or not families:
        raise TypeError(f"families must be a non-empty mapping name -> feature indices; got {type(families).__name__}.")
    out: dict[str, list[int]] = {}
    for name, idx in families.items():
        members = [int(i) for i in np.asarray(idx, dtype=np.int64).ravel()]
        if not members or min(members) < 0 or max(members) >= W.shape[0]:
            raise ValueError(f"family {name!r} must list feature indices in [0, {W.shape[0]}); got {members[:5]}.")
        out[str(name)] = sorted(set(members))
    return A_csr, W, out


class ManifoldDiscovery(Estimator):
    """Rank feature families by how irreducibly multi-dimensional their reconstructions are.

    Parameters: see :class:`DiscoveryConfig`. Fitted: ``result_`` (:class:`DiscoveryResult`),
    ``ranking_`` (family names, best first), ``scores_`` ({name: score}).
    """

    def __init__(self, *, max_points: int = _DEFAULTS.max_points, metric_points: int = _DEFAULTS.metric_points,
                 n_components: int = _DEFAULTS.n_components,
                 activation_threshold: float = _DEFAULTS.activation_threshold, min_points: int = _DEFAULTS.min_points,
                 min_variance_ratio: float = _DEFAULTS.min_variance_ratio,
                 n_harmonics: int = _DEFAULTS.n_harmonics, curve_iterations: int = _DEFAULTS.curve_iterations,
                 seed: int = _DEFAULTS.seed, irreducibility: IrreducibilityConfig = _DEFAULTS.irreducibility) -> None:
        self.max_points = max_points
        self.metric_points = metric_points
        self.n_components = n_components
        self.activation_threshold = activation_threshold
        self.min_points = min_points
        self.min_variance_ratio = min_variance_ratio
        self.n_harmonics = n_harmonics
        self.curve_iterations = curve_iterations
        self.seed = seed
        self.irreducibility = irreducibility

    def _validate_params(self) -> DiscoveryConfig:  # type: ignore[override]
        return DiscoveryConfig(**self.get_params())

    def fit(self, A: object, W_dec: object, families: Mapping[str, Sequence[int]], *,
            layer: int | None = None, verbose: bool = False) -> "ManifoldDiscovery":
        """A (n_tokens, n_features) sparse or dense; W_dec (n_features, d_model); families name -> columns."""
        cfg = self._validate_params()
        A_csr, W, fams = _check_inputs(A, W_dec, families)
        from tqdm.auto import tqdm

        found: list[Any] = []
        for name, members in tqdm(fams.items(), desc="manifold discovery", total=len(fams), disable=not verbose):
            rng = np.random.default_rng([cfg.seed, len(found)])
            found.append(family_manifold(name, A_csr[:, members], W[members], members, cfg, rng))
            logger.info("family %s: %d points, score %.3f", name, found[-1].n_points, found[-1].score)
        found.sort(key=lambda f: (not f.scored, -f.score if f.scored else 0.0))
        self.result_ = DiscoveryResult(families=found, layer=layer)
        self.ranking_ = self.result_.ranking
        self.scores_ = {f.name: f.score for f in found}
        return self

"""Unsupervised manifold discovery for feature families (research note §1.2, §7b).

Input: one layer's feature activations ``A`` (n_tokens, n_features), a ``scipy.sparse`` matrix (as
``ActivationStore.layer_matrix(layer)`` returns) or a dense array, the decoder rows ``W_dec``
(n_features, d_model) and the candidate families ``{name: [feature index, ...]}``. Per family:

1. **Point cloud.** On every token row where a member fires (> ``activation_threshold``), the
   reconstruction ``r_t = Σ_{i∈F} a_i(t) W_dec[i]`` (up to ``max_points`` rows, a seeded sample).
2. **Direction cloud.** The rows where the family really fires -- ``|r_t|`` at least
   ``strong_fraction`` of the 99th-percentile norm -- unit-normalised, ``r_t / |r_t|`` (features
   = direction x intensity; weak incidental firing is left out), and its PCA to
   ``min(n_components, |F|)`` components.
3. **Irreducibility** (Engels' M_ε and S, :mod:`analyses.manifolds.irreducibility`) of each
   consecutive PC pair of the direction cloud on up to ``metric_points`` points; Engels' score is
   their mean ``(1 - M)·S``. ``raw_cloud_metrics`` adds Engels' original score on the raw cloud.
4. **Loop test** on each consecutive pair: the circular coordinate ``atan2`` with a quality
   ``max(0, 1 - cv / cv_gauss) · (1 - gap / 2π)`` (cv: coefficient of variation of the radius,
   cv_gauss = sqrt(4/π - 1) that of an isotropic 2-D Gaussian; gap: the widest empty angular arc):
   1 for a thin, evenly covered ring, 0 for a blob. **Persistent H1** (ripser, the ``topology``
   extra) of the direction cloud in its PC space: the longest H1 bar over the bounding-box diagonal,
   on a seeded sample of ``persistence_points`` rows.
5. **Principal curves** with free positions in the direction cloud's PC space: a closed Fourier
   curve started from the loop coordinate, and an open one started from PC1.

**Ranking** (``score``, the *ring score*; ties broken by ``loop_score``): on the pair with the
best loop, ``loop quality · min(1, (1 - M)·S / ring_reference) · min(1, H1 / persistence_reference)``
-- irreducibility on the loop's own plane and the persistence of the loop in the whole PC space,
each counted fully once it reaches that of the §6.1 noisy circle, times the loop evidence of the
plane. Without ripser (or with ``persistence="none"``) the last factor is left out (``loop_score``,
recorded either way). Engels' mean score alone ranks clustered categorical families (simplex
corners: high S) above rings and drowns a ring whose features also fire weakly elsewhere; a
projection can make a simplex, an open arc or a bent line look like a loop in one plane, which
persistent H1 in the full PC space does not. The rule and ``strong_fraction`` were chosen on planted families
(:mod:`workbench.bench.discovery_rule`), never on the labels discovery is scored with. Families too
small to score rank last.
"""

import functools
import logging
import reprlib
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from analyses.base import Estimator, as_indices, atomic_fit, check_number, check_real
from analyses.manifolds import curves
from analyses.manifolds.configs import DiscoveryConfig, IrreducibilityConfig
from analyses.manifolds.irreducibility import pair_scores
from analyses.results import check_shapes, register_result

logger = logging.getLogger(__name__)

CV_GAUSS = float(np.sqrt(4 / np.pi - 1))
"""Coefficient of variation of the radius of an isotropic 2-D Gaussian (Rayleigh)."""



_DEFAULTS = DiscoveryConfig()


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class FamilyManifold:
    """What discovery found for one family."""

    SCHEMA_VERSION = 3

    name: str
    members: list[int]
    """feature indices (columns of A, rows of W_dec)"""
    n_points: int
    """reconstruction points (rows where a member fires, capped)"""
    n_strong: int
    """rows of the direction cloud (the family fires strongly)"""
    scored: bool
    """False when the family fired on fewer than min_points rows or has a single member"""
    score: float
    """the ring score used for ranking (NaN when not scored)"""
    loop_score: float
    """loop quality x irreducibility factor, without persistence (the score when ripser is absent)"""
    explained_variance_ratio: np.ndarray
    """(n_pca,) of the direction cloud (components >= min_variance_ratio)"""
    mixture: list[float]
    """M_ε per consecutive PC pair of the direction cloud"""
    separability: list[float]
    """S (bits) per consecutive PC pair of the direction cloud"""
    engels_score: float
    """mean (1 - M)·S over the direction cloud's pairs"""
    raw_score: float
    """Engels' original score, mean (1 - M)·S over the raw cloud's pairs (NaN unless raw_cloud_metrics)"""
    loop_pair: int
    """i: the direction cloud's PC pair (i, i+1) with the best loop quality"""
    loop_quality: float
    """max(0, 1 - cv / cv_gauss) · (1 - gap / 2π) on that pair"""
    loop_irreducibility: float
    """(1 - M)·S on that pair"""
    radius_cv: float
    largest_gap: float
    """widest empty arc of the circular coordinate (radians)"""
    h1_persistence: float | None
    """longest H1 bar / bounding-box diagonal of the direction cloud (ripser); None when not computed"""
    curve_r2_closed: float
    """R² of the closed principal curve in the direction cloud's PC space"""
    curve_r2_open: float
    """R² of the open principal curve"""
    direction_mean: np.ndarray
    """(d_model,) mean of the unit-normalised strong reconstructions"""
    direction_components: np.ndarray
    """(d_model, n_pca) their principal axes"""
    curve_coefficients: np.ndarray
    """(n_basis, n_pca) closed principal curve (circle basis, :mod:`analyses.manifolds.curves`)"""
    rows: np.ndarray
    """(n_strong,) token rows of A the direction cloud came from"""
    coordinate: np.ndarray
    """(n_strong,) each of those rows' angle on the closed principal curve"""
    unscored_reason: str = ""
    """why the family was not scored ("" when it was): too few strong rows, one member, or a cloud
    with fewer than two principal components above ``min_variance_ratio``"""

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file): arrays whose dimensions disagree."""
        check_shapes(self, {"direction_mean": (None,), "explained_variance_ratio": (None,)})
        d, k = len(self.direction_mean), len(self.explained_variance_ratio)
        check_shapes(self, {"direction_components": (d, k), "curve_coefficients": (None, k),
                            "rows": (self.n_strong,), "coordinate": (self.n_strong,)})

    def summary(self) -> dict[str, object]:
        """The JSON-friendly numbers."""
        return {"score": self.score, "loop_score": self.loop_score, "n_members": len(self.members),
                "n_points": self.n_points, "n_strong": self.n_strong, "scored": self.scored,
                "unscored_reason": self.unscored_reason,
                "loop_quality": self.loop_quality,
                "loop_irreducibility": self.loop_irreducibility, "loop_pair": self.loop_pair,
                "radius_cv": self.radius_cv, "largest_gap": self.largest_gap, "engels_score": self.engels_score,
                "raw_score": self.raw_score, "mixture": self.mixture, "separability": self.separability,
                "h1_persistence": self.h1_persistence, "curve_r2_closed": self.curve_r2_closed,
                "curve_r2_open": self.curve_r2_open,
                "explained_variance_ratio": [float(x) for x in self.explained_variance_ratio]}


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class DiscoveryResult:
    """Families ranked by ring score (highest first)."""

    SCHEMA_VERSION = 4

    families: list[FamilyManifold]
    feature_layer: int | None
    """transcoder layer of the families' features (not a residual-stream index), if known"""
    persistence: bool = False
    """whether the ring scores include persistent H1 (ripser was used)"""

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


def ripser_available() -> bool:
    try:
        import ripser  # noqa: F401  (optional dependency: the topology extra)
    except ImportError:
        return False
    return True


def use_persistence(mode: str) -> bool:
    """Whether the ranking includes persistent H1 under ``DiscoveryConfig.persistence``."""
    if mode == "none":
        return False
    if ripser_available():
        return True
    if mode == "ripser":
        raise ImportError("persistence='ripser' needs ripser; install it with `pip install ripser` (the "
                          "topology extra) or use persistence='auto'.")
    _warn_no_ripser()
    return False


@functools.cache
def _warn_no_ripser() -> None:
    """Once per process (discovery runs once per layer)."""
    logger.warning("ripser is not installed: the ring score leaves persistent H1 out (`pip install "
                   "ripser`, the topology extra, for the full ranking).")


def h1_persistence(Z: np.ndarray, rng: np.random.Generator, n_max: int = 400) -> float | None:
    """Longest H1 bar divided by the bounding-box diagonal of ``Z`` (n, k) (Vietoris-Rips via ripser,
    on a seeded sample of at most ``n_max`` rows), or None without ripser."""
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


def _unscored(name: str, members: list[int], n_points: int, strong_rows: np.ndarray, d: int, n_basis: int,
              reason: str) -> FamilyManifold:
    nan = float("nan")
    return FamilyManifold(
        name=name, members=members, n_points=n_points, n_strong=len(strong_rows), scored=False, unscored_reason=reason,
        score=nan, loop_score=nan,
        explained_variance_ratio=np.zeros(0), mixture=[], separability=[], engels_score=nan, raw_score=nan,
        loop_pair=0, loop_quality=nan, loop_irreducibility=nan, radius_cv=nan, largest_gap=nan, h1_persistence=None,
        curve_r2_closed=nan, curve_r2_open=nan, direction_mean=np.zeros(d), direction_components=np.zeros((d, 0)),
        curve_coefficients=np.zeros((n_basis, 0)), rows=np.asarray(strong_rows, np.int64),
        coordinate=np.full(len(strong_rows), nan))  # no curve: no coordinate


def _best_loop(Zn: np.ndarray) -> tuple[int, tuple[float, float, float, np.ndarray]]:
    """The consecutive PC pair of the direction cloud with the best loop quality."""
    tests = [loop_test(Zn[:, i:i + 2]) for i in range(Zn.shape[1] - 1)]
    best = int(np.argmax([t[0] for t in tests]))
    return best, tests[best]


def strong_directions(R: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n_strong,) of rows of ``R`` (n, d) with norm >= fraction x the 99th-percentile norm,
    and their unit directions (n_strong, d)."""
    norms = np.linalg.norm(R, axis=1)  # (n,)
    keep = np.flatnonzero((norms >= fraction * np.quantile(norms, 0.99)) & (norms > 0))
    return keep, R[keep] / norms[keep, None]


def ring_score(loop_quality: float, irreducibility: float, reference: float, persistence: float | None = None,
               persistence_reference: float = 1.0) -> float:
    """loop quality x min(1, (1 - M)·S / reference) [x min(1, H1 / persistence_reference)]: the ranking
    score (the last factor only when persistence is given)."""
    score = loop_quality * min(1.0, max(irreducibility, 0.0) / reference)
    if persistence is not None:
        score *= min(1.0, max(persistence, 0.0) / persistence_reference)
    return float(score)


def _metric_sample(n: int, cfg: DiscoveryConfig, rng: np.random.Generator) -> np.ndarray | slice:
    return np.sort(rng.choice(n, cfg.metric_points, replace=False)) if n > cfg.metric_points else slice(None)


def _raw_score(R: np.ndarray, k: int, cfg: DiscoveryConfig, rng: np.random.Generator) -> float:
    """Engels' original score: mean (1 - M)·S over the raw cloud's consecutive PC pairs."""
    mean, axes, ratios = pca(R, k)
    k = int((ratios >= cfg.min_variance_ratio).sum())
    if k < 2:
        return float("nan")
    Z = (R - mean) @ axes[:, :k]  # (n, k)
    return pair_scores(Z[_metric_sample(len(Z), cfg, rng)], cfg.irreducibility).score


def _curves(Zn: np.ndarray, theta: np.ndarray, cfg: DiscoveryConfig) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Closed (from the loop angle) and open (from PC1 rank) principal curves of the direction cloud."""
    coef, coord, r2_closed = principal_curve(Zn, theta, closed=True, n_harmonics=cfg.n_harmonics,
                                             n_iter=cfg.curve_iterations)
    pos0 = np.argsort(np.argsort(Zn[:, 0])) / max(len(Zn) - 1, 1)  # PC1 rank in [0, 1]
    _, _, r2_open = principal_curve(Zn, pos0, closed=False, n_harmonics=cfg.n_harmonics,
                                    n_iter=cfg.curve_iterations)
    return coef, coord, r2_closed, r2_open


def family_manifold(name: str, A: sp.csr_matrix, W: np.ndarray, members: list[int], cfg: DiscoveryConfig,
                    rng: np.random.Generator, *, persistence: bool = False) -> FamilyManifold:
    """Discovery for one family: ``A`` (n_tokens, n_members) and ``W`` (n_members, d_model); with
    ``persistence``, persistent H1 enters the score (ripser must be importable)."""
    rows, R = reconstruction_cloud(A, W, cfg.activation_threshold, cfg.max_points, rng)
    k = min(cfg.n_components, len(members), W.shape[1])
    n_basis, d = 1 + 2 * cfg.n_harmonics, W.shape[1]
    strong, Rn = strong_directions(R, cfg.strong_fraction) if len(rows) else (np.zeros(0, np.int64), R)
    if k < 2:
        why = "it has one member" if len(members) < 2 else f"its decoders have {W.shape[1]} dimension(s)"
        return _unscored(name, members, len(rows), rows[strong], d, n_basis, f"{why}: a loop needs two")
    if len(strong) < cfg.min_points:
        return _unscored(name, members, len(rows), rows[strong], d, n_basis,
                         f"it fired strongly on {len(strong)} rows (of {len(rows)} firing), fewer than min_points "
                         f"{cfg.min_points}")
    n_mean, n_axes, ratios = pca(Rn, k)
    k = int((ratios >= cfg.min_variance_ratio).sum())  # drop (numerically) empty components
    if k < 2:
        return _unscored(name, members, len(rows), rows[strong], d, n_basis,
                         f"its cloud has {k} principal component(s) above min_variance_ratio {cfg.min_variance_ratio}")
    n_axes, ratios = n_axes[:, :k], ratios[:k]
    Zn = (Rn - n_mean) @ n_axes  # (n_strong, k)
    scores = pair_scores(Zn[_metric_sample(len(Zn), cfg, rng)], cfg.irreducibility)
    pair, (quality, cv, gap, theta) = _best_loop(Zn)
    irr = (1 - scores.mixture[pair]) * scores.separability[pair]
    coef, coord, r2_closed, r2_open = _curves(Zn, theta, cfg)
    raw = _raw_score(R, min(cfg.n_components, len(members), d), cfg, rng) if cfg.raw_cloud_metrics else float("nan")
    h1 = h1_persistence(Zn, rng, cfg.persistence_points) if persistence else None
    return FamilyManifold(
        name=name, members=members, n_points=len(rows), n_strong=len(strong), scored=True,
        score=ring_score(quality, irr, cfg.ring_reference, h1, cfg.persistence_reference),
        loop_score=ring_score(quality, irr, cfg.ring_reference), explained_variance_ratio=ratios,
        mixture=scores.mixture, separability=scores.separability, engels_score=scores.score, raw_score=raw,
        loop_pair=pair, loop_quality=quality, loop_irreducibility=float(irr), radius_cv=cv, largest_gap=gap,
        h1_persistence=h1, curve_r2_closed=r2_closed, curve_r2_open=r2_open,
        direction_mean=n_mean, direction_components=n_axes, curve_coefficients=coef,
        rows=rows[strong].astype(np.int64), coordinate=coord)


def _activations(A: Any) -> sp.csr_matrix:
    """``A`` as CSR, refusing non-real dtypes and NaN or inf (one would turn a family's score NaN)."""
    hint = "Drop or zero the rows with missing activations."
    if not sp.issparse(A):
        dense = np.asarray(A)
        if dense.ndim != 2:  # a 1-D array would silently become one row
            raise ValueError(f"A must have shape (n_tokens, n_features); got {dense.shape}.")
        check_real("A", dense, hint=hint)
        return sp.csr_matrix(dense)
    A_csr = A.tocsr()
    if A_csr.dtype.kind != "f":
        check_real("A", A_csr.data)  # integers and bools are finite: only the dtype can be wrong
        return A_csr
    bad = np.flatnonzero(~np.isfinite(A_csr.data))  # (n_bad,) positions in the stored entries
    if bad.size:
        row = int(np.searchsorted(A_csr.indptr, bad[0], side="right")) - 1
        raise ValueError(f"A must be finite; got {float(A_csr.data[bad[0]])!r} at index "
                         f"({row}, {int(A_csr.indices[bad[0]])}). {hint}")
    return A_csr


def _check_inputs(A: Any, W_dec: Any, families: Any) -> tuple[sp.csr_matrix, np.ndarray, dict[str, list[int]]]:
    W_arr = np.asarray(W_dec)
    if W_arr.ndim != 2:
        raise ValueError(f"W_dec must have shape (n_features, d_model); got {W_arr.shape}.")
    check_real("W_dec", W_arr, hint="Check the decoder weights: a NaN row would leave its family unscored.")
    W = W_arr.astype(np.float64)
    A_csr = _activations(A)
    if A_csr.ndim != 2 or A_csr.shape[1] != W.shape[0]:
        raise ValueError(f"A must have shape (n_tokens, {W.shape[0]}) (one column per row of W_dec); got "
                         f"{A_csr.shape}.")
    if not isinstance(families, Mapping) or not families:  # TypeError: not a mapping; ValueError: an empty one
        raise (ValueError if isinstance(families, Mapping) else TypeError)(
            f"families must be a non-empty mapping name -> feature indices; got {reprlib.repr(families)}.")
    text = next((t for t, c in Counter(str(name) for name in families).items() if c > 1), None)
    if text is not None:
        raise ValueError(f"family names must be distinct as text; got {[n for n in families if str(n) == text]!r} "
                         f"(all {text!r}). Rename one family.")
    out: dict[str, list[int]] = {}
    for name, idx in families.items():
        members = as_indices(f"family {name!r}", idx, W.shape[0], what="list feature indices").tolist()
        if not members:
            raise ValueError(f"family {name!r} must list feature indices in [0, {W.shape[0]}); got none.")
        out[str(name)] = sorted(set(members))
    return A_csr, W, out


class ManifoldDiscovery(Estimator):
    """Rank feature families by ring evidence: loop quality x irreducibility of the loop's plane x persistent H1.

    Parameters: see :class:`DiscoveryConfig`. Fitted: ``result_`` (:class:`DiscoveryResult`),
    ``ranking_`` (family names, best first), ``scores_`` ({name: score}).
    """

    def __init__(self, *, max_points: int = _DEFAULTS.max_points, metric_points: int = _DEFAULTS.metric_points,
                 n_components: int = _DEFAULTS.n_components,
                 activation_threshold: float = _DEFAULTS.activation_threshold, min_points: int = _DEFAULTS.min_points,
                 min_variance_ratio: float = _DEFAULTS.min_variance_ratio,
                 strong_fraction: float = _DEFAULTS.strong_fraction, ring_reference: float = _DEFAULTS.ring_reference,
                 persistence: str = _DEFAULTS.persistence, persistence_points: int = _DEFAULTS.persistence_points,
                 persistence_reference: float = _DEFAULTS.persistence_reference,
                 raw_cloud_metrics: bool = _DEFAULTS.raw_cloud_metrics, n_harmonics: int = _DEFAULTS.n_harmonics,
                 curve_iterations: int = _DEFAULTS.curve_iterations,
                 seed: int = _DEFAULTS.seed, irreducibility: IrreducibilityConfig = _DEFAULTS.irreducibility) -> None:
        self.max_points = max_points
        self.metric_points = metric_points
        self.n_components = n_components
        self.activation_threshold = activation_threshold
        self.min_points = min_points
        self.min_variance_ratio = min_variance_ratio
        self.strong_fraction = strong_fraction
        self.ring_reference = ring_reference
        self.persistence = persistence
        self.persistence_points = persistence_points
        self.persistence_reference = persistence_reference
        self.raw_cloud_metrics = raw_cloud_metrics
        self.n_harmonics = n_harmonics
        self.curve_iterations = curve_iterations
        self.seed = seed
        self.irreducibility = irreducibility

    def _validate_params(self) -> None:
        self._config()

    def _config(self) -> DiscoveryConfig:
        """The parameters as a validated config (raises like ``_validate_params``)."""
        return DiscoveryConfig(**self.get_params(deep=False))

    @atomic_fit
    def fit(self, A: object, W_dec: object, families: Mapping[str, Sequence[int]], *,
            feature_layer: int | None = None, verbose: bool = False) -> "ManifoldDiscovery":
        """A (n_tokens, n_features) sparse or dense; W_dec (n_features, d_model); families name -> columns
        (integer indices; names distinct as text: ``1`` and ``"1"`` clash)."""
        cfg = self._config()
        if feature_layer is not None:  # saved with the result: it must load back
            check_number("feature_layer", feature_layer, lo=0, integer=True)
            feature_layer = int(feature_layer)
        A_csr, W, fams = _check_inputs(A, W_dec, families)
        persistence = use_persistence(cfg.persistence)
        from tqdm.auto import tqdm

        found: list[Any] = []
        for name, members in tqdm(fams.items(), desc="manifold discovery", total=len(fams), disable=not verbose):
            rng = np.random.default_rng([cfg.seed, zlib.crc32(str(name).encode())])  # per family, whatever its place
            found.append(family_manifold(name, A_csr[:, members], W[members], members, cfg, rng,
                                         persistence=persistence))
            logger.debug("family %s: %d points, score %.3f", name, found[-1].n_points, found[-1].score)
        # ties in the ring score (e.g. no H1 bar at all) fall back to the loop evidence without persistence
        found.sort(key=lambda f: (not f.scored, -f.score if f.scored else 0.0, -f.loop_score if f.scored else 0.0))
        self.result_ = DiscoveryResult(families=found, feature_layer=feature_layer, persistence=persistence)
        self.ranking_ = self.result_.ranking
        self.scores_ = {f.name: f.score for f in found}
        return self

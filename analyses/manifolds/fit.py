"""Supervised manifold fit: class means of a known variable, a PCA subspace, a Fourier curve.

Input: points ``X`` (n_samples, d_model) -- residual-stream vectors, transcoder reconstructions or
decoder directions -- with an integer value ``y`` in ``[0, period)`` per point.

1. Class means ``μ_v`` (period, d_model); centre ``c`` = their plain mean.
2. Centred PCA of the class means: ``m`` components reach ``variance_threshold`` of their variance
   (at least 2 for closed curves and helices, at most ``max_components`` and the rank).
3. The subspace coordinates ``Z = (μ - c) U`` (period, m) are fitted by a Fourier curve
   (:mod:`analyses.manifolds.curves`). The frequency ``k`` is searched with the fundamental alone
   (R² per k is reported: for evenly spaced values it is the share of the subspace energy at k);
   the best k then gets ``n_harmonics`` harmonics, so the k = 2 component of months and hues is
   modelled. A circle with ``2H + 1 >= period`` harmonics interpolates the class means (R² = 1 by
   construction), so judge it on held-out points (:meth:`ManifoldFitResult.score`).

The sign of a circle (clockwise or counter-clockwise) does not change R²: the sine coefficients
absorb it. ``sign`` reports the orientation instead: +1 when values run counter-clockwise in the
PC1-PC2 plane.

The result keeps what causal substitution, steering and graph projection need: the subspace
``basis`` U (d_model, m), ``centre``, ``class_means``, the curve coefficients (``curve(u)`` and
``curve_derivative(u)`` in model space), the frequency, the value names and the layer / position
the points came from.
"""

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from analyses.base import Estimator, as_integers, atomic_fit, check_choice, check_number, check_real
from analyses.manifolds import curves
from analyses.manifolds.configs import SHAPES, ManifoldFitConfig
from analyses.results import register_result

logger = logging.getLogger(__name__)



_DEFAULTS = ManifoldFitConfig()


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class ManifoldFitResult:
    """A fitted curve in a subspace of model space. Coordinates ``u``: see :mod:`analyses.manifolds.curves`."""

    SCHEMA_VERSION = 1

    shape: str
    """'circle', 'helix' or 'interval'"""
    period: int
    """number of values p"""
    frequency: int
    """the fitted frequency k"""
    sign: int
    """+1: values run counter-clockwise in the PC1-PC2 plane, -1 clockwise"""
    n_harmonics: int
    """harmonics in the curve (after the circle cap)"""
    value_names: list[str]
    """a name per value (default '0'..'p-1')"""
    layer: int | None
    """residual-stream layer the points came from (0 = embedding output), if known"""
    position: str | int | None
    """token position the points came from ('last', 'value', an index), if known"""
    source: str
    """what the points are: 'residual', 'reconstruction', 'decoder', ..."""
    centre: np.ndarray
    """(d_model,) the mean of the class means"""
    basis: np.ndarray
    """(d_model, m) orthonormal subspace U (columns = principal components of the class means)"""
    class_means: np.ndarray
    """(p, d_model)"""
    class_counts: np.ndarray
    """(p,) points per value"""
    coefficients: np.ndarray
    """(n_basis, m) curve coefficients in subspace coordinates"""
    value_coords: np.ndarray
    """(p,) each value's ideal coordinate u_v at the fitted frequency"""
    fitted_coords: np.ndarray
    """(p,) the angle per value: the coordinate of the point of the fundamental (the best frequency's
    curve without higher harmonics) nearest to each class mean. The fundamental has too few parameters
    to pass through every class mean (period >= 4), so these angles, ``order`` and ``coordinate_rmse``
    test where the class means lie rather than restate their labels."""
    order: list[int]
    """values in increasing fitted coordinate (the fitted cyclic order, starting at the smallest)"""
    r2: float
    """R² of the final curve on the class means, in the subspace (circles keep 2H + 1 < period, so it is
    not 1 by construction, except over 3 values, where ``fit`` warns that it is)"""
    r2_fundamental: float
    """R² of the best frequency's fundamental alone"""
    r2_per_frequency: dict[str, float]
    """R² of the fundamental at each candidate frequency (keys: str(k))"""
    fourier_spectrum: np.ndarray
    """(p // 2 + 1,) share of the class means' centred energy (full space) at frequency 0..p//2"""
    fourier_concentration: float
    """the spectrum at the fitted frequency"""
    explained_variance_ratio: np.ndarray
    """(r,) variance ratio of each principal component of the class means"""
    explained_variance: float
    """share of the class means' variance inside the m-dim subspace"""
    between_class_fraction: float
    """share of the points' variance explained by their class means (full space)"""
    coordinate_rmse: float
    """RMSE of fitted_coords against value_coords (radians for circles; positions in [0, 1] otherwise)"""
    n_points: int
    """points the class means were computed from"""

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file): shapes that disagree with
        each other and with the curve, and non-finite arrays, fail here in one line, not later as a
        matrix-shape error."""
        check_choice("shape", self.shape, SHAPES)
        for name, lo in (("period", 2), ("frequency", 1), ("n_harmonics", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ValueError(f"ManifoldFitResult {name} must be an integer >= {lo}; got {value!r}.")
        if self.sign not in (1, -1):
            raise ValueError(f"ManifoldFitResult sign must be 1 or -1; got {self.sign!r}.")
        p = int(self.period)
        if len(self.value_names) != p:
            raise ValueError(f"ManifoldFitResult value_names must name all {p} values; got {len(self.value_names)}.")
        if len(set(self.value_names)) != p:
            raise ValueError(f"ManifoldFitResult value_names must be distinct; got {self.value_names!r}.")
        if sorted(self.order) != list(range(p)):
            raise ValueError(f"ManifoldFitResult order must list the values 0..{p - 1} once each; got {self.order!r}.")
        d = int(np.shape(self.centre)[0]) if np.ndim(self.centre) == 1 else -1
        m = int(np.shape(self.basis)[1]) if np.ndim(self.basis) == 2 else -1
        n_basis = curves.design_matrix(np.zeros(1), self.shape, int(self.frequency), int(self.n_harmonics)).shape[1]
        want = {"centre": (d,), "basis": (d, m), "class_means": (p, d), "class_counts": (p,),
                "coefficients": (n_basis, m), "value_coords": (p,), "fitted_coords": (p,)}
        for name, shape in want.items():
            arr = np.asarray(getattr(self, name))
            if d < 1 or m < 1 or arr.shape != shape:
                raise ValueError(f"ManifoldFitResult {name} must have shape {shape} (d_model {d}, {m} components, "
                                 f"{p} values); got {arr.shape}. The result file is damaged: fit it again.")
            if not np.isfinite(arr).all():
                raise ValueError(f"ManifoldFitResult {name} must be finite; got NaN or inf. The result file is "
                                 "damaged: fit it again.")
        U = np.asarray(self.basis, dtype=np.float64)  # (d, m)
        gap = float(np.abs(U.T @ U - np.eye(U.shape[1])).max())
        if gap > 1e-3:  # an all-zero or hand-made basis steered silently (success near 0)
            raise ValueError(f"ManifoldFitResult basis must have orthonormal columns; got |U^T U - I| up to {gap:.3g}. "
                             "The result file is damaged: fit it again.")
        counts = np.asarray(self.class_counts)
        if (counts < 0).any() or (counts != np.round(counts)).any() or self.n_points != int(counts.sum()):
            raise ValueError(f"ManifoldFitResult class_counts must be whole counts >= 0 summing to n_points "
                             f"({self.n_points!r}); got {counts.tolist()!r}. The result file is damaged: fit it again.")

    @property
    def n_components(self) -> int:
        return int(self.basis.shape[1])

    def _as_points(self, X: object) -> np.ndarray:
        """``X`` checked as float64 points (n, d_model) in the fit's model space. A 1-D vector (d_model,)
        is one point (1, d_model). Another width, NaN or inf is a ``ValueError``."""
        given = np.asarray(X)
        arr = given[None, :] if given.ndim == 1 else given  # (1, d_model): one point
        d = int(self.centre.shape[0])
        if arr.ndim != 2 or arr.shape[1] != d:
            raise ValueError(f"X must have shape (n_samples, {d}) or ({d},) (d_model {d} of the fit); got shape "
                             f"{given.shape} (width {arr.shape[-1] if arr.ndim else None}). Pass vectors from the "
                             "space the curve was fitted in.")
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise ValueError("X must hold finite numbers; got NaN, inf or non-numeric entries. Drop those rows.")
        return arr.astype(np.float64)

    @staticmethod
    def _as_coordinates(u: object) -> np.ndarray:
        """``u`` checked as finite real coordinates, (n,) float64 (a scalar gives (1,))."""
        arr = np.atleast_1d(np.asarray(u))
        check_real("u", arr, hint="Pass coordinates from transform() or value_coordinate().")
        return arr.astype(np.float64)

    def _as_values(self, y: object, n: int | None = None) -> np.ndarray:
        """``y`` checked as int64 values in ``[0, period)`` (``n``: one per row of X)."""
        arr = np.atleast_1d(np.asarray(y))
        if n is not None and arr.shape != (n,):
            raise ValueError(f"y must have shape ({n},) (one value per row of X); got {np.asarray(y).shape}.")
        values = as_integers("y", arr)
        if values.size and (values.min() < 0 or values.max() >= self.period):
            raise ValueError(f"y must be in [0, {self.period}) (the fit's period); got values from {values.min()} "
                             f"to {values.max()}. Map values to 0..period-1 in their order.")
        return values

    def project(self, X: np.ndarray) -> np.ndarray:
        """(n, d_model) -> (n, m) subspace coordinates (a 1-D vector (d_model,) is one point)."""
        return (self._as_points(X) - self.centre) @ self.basis

    def _subspace_curve(self, u: np.ndarray) -> np.ndarray:
        Phi = curves.design_matrix(u, self.shape, self.frequency, self.n_harmonics)  # (n, n_basis)
        return Phi @ self.coefficients  # (n, m)

    def curve(self, u: np.ndarray) -> np.ndarray:
        """(n,) coordinates -> (n, d_model) curve points in model space."""
        return self.centre + self._subspace_curve(self._as_coordinates(u)) @ self.basis.T

    def curve_derivative(self, u: np.ndarray) -> np.ndarray:
        """(n,) coordinates -> (n, d_model) dx/du in model space."""
        D = curves.design_derivative(self._as_coordinates(u), self.shape, self.frequency, self.n_harmonics)
        return (D @ self.coefficients) @ self.basis.T

    def value_coordinate(self, values: np.ndarray) -> np.ndarray:
        """(n,) integer values in [0, period) -> their ideal coordinates u_v."""
        return curves.value_coordinates(self._as_values(values), self.period, self.shape, self.frequency)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(n, d_model) -> (n,) coordinate of the nearest curve point (angle for circles); a 1-D vector
        (d_model,) is one point and gives (1,). X must be finite, with the fit's d_model columns."""
        return curves.nearest_coordinate(self.project(X), self.coefficients, self.shape, self.frequency,
                                         self.n_harmonics)

    def coordinate_to_value(self, u: np.ndarray) -> np.ndarray:
        """(n,) coordinates -> (n,) nearest integer values."""
        u = self._as_coordinates(u)
        p = self.period
        if self.shape == "circle":
            slot = np.rint(u * p / (2 * np.pi)).astype(np.int64) % p  # (k v) mod p
            return (slot * pow(self.frequency, -1, p)) % p
        scale = p if self.shape == "helix" else p - 1
        return np.clip(np.rint(u * scale).astype(np.int64), 0, p - 1)

    def predict_value(self, X: np.ndarray) -> np.ndarray:
        """(n, d_model) -> (n,) the value whose coordinate is nearest to each point's (checked as in
        :meth:`transform`)."""
        return self.coordinate_to_value(self.transform(X))

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Per-point R² in the subspace: each point against the curve at its true value (``y`` (n,) in
        ``[0, period)``; X checked as in :meth:`transform`)."""
        Z = self.project(X)
        return curves.r2_score(Z, self._subspace_curve(self.value_coordinate(self._as_values(y, len(Z)))))

    def class_mean_r2(self, X: np.ndarray, y: np.ndarray) -> float:
        """R² of the class means of (X, y) (values present only) against the curve, in the subspace."""
        X = self._as_points(X)
        y = self._as_values(y, len(X))
        present = np.unique(y)
        M = np.stack([X[y == v].mean(0) for v in present])  # (n_present, d)
        Z = self.project(M)
        return curves.r2_score(Z, self._subspace_curve(self.value_coordinate(present)))

    def coordinate_errors(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(n,) fitted minus true coordinate (wrapped to (-π, π] for circles)."""
        u_hat = self.transform(X)
        u = self.value_coordinate(self._as_values(y, len(u_hat)))
        return curves.circular_difference(u_hat, u) if self.shape == "circle" else u_hat - u

    def order_matches_values(self) -> bool:
        """The fitted order is 0..p-1 (circles: up to rotation and reversal), and no two values share a fitted
        coordinate (tied values have no order: their class means coincide, e.g. where no feature fires)."""
        if self.order_tied():
            return False
        if self.shape == "circle":
            return curves.order_is_cyclic_shift(self.order, self.period)
        return self.order in (list(range(self.period)), list(range(self.period))[::-1])

    def order_tied(self) -> bool:
        """Whether two values' fitted coordinates coincide (within 1e-9; circles: around the wrap too)."""
        u = np.sort(np.asarray(self.fitted_coords, dtype=np.float64))  # (p,)
        gaps = np.diff(u)
        if self.shape == "circle" and u.size > 1:
            gaps = np.append(gaps, u[0] + 2 * np.pi - u[-1])
        return bool(gaps.size and gaps.min() <= 1e-9)

    def summary(self) -> dict[str, object]:
        """The JSON-friendly numbers (what ``manifold.json`` reports)."""
        return {"shape": self.shape, "period": self.period, "frequency": self.frequency, "sign": self.sign,
                "r2": self.r2, "r2_fundamental": self.r2_fundamental, "r2_per_frequency": self.r2_per_frequency,
                "order": [self.value_names[v] for v in self.order], "order_matches": self.order_matches_values(),
                "angles": {self.value_names[v]: float(a) for v, a in enumerate(self.fitted_coords)},
                "n_components": self.n_components, "explained_variance": self.explained_variance,
                "explained_variance_ratio": [float(x) for x in self.explained_variance_ratio],
                "fourier_concentration": self.fourier_concentration, "coordinate_rmse": self.coordinate_rmse,
                "angle_rmse": self.coordinate_rmse if self.shape == "circle" else None,  # radians; the same number
                "between_class_fraction": self.between_class_fraction, "layer": self.layer,
                "position": self.position, "source": self.source, "n_points": self.n_points}


# ----------------------------------------------------------------------------- pure steps
_MAX_ABS = 1e100
"""Largest |entry| of the points a fit takes (its square, summed over many points, stays finite)."""


def check_points(X: object, y: object, period: int | None, min_count: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate ``X`` (n, d) and integer ``y`` (n,); returns float64 X, int64 y and the period."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (n_samples, d_model); got shape {X.shape}.")
    if X.dtype.kind not in "iuf":  # complex lost its imaginary part with a warning; bool was "not finite"
        raise TypeError(f"X must hold real numbers; got dtype {X.dtype}. Pass float points.")
    if not np.isfinite(X).all():
        raise ValueError("X must hold finite numbers; got NaN, inf or non-numeric entries.")
    top = float(np.abs(X).max())
    if top > _MAX_ABS or 0 < top < 1 / _MAX_ABS:  # squares and variances overflow / underflow float64 there
        raise ValueError(f"X must hold entries of magnitude between {1 / _MAX_ABS:g} and {_MAX_ABS:g}; got max |X| "
                         f"{top:g}. Rescale the points (a manifold's fit does not depend on their scale).")
    y_arr = np.asarray(y)
    if y_arr.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) (one value per row of X); got {y_arr.shape}.")
    if not (np.issubdtype(y_arr.dtype, np.integer) or (np.issubdtype(y_arr.dtype, np.floating)
                                                        and np.all(y_arr == np.round(y_arr)))):
        raise TypeError(f"y must hold integer values; got dtype {y_arr.dtype}.")
    y_int = y_arr.astype(np.int64)
    p = int(y_int.max()) + 1 if period is None else period
    if y_int.min() < 0 or y_int.max() >= p:
        raise ValueError(f"y must be in [0, {p}); got values from {y_int.min()} to {y_int.max()}. "
                         "Map values to 0..period-1 in their order.")
    if p < 3:
        raise ValueError(f"period must be an integer >= 3; got {p}.")
    if p * min_count > len(y_int):  # some value has too few points (a period of 10**12 failed allocating)
        raise ValueError(f"every value must have at least {min_count} point(s); got {len(y_int)} points for a "
                         f"period of {p}. Add points or lower the period.")
    counts = np.bincount(y_int, minlength=p)
    if counts.min() < min_count:
        v = int(counts.argmin())
        hint = "Add points or lower min_points_per_value." if min_count > 1 else "Add points for it."
        raise ValueError(f"every value must have at least {min_count} point(s); got {counts[v]} for value {v}. {hint}")
    return X.astype(np.float64), y_int, p


def class_means(X: np.ndarray, y: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """(period, d) means per value and (period,) counts (a value without points gets NaN)."""
    counts = np.bincount(y, minlength=period)  # (p,)
    sums = np.zeros((period, X.shape[1]))
    np.add.at(sums, y, X)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None], counts  # (p, d)


def pca_subspace(M: np.ndarray, threshold: float, cap: int,
                 min_m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Centre, basis U (d, m), variance ratios (r,) and m for the rows of ``M`` (p, d)."""
    centre = M.mean(0)
    _, sv, Vt = np.linalg.svd(M - centre, full_matrices=False)  # Vt: (r, d)
    flip = np.sign(Vt[np.arange(len(Vt)), np.abs(Vt).argmax(1)])  # largest entry of each PC positive
    Vt = Vt * np.where(flip == 0, 1.0, flip)[:, None]  # deterministic orientation for ``sign``
    var = sv**2
    ratios = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    rank = int((sv > sv[0] * 1e-10).sum()) if len(sv) and sv[0] > 0 else 0
    m = int(np.searchsorted(np.cumsum(ratios), threshold - 1e-12) + 1)
    if rank < min_m:
        raise ValueError(f"class means must span at least {min_m} dimension(s); got rank {rank}. The points "
                         "do not vary with the value (e.g. features that never fire).")
    m = max(min(m, cap, rank), min_m)
    return centre, Vt[:m].T.copy(), ratios, m  # basis (d, m)


def frequency_r2(Z: np.ndarray, period: int, shape: str, candidates: list[int]) -> dict[int, float]:
    """R² of the fundamental alone at each candidate frequency, on subspace class means ``Z`` (p, m)."""
    values = np.arange(period)
    out = {}
    for k in candidates:
        Phi = curves.design_matrix(curves.value_coordinates(values, period, shape, k), shape, k, 1)
        out[k] = curves.r2_score(Z, Phi @ curves.lstsq_fit(Phi, Z))
    return out


def check_frequency(frequency: int | None, period: int, shape: str) -> None:
    """A requested frequency (None: searched) must be one the period can hold: at most ``period // 2``
    (k and period - k trace one curve; higher ones alias), and coprime with the period for a circle."""
    p = period
    if frequency is not None and frequency > p // 2:
        raise ValueError(f"frequency must be <= period // 2 = {p // 2} (k and {p} - k trace one curve, and higher "
                         f"frequencies alias over {p} values); got {frequency}.")
    if frequency is not None and shape == "circle" and np.gcd(frequency, p) != 1:
        raise ValueError(f"frequency must be coprime with period {p} for a circle; got {frequency}.")


def check_fit_metadata(layer: object, position: object, source: object) -> None:
    """The metadata a fit is saved with must load back: ``layer`` an integer >= 0 or None, ``position``
    a name, an integer or None, ``source`` a name."""
    if layer is not None:
        check_number("layer", layer, lo=0, integer=True)
    if position is not None and (isinstance(position, bool) or not isinstance(position, (str, int, np.integer))):
        raise TypeError(f"position must be a name ('last', 'value'), a token index or None; got {position!r}.")
    if not isinstance(source, str):
        raise TypeError(f"source must be a name such as 'residual'; got {source!r}.")


def fundamental_angles(Z: np.ndarray, u_v: np.ndarray, shape: str, frequency: int) -> np.ndarray:
    """(p,) the coordinate of the point of the fundamental nearest to each class mean ``Z`` (p, m); ``u_v``
    (p,) are the values' ideal coordinates the fundamental is fitted at."""
    Phi = curves.design_matrix(u_v, shape, frequency, 1)  # (p, n_basis_1)
    return curves.nearest_coordinate(Z, curves.lstsq_fit(Phi, Z), shape, frequency, 1)


def orientation(coef: np.ndarray, shape: str) -> int:
    """+1 when the first harmonic turns counter-clockwise in the first two subspace coordinates."""
    if coef.shape[1] < 2:
        return 1
    row = 1 if shape == "circle" else 2  # skip the constant (and the linear term)
    a, b = coef[row, :2], coef[row + 1, :2]
    return 1 if a[0] * b[1] - a[1] * b[0] >= 0 else -1


class ManifoldFit(Estimator):
    """Fit a circle, helix or interval to points labelled with a known integer variable.

    Parameters: see :class:`ManifoldFitConfig`. Fitted: ``result_`` (:class:`ManifoldFitResult`),
    ``components_`` (d_model, m), ``centre_`` (d_model,), ``frequency_``, ``n_components_``.
    """

    def __init__(self, *, period: int | None = _DEFAULTS.period, shape: str = _DEFAULTS.shape,
                 n_harmonics: int = _DEFAULTS.n_harmonics, variance_threshold: float = _DEFAULTS.variance_threshold,
                 max_components: int = _DEFAULTS.max_components, frequency: int | None = _DEFAULTS.frequency,
                 min_points_per_value: int = _DEFAULTS.min_points_per_value) -> None:
        self.period = period
        self.shape = shape
        self.n_harmonics = n_harmonics
        self.variance_threshold = variance_threshold
        self.max_components = max_components
        self.frequency = frequency
        self.min_points_per_value = min_points_per_value

    def _validate_params(self) -> None:
        ManifoldFitConfig(**self.get_params(deep=False))

    @atomic_fit
    def fit(self, X: np.ndarray, y: np.ndarray, *, value_names: list[str] | None = None, layer: int | None = None,
            position: str | int | None = None, source: str = "points") -> "ManifoldFit":
        """Fit on ``X`` (n_samples, d_model) with values ``y`` (n_samples,); the keywords are metadata."""
        self._validate_params()
        X, y, p = check_points(X, y, self.period, self.min_points_per_value)
        names = [str(v) for v in range(p)] if value_names is None else [str(v) for v in value_names]
        if len(names) != p:
            inferred = "" if self.period is not None else (f" (the period inferred from y's largest value {p - 1}; "
                                                           "pass period= when a value has no points)")
            raise ValueError(f"value_names must have {p} entries (one per value{inferred}); got {len(names)}.")
        if len(set(names)) != p:
            raise ValueError(f"value_names must be distinct; got {names!r}. Name each value once.")
        check_fit_metadata(layer, position, source)
        layer = None if layer is None else int(layer)
        position = int(position) if isinstance(position, np.integer) else position
        check_frequency(self.frequency, p, self.shape)
        M, counts = class_means(X, y, p)
        min_m = 1 if self.shape == "interval" else 2
        centre, U, ratios, m = pca_subspace(M, self.variance_threshold, self.max_components, min_m)
        Z = (M - centre) @ U  # (p, m)
        k, r2_k = self._choose_frequency(Z, p)
        H = curves.max_harmonics(self.shape, p, self.n_harmonics, k)
        if 2 * H + (1 if self.shape == "circle" else 2) >= p:
            warnings.warn(f"a {self.shape} over {p} values has as many curve terms as class means: it passes through "
                          "every mean whatever the values, so its R² is 1 by construction (and the fitted order says "
                          f"nothing). Use at least {4 if self.shape == 'circle' else 5} values.", stacklevel=3)
        u_v = curves.value_coordinates(np.arange(p), p, self.shape, k)  # (p,)
        Phi = curves.design_matrix(u_v, self.shape, k, H)  # (p, n_basis)
        coef = curves.lstsq_fit(Phi, Z)  # (n_basis, m)
        fitted = fundamental_angles(Z, u_v, self.shape, k)  # (p,)
        err = curves.circular_difference(fitted, u_v) if self.shape == "circle" else fitted - u_v
        spectrum = curves.fourier_spectrum(M)
        between = float((counts[:, None] * (M - X.mean(0)) ** 2).sum() / ((X - X.mean(0)) ** 2).sum())
        self.result_ = ManifoldFitResult(
            shape=self.shape, period=p, frequency=k, sign=orientation(coef, self.shape), n_harmonics=H,
            value_names=names, layer=layer, position=position, source=source, centre=centre, basis=U,
            class_means=M, class_counts=counts, coefficients=coef, value_coords=u_v, fitted_coords=fitted,
            order=[int(v) for v in np.argsort(fitted, kind="stable")], r2=curves.r2_score(Z, Phi @ coef),
            r2_fundamental=r2_k[k], r2_per_frequency={str(f): float(r) for f, r in r2_k.items()},
            fourier_spectrum=spectrum, fourier_concentration=float(spectrum[min(k % p, p - k % p)]),
            explained_variance_ratio=ratios, explained_variance=float(ratios[:m].sum()),
            between_class_fraction=between, coordinate_rmse=float(np.sqrt(np.mean(err**2))), n_points=len(X))
        self.components_, self.centre_, self.frequency_, self.n_components_ = U, centre, k, m
        logger.info("manifold fit: %s k=%d m=%d r2=%.3f", self.shape, k, m, self.result_.r2)
        return self

    def _choose_frequency(self, Z: np.ndarray, period: int) -> tuple[int, dict[int, float]]:
        candidates = curves.candidate_frequencies(self.shape, period)
        if self.frequency is not None and self.frequency not in candidates:
            candidates = sorted({*candidates, self.frequency})
        r2_k = frequency_r2(Z, period, self.shape, candidates)
        if self.frequency is not None:
            return self.frequency, r2_k
        return max(r2_k, key=lambda f: (r2_k[f], -f)), r2_k

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(n, d_model) -> (n,) the manifold coordinate (angle for circles, position otherwise); a 1-D
        vector (d_model,) is one point. NaN, inf or another width is a ``ValueError``."""
        self._check_fitted("result_")
        return self.result_.transform(X)

    def predict_value(self, X: np.ndarray) -> np.ndarray:
        """(n, d_model) -> (n,) the nearest value on the fitted curve."""
        self._check_fitted("result_")
        return self.result_.predict_value(X)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Per-point R² in the subspace against the curve at the true values ``y`` in [0, period) (see the
        result's ``score``)."""
        self._check_fitted("result_")
        return self.result_.score(X, y)

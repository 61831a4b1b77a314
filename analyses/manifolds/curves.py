"""Fourier curves in a low-dimensional subspace: design matrices, least squares, projection.

A curve is parametrised by one coordinate ``u`` whose meaning depends on the shape:

* ``"circle"``: ``u`` is an angle in ``[0, 2π)``; ``x(u) = c₀ + Σ_j a_j cos(j u) + b_j sin(j u)``.
  Value ``v`` of a period-``p`` variable fitted at frequency ``k`` sits at ``u_v = 2π (k v mod p) / p``,
  so a ``k ≠ 1`` circle visits the values out of calendar order.
* ``"helix"``: ``u`` is a position in ``[0, 1)`` with ``u_v = v / p``;
  ``x(u) = c₀ + c_lin u + Σ_j a_j cos(2π j k u) + b_j sin(2π j k u)`` (``k`` turns).
* ``"interval"``: ``u`` is a position in ``[0, 1]`` with ``u_v = v / (p - 1)``;
  ``x(u) = c₀ + c_lin u + Σ_j a_j cos(π j k u) + b_j sin(π j k u)`` (an open curve).

The coefficients are stacked as rows of ``C`` (n_basis, m): the constant, the linear term (not for
circles), then ``cos`` and ``sin`` of each harmonic ``j = 1..n_harmonics``. Everything here is a
small pure numpy function; :mod:`analyses.manifolds.fit` builds the estimator on top.
"""

import math

import numpy as np


def candidate_frequencies(shape: str, period: int) -> list[int]:
    """Frequencies the supervised fit searches: circles use 1 <= k <= p/2 with gcd(k, p) = 1 (other k
    put several values on one angle, and k, p - k are the same circle traced backwards)."""
    top = max(1, period // 2)
    if shape == "circle":
        return [k for k in range(1, top + 1) if math.gcd(k, period) == 1]
    return list(range(1, top + 1))


def max_harmonics(shape: str, period: int, n_harmonics: int, frequency: int = 1) -> int:
    """Harmonics a circle over ``period`` evenly spaced values is fitted with: ``2H + 1 < p``, so that
    the curve keeps a residual degree of freedom (at ``2H + 1 = p`` it passes through every class
    mean whatever their labels, and its R² is 1 by construction), and ``H k < p / 2``, so that no
    harmonic of frequency ``k`` aliases onto another frequency (over 7 values the 2nd harmonic of k = 3
    is frequency 6, i.e. 1: a k = 3 curve then fitted k = 1 data with a high R²). Always at least the
    fundamental (a period of 3 leaves no freedom: any three points lie on an ellipse). Open shapes (a
    helix, an interval) have a linear term too: ``2H + 2 <= p - 2``, two residual degrees of freedom (with
    ``2H + 2 >= p`` a helix fitted pure noise with R² 1), and at least one harmonic (so below 6 values fewer
    remain, and none at 4: :class:`analyses.manifolds.fit.ManifoldFit` warns)."""
    if shape == "circle":
        return max(1, min(n_harmonics, (period - 2) // 2, (period - 1) // (2 * frequency)))
    return max(1, min(n_harmonics, (period - 4) // 2))


def value_coordinates(values: np.ndarray, period: int, shape: str, frequency: int) -> np.ndarray:
    """(n,) the ideal curve coordinate ``u_v`` of integer ``values`` (see the module docstring)."""
    v = np.asarray(values, dtype=np.int64)
    if shape == "circle":
        return 2 * np.pi * ((frequency * v) % period) / period
    if shape == "helix":
        return v / period
    return v / max(period - 1, 1)


def _phase(u: np.ndarray, shape: str, frequency: int) -> np.ndarray:
    if shape == "circle":
        return u
    if shape == "helix":
        return 2 * np.pi * frequency * u
    return np.pi * frequency * u


def _phase_rate(shape: str, frequency: int) -> float:
    """d(phase)/du."""
    if shape == "circle":
        return 1.0
    return (2 * np.pi if shape == "helix" else np.pi) * frequency


def design_matrix(u: np.ndarray, shape: str, frequency: int, n_harmonics: int) -> np.ndarray:
    """(n, n_basis) basis functions at coordinates ``u`` (n,)."""
    u = np.asarray(u, dtype=np.float64)
    phase = _phase(u, shape, frequency)  # (n,)
    cols = [np.ones_like(u)]
    if shape != "circle":
        cols.append(u)
    for j in range(1, n_harmonics + 1):
        cols += [np.cos(j * phase), np.sin(j * phase)]
    return np.stack(cols, axis=1)  # (n, n_basis)


def design_derivative(u: np.ndarray, shape: str, frequency: int, n_harmonics: int) -> np.ndarray:
    """(n, n_basis) d/du of :func:`design_matrix`."""
    u = np.asarray(u, dtype=np.float64)
    phase, rate = _phase(u, shape, frequency), _phase_rate(shape, frequency)
    cols = [np.zeros_like(u)]
    if shape != "circle":
        cols.append(np.ones_like(u))
    for j in range(1, n_harmonics + 1):
        cols += [-j * rate * np.sin(j * phase), j * rate * np.cos(j * phase)]
    return np.stack(cols, axis=1)  # (n, n_basis)


def lstsq_fit(Phi: np.ndarray, Z: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(n_basis, m) least-squares coefficients of ``Z`` (n, m) on ``Phi`` (n, n_basis)."""
    if weights is not None:
        w = np.sqrt(np.asarray(weights, dtype=np.float64))[:, None]  # (n, 1)
        Phi, Z = Phi * w, Z * w
    coef, *_ = np.linalg.lstsq(Phi, Z, rcond=None)
    return coef  # (n_basis, m)


def r2_score(Z: np.ndarray, Z_hat: np.ndarray, centre: np.ndarray | None = None) -> float:
    """1 - SS_res / SS_tot over all coordinates (SS_tot around ``centre``, default the mean of Z); nan where the
    points do not vary (:func:`r2_from_sums`)."""
    ref = Z.mean(0) if centre is None else centre
    return float(r2_from_sums(((Z - Z_hat) ** 2).sum(), ((Z - ref) ** 2).sum()))


NO_SPREAD = 1e-12
"""SS_tot at or below this share of SS_res: the points coincide (to rounding), and R² (below -1e12) is undefined."""


def r2_from_sums(ss_res: np.ndarray | float, ss_tot: np.ndarray | float) -> np.ndarray:
    """1 - ss_res / ss_tot elementwise (any shape), nan where the points do not vary: ss_tot zero, or at most
    :data:`NO_SPREAD` of ss_res (points that coincide away from the curve: rounding, not a spread, in ss_tot)."""
    res, tot = np.asarray(ss_res, dtype=np.float64), np.asarray(ss_tot, dtype=np.float64)
    ok = (tot > 0) & (tot > NO_SPREAD * res)
    return np.where(ok, 1.0 - res / np.where(ok, tot, 1.0), np.nan)


def coordinate_grid(shape: str, frequency: int, size: int = 1024) -> np.ndarray:
    """(G,) coordinates at which :func:`nearest_coordinate` looks for the closest curve point."""
    if shape == "circle":
        return np.linspace(0, 2 * np.pi, size, endpoint=False)
    g = max(size, 256 * frequency)
    return np.linspace(0.0, 1.0, g, endpoint=shape == "interval")


def nearest_coordinate(Z: np.ndarray, coef: np.ndarray, shape: str, frequency: int, n_harmonics: int,
                       grid_size: int = 1024, chunk: int = 8192) -> np.ndarray:
    """(n,) the coordinate ``u`` of the curve point closest to each row of ``Z`` (n, m).

    Grid search followed by one parabolic refinement between the grid neighbours."""
    grid = coordinate_grid(shape, frequency, grid_size)  # (G,)
    G_pts = design_matrix(grid, shape, frequency, n_harmonics) @ coef  # (G, m)
    g2 = (G_pts**2).sum(1)  # (G,)
    out = np.empty(len(Z))
    step = grid[1] - grid[0]
    for lo in range(0, len(Z), chunk):
        z = Z[lo:lo + chunk]  # (c, m)
        d2 = g2[None, :] - 2 * z @ G_pts.T  # (c, G) squared distance minus |z|^2
        i = d2.argmin(1)  # (c,)
        out[lo:lo + chunk] = grid[i] + step * _parabola_offset(d2, i, closed=shape == "circle")
    if shape == "circle":
        return np.mod(out, 2 * np.pi)
    return np.clip(out, 0.0, 1.0)


def _parabola_offset(d2: np.ndarray, i: np.ndarray, *, closed: bool) -> np.ndarray:
    """Sub-grid offset in (-0.5, 0.5) steps of the minimum of a parabola through the grid neighbours."""
    G = d2.shape[1]
    rows = np.arange(len(i))
    if closed:
        left, right = d2[rows, (i - 1) % G], d2[rows, (i + 1) % G]
    else:
        left, right = d2[rows, np.maximum(i - 1, 0)], d2[rows, np.minimum(i + 1, G - 1)]
    mid = d2[rows, i]
    denom = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom > 0, 0.5 * (left - right) / denom, 0.0)
    if not closed:
        off = np.where((i == 0) | (i == G - 1), 0.0, off)
    return np.clip(off, -0.5, 0.5)


def circular_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b wrapped to (-π, π]."""
    return np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))


def fourier_spectrum(M: np.ndarray) -> np.ndarray:
    """(p // 2 + 1,) the fraction of the centred energy of class means ``M`` (p, d) (rows = values
    0..p-1 in order) at each frequency 0..p//2 (k and p - k together; frequency 0 is 0 after centring)."""
    F = np.fft.rfft(M - M.mean(0), axis=0)  # (p//2+1, d)
    energy = (np.abs(F) ** 2).sum(1)  # (p//2+1,)
    p = M.shape[0]
    weight = np.full(len(energy), 2.0)  # conjugate frequency counted once more
    weight[0] = 1.0
    if p % 2 == 0:
        weight[-1] = 1.0
    energy = energy * weight
    total = energy.sum()
    return energy / total if total > 0 else np.zeros_like(energy)


def order_is_cyclic_shift(order: list[int], period: int, *, allow_reverse: bool = True) -> bool:
    """True when ``order`` (values by increasing fitted angle) is 0..p-1 up to rotation (and reversal)."""
    if sorted(order) != list(range(period)):
        return False
    steps = {(b - a) % period for a, b in zip(order, order[1:] + order[:1])}
    return steps == {1} or (allow_reverse and steps == {period - 1})

"""Planted-structure point clouds for the manifold tests (seeded, numpy only)."""

import numpy as np


def orthonormal(d: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """(d, m) random orthonormal columns."""
    q, _ = np.linalg.qr(rng.standard_normal((d, m)))
    return q[:, :m]


def planted_curve(*, period: int, n_per_value: int, d: int = 64, frequency: int = 1, shape: str = "circle",
                  second_harmonic: float = 0.0, noise: float = 0.1, radius: float = 3.0, drift: float = 0.0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points X (n, d), values y (n,) and the planted plane basis (d, 5).

    circle: value v at angle 2π k v / p in a random plane (+ a k=2k harmonic in another plane);
    helix: the same plus ``drift`` * v / p along a fifth direction; interval: an arc of half a turn."""
    rng = np.random.default_rng(seed)
    B = orthonormal(d, 5, rng)  # (d, 5)
    y = np.repeat(np.arange(period), n_per_value)
    if shape == "interval":
        theta = np.pi * y / (period - 1)
    else:
        theta = 2 * np.pi * frequency * y / period
    coords = np.zeros((len(y), 5))
    coords[:, 0], coords[:, 1] = radius * np.cos(theta), radius * np.sin(theta)
    coords[:, 2], coords[:, 3] = second_harmonic * np.cos(2 * theta), second_harmonic * np.sin(2 * theta)
    coords[:, 4] = drift * y / period
    X = coords @ B.T + noise * rng.standard_normal((len(y), d)) + rng.standard_normal(d)  # off-origin centre
    return X, y, B


def engels_clouds(seed: int = 0, n: int = 4000, noise: float = 0.05) -> dict[str, np.ndarray]:
    """The research note's §6.1 synthetic 2-D clouds (N = 4000, noise σ = 0.05), each (n, 2).

    The note gives only names, N and σ; these constructions reproduce its numbers (see the report
    in tests/analyses/manifolds/test_irreducibility.py): unit circle and 7 clusters on the unit circle;
    a Gaussian with correlation 0.8; two perpendicular lines through the origin, half the points each,
    positions N(0, 3²); a line (70%, positions N(0, 3²)) plus an isotropic N(0, 3² I) blob (30%).
    Every cloud but the Gaussian gets N(0, σ² I) noise."""
    def rng(i: int) -> np.random.Generator:
        return np.random.default_rng([seed, i])

    out: dict[str, np.ndarray] = {}
    zero = np.zeros(n)
    r = rng(0)
    t = r.uniform(0, 2 * np.pi, n)
    out["noisy circle"] = np.c_[np.cos(t), np.sin(t)] + noise * r.standard_normal((n, 2))
    r = rng(1)
    t = 2 * np.pi * r.integers(0, 7, n) / 7
    out["7 clusters on a circle"] = np.c_[np.cos(t), np.sin(t)] + noise * r.standard_normal((n, 2))
    r = rng(2)
    out["correlated Gaussian"] = r.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], n)
    r = rng(3)
    first = r.random(n) < 0.5
    out["two perpendicular lines"] = np.where(first[:, None], np.c_[3 * r.standard_normal(n), zero],
                                              np.c_[zero, 3 * r.standard_normal(n)]) + noise * r.standard_normal((n, 2))
    r = rng(4)
    on_line = r.random(n) < 0.7
    out["line + blob"] = np.where(on_line[:, None], np.c_[3 * r.standard_normal(n), zero],
                                  3 * r.standard_normal((n, 2))) + noise * r.standard_normal((n, 2))
    return out

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

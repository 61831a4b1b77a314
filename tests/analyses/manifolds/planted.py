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


def planted_layer(*, n_tokens: int = 6000, d: int = 32, seed: int = 0):
    """A synthetic transcoder layer: activations A (n_tokens, 30) csr, W_dec (30, d), families, and the
    ring's latent angle per token (NaN where the ring is silent).

    * ``ring`` (features 0-11): decoders evenly around a circle in a random plane (plus a shared
      offset); on ~1/3 of the tokens a latent angle θ ~ U(0, 2π) drives bump-tuned activations
      ``max(0, cos(θ - φ_i) - 0.6)``, so two or three neighbours fire together;
    * ``axes`` (12-19): random directions, each firing alone on ~1/16 of the tokens (a mixture of lines);
    * ``blob`` (20-29): random directions with independent dense half-normal activations on ~1/4 of
      the tokens (a Gaussian-like, separable cloud)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    B = orthonormal(d, 3, rng)
    phi = 2 * np.pi * np.arange(12) / 12
    W = np.zeros((30, d))
    W[:12] = np.c_[np.cos(phi), np.sin(phi)] @ B[:, :2].T + 0.5 * B[:, 2]
    W[12:] = rng.standard_normal((18, d)) / np.sqrt(d)
    A = np.zeros((n_tokens, 30))
    ring_on = rng.random(n_tokens) < 1 / 3
    theta = np.where(ring_on, rng.uniform(0, 2 * np.pi, n_tokens), np.nan)
    A[ring_on, :12] = np.maximum(0.0, np.cos(theta[ring_on, None] - phi[None]) - 0.6) * 3
    for j in range(12, 20):
        A[rng.random(n_tokens) < 1 / 16, j] = rng.uniform(0.5, 2.0)
    blob_on = rng.random(n_tokens) < 1 / 4
    A[blob_on, 20:] = np.abs(rng.standard_normal((blob_on.sum(), 10)))
    families = {"ring": list(range(12)), "axes": list(range(12, 20)), "blob": list(range(20, 30))}
    return sp.csr_matrix(A), W, families, theta

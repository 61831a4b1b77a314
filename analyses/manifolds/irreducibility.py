"""Engels et al.'s irreducibility indices of 2-D point clouds (research note §1.1), vectorised.

* **ε-mixture index** ``M_ε = max_{a, b} P(|z| < ε)`` with ``z = (x·a + b) / sqrt(mean((x·a + b)²))``:
  the largest share of points inside a thin band around a line. As in Engels' code
  (``reducibility_demos/reducibility_demo.py``, ``get_parameters``): start from ``a ~ N(0, I)``,
  ``b = 0``; plain gradient *ascent* (lr 0.1) on ``mean(sigmoid((ε - |z|) / T))`` with ``T`` annealed
  linearly from 1 towards 0; report the hard share ``mean(|z| < ε)``; the best of several restarts.
  The gradient is written out by hand and all clouds x restarts run as one batch. Each cloud is
  first centred and scaled to unit RMS per coordinate (``M`` is invariant to that; it keeps the
  fixed learning rate meaningful for clouds of any scale). High M: a mixture (reducible).
* **Separability index** ``S = min_θ I(x'_1; x'_2)`` in bits over rotations θ of the cloud, from a
  ``bins`` x ``bins`` histogram spanning each rotated coordinate's range (``np.histogram2d``'s bins),
  at ``n_angles`` angles ``linspace(0, 2π, n_angles)`` (``gpt2_compute_reducibility.py``,
  ``get_separability``). High S: not separable.

An irreducible 2-D feature (a circle) has low M and high S; the cluster score used for ranking is
the mean over consecutive principal-component pairs of ``(1 - M) · S``.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from analyses.base import check_number


@dataclass(frozen=True, kw_only=True)
class IrreducibilityConfig:
    """Settings of both indices (defaults: the research note's §6.1 calibration)."""

    epsilon: float = 0.1
    """Band half-width in units of the projection's RMS."""
    n_restarts: int = 5
    """Random restarts of the band search (the best one counts)."""
    n_steps: int = 3000
    """Annealed gradient-ascent steps per restart."""
    learning_rate: float = 0.1
    """Step size of the ascent (Engels: 0.1)."""
    bins: int = 10
    """Histogram bins per axis for the mutual information."""
    n_angles: int = 100
    """Rotations scanned for the separability minimum."""
    seed: int = 0
    """Seed of the restarts' starting directions."""

    def __post_init__(self) -> None:
        check_number("epsilon", self.epsilon, lo=0, lo_open=True)
        check_number("n_restarts", self.n_restarts, lo=1, integer=True)
        check_number("n_steps", self.n_steps, lo=1, integer=True)
        check_number("learning_rate", self.learning_rate, lo=0, lo_open=True)
        check_number("bins", self.bins, lo=2, integer=True)
        check_number("n_angles", self.n_angles, lo=1, integer=True)
        check_number("seed", self.seed, lo=0, integer=True)


def _check_clouds(clouds: Any) -> np.ndarray:
    X = np.asarray(clouds, dtype=np.float64)
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3 or X.shape[2] != 2 or X.shape[1] < 3:
        raise ValueError(f"clouds must have shape (n_points >= 3, 2) or (n_clouds, n_points >= 3, 2); got "
                         f"{np.shape(clouds)}.")
    if not np.isfinite(X).all():
        raise ValueError("clouds must be finite; got NaN or inf.")
    return X


def standardize(X: np.ndarray) -> np.ndarray:
    """(B, N, 2) centred, each cloud divided by its RMS coordinate (an isotropic scale)."""
    Xc = X - X.mean(1, keepdims=True)
    rms = np.sqrt((Xc**2).mean((1, 2), keepdims=True))  # (B, 1, 1)
    return Xc / np.where(rms > 0, rms, 1.0)


def _band_gradient(X1: torch.Tensor, X1t: torch.Tensor, w: torch.Tensor, eps: float, T: float) -> torch.Tensor:
    """d/dw of mean(sigmoid((eps - |z|) / T)) for every cloud and restart, with w = (a_1, a_2, b).

    X1 (B, N, 3) the points with a column of ones, X1t its transpose (B, 3, N); w (B, R, 3)."""
    u = torch.bmm(w, X1t)  # (B, R, N)
    n = u.shape[-1]
    rinv = torch.rsqrt(u.pow(2).mean(-1, keepdim=True).clamp_min(1e-30))  # (B, R, 1)
    z = u.mul_(rinv)  # z = u / rms(u)
    s = torch.sigmoid(z.abs().mul_(-1.0 / T).add_(eps / T))  # (B, R, N)
    g = s.sub_(s * s).mul_(torch.sign(z)).mul_(-1.0 / (T * n))  # dP/dz, (B, R, N)
    c = (g * z).sum(-1, keepdim=True) / n  # (B, R, 1)
    du = torch.addcmul(g, z, c, value=-1.0).mul_(rinv)  # dP/du, (B, R, N)
    return torch.bmm(du, X1)  # (B, R, 3)


def mixture_index(clouds: np.ndarray, config: IrreducibilityConfig | None = None) -> np.ndarray:
    """ε-mixture index of each cloud: (N, 2) -> shape (1,), (B, N, 2) -> (B,)."""
    cfg = config or IrreducibilityConfig()
    X = standardize(_check_clouds(clouds))  # (B, N, 2)
    B, N, _ = X.shape
    X1 = torch.from_numpy(np.concatenate([X, np.ones((B, N, 1))], 2)).float()  # (B, N, 3)
    X1t = X1.transpose(1, 2).contiguous()  # (B, 3, N)
    rng = np.random.default_rng(cfg.seed)
    w = torch.zeros(B, cfg.n_restarts, 3)  # (B, R, 3): a ~ N(0, I), b = 0
    w[..., :2] = torch.from_numpy(rng.standard_normal((B, cfg.n_restarts, 2))).float()
    for i in range(cfg.n_steps):
        w.add_(_band_gradient(X1, X1t, w, cfg.epsilon, 1.0 - i / cfg.n_steps), alpha=cfg.learning_rate)
    u = torch.bmm(w, X1t)  # (B, R, N)
    z = u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True).clamp_min(1e-30))
    hard = (z.abs() < cfg.epsilon).double().mean(-1)  # (B, R)
    return hard.max(1).values.numpy()  # (B,)


def rotation_mutual_information(clouds: np.ndarray, bins: int = 10, n_angles: int = 100) -> np.ndarray:
    """(B, n_angles) mutual information in bits between the two coordinates of each rotated cloud."""
    X = _check_clouds(clouds)  # (B, N, 2)
    ang = np.linspace(0, 2 * np.pi, n_angles)  # (A,)
    c, s = np.cos(ang), np.sin(ang)
    R = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1)  # (A, 2, 2): [[c, -s], [s, c]]
    return np.stack([_rotated_mi(x, R, bins) for x in X])  # (B, A); one cloud at a time bounds memory


def _rotated_mi(x: np.ndarray, R: np.ndarray, bins: int) -> np.ndarray:
    """(A,) mutual information (bits) of cloud ``x`` (N, 2) rotated by each of ``R`` (A, 2, 2)."""
    n_angles, N = len(R), len(x)
    rot = np.einsum("nc,acd->and", x, R)  # (A, N, 2): x @ R
    lo, hi = rot.min(1, keepdims=True), rot.max(1, keepdims=True)  # (A, 1, 2)
    span = np.where(hi > lo, hi - lo, 1.0)
    idx = np.clip(np.floor((rot - lo) / span * bins).astype(np.int64), 0, bins - 1)  # (A, N, 2)
    cell = idx[..., 0] * bins + idx[..., 1] + (np.arange(n_angles) * bins * bins)[:, None]  # (A, N)
    counts = np.bincount(cell.ravel(), minlength=n_angles * bins * bins)
    joint = counts.reshape(n_angles, bins, bins) / N  # (A, bins, bins)
    prod = joint.sum(2, keepdims=True) * joint.sum(1, keepdims=True)  # outer product of the marginals
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / prod), 0.0)
    return terms.sum((1, 2)) / np.log(2)  # (A,)


def separability_index(clouds: np.ndarray, config: IrreducibilityConfig | None = None) -> np.ndarray:
    """Separability index (bits) of each cloud: (N, 2) -> shape (1,), (B, N, 2) -> (B,)."""
    cfg = config or IrreducibilityConfig()
    return rotation_mutual_information(clouds, cfg.bins, cfg.n_angles).min(1)


@dataclass(frozen=True, kw_only=True)
class PairScores:
    """Irreducibility of consecutive coordinate pairs (1-2, 2-3, ...) of one point cloud."""

    mixture: list[float]
    """M_ε per pair"""
    separability: list[float]
    """S (bits) per pair"""
    score: float
    """mean over pairs of (1 - M) · S"""
    best_pair: int
    """index i of the pair (i, i+1) with the highest (1 - M) · S"""


def pair_scores(Z: np.ndarray, config: IrreducibilityConfig | None = None) -> PairScores:
    """Score the consecutive column pairs of ``Z`` (n_points, m >= 2), all pairs in one batch."""
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[1] < 2:
        raise ValueError(f"Z must have shape (n_points, m >= 2); got {Z.shape}.")
    clouds = np.stack([Z[:, i:i + 2] for i in range(Z.shape[1] - 1)])  # (m-1, N, 2)
    M = mixture_index(clouds, config)
    S = separability_index(clouds, config)
    per = (1 - M) * S
    return PairScores(mixture=[float(x) for x in M], separability=[float(x) for x in S],
                      score=float(per.mean()), best_pair=int(per.argmax()))

"""Planted feature families for tuning and testing manifold discovery's ranking (no world labels).

One synthetic transcoder layer: decoders ``W`` (n_features, d) and sparse activations ``A``
(n_tokens, n_features), built from family kinds that reproduce what discovery meets in real
dictionaries:

* ``ring``: p values on a circle (optionally with a k = 2 harmonic); features tile it with bump
  tuning; with ``background`` the members also fire weakly, alone or in pairs, on many other
  tokens (the "say a day" features that fire on most rows, mostly weakly);
* ``categorical``: q unordered values, each with a few near-duplicate features of a random
  direction (cities, regions, capitals: clusters at the corners of a simplex);
* ``arc``: an ordered, open variable tiling an arc of ``span`` radians (numbers);
* ``axes``: features firing alone (a mixture of lines); ``blob``: independent dense features (a
  Gaussian-like separable cloud); ``line``: near-identical features with varying intensity.

Every family's decoders share a family direction (an offset), and carry decoder noise.
"""

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

CYCLIC_KINDS = ("ring",)


@dataclass(frozen=True, kw_only=True)
class FamilySpec:
    """One planted family."""

    kind: str
    """'ring', 'categorical', 'arc', 'axes', 'blob' or 'line'"""
    n_features: int
    values: int = 7
    """ring / arc values, categorical categories"""
    rate: float = 0.08
    """share of tokens where the family's variable is present"""
    harmonic: float = 0.0
    """ring: weight of the k = 2 component"""
    background: float = 0.0
    """share of the other tokens on which 1-2 members fire weakly"""
    span: float = np.pi
    """arc: angle covered"""


@dataclass(frozen=True, kw_only=True, eq=False)
class PlantedLayer:
    A: sp.csr_matrix
    """(n_tokens, n_features)"""
    W: np.ndarray
    """(n_features, d)"""
    families: dict[str, list[int]]
    cyclic: list[str] = field(default_factory=list)
    """the names of the ring families (what a ranking should put first)"""


def _plane(d: int, k: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q[:, :k]  # (d, k)


def _tiled(spec: FamilySpec, d: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ring / arc: decoders (F, d) at preferred angles, activations (n, F)."""
    F = spec.n_features
    B = _plane(d, 4, rng)
    closed = spec.kind == "ring"
    span = 2 * np.pi if closed else spec.span
    phi = span * (np.arange(F) + 0.5) / F if closed else span * np.arange(F) / max(F - 1, 1)
    W = np.c_[np.cos(phi), np.sin(phi), spec.harmonic * np.cos(2 * phi), spec.harmonic * np.sin(2 * phi)] @ B.T
    v = rng.integers(0, spec.values, n)
    theta = (2 * np.pi * v / spec.values if closed else span * v / max(spec.values - 1, 1))
    theta = theta + rng.normal(0, 0.05, n)
    width = 2 * np.pi / F if closed else span / max(F - 1, 1)
    gain = rng.uniform(0.5, 1.5, n)[:, None]
    dist = np.angle(np.exp(1j * (theta[:, None] - phi[None])))  # (n, F)
    return W, gain * np.maximum(0.0, 1.0 - np.abs(dist) / (1.5 * width))


def _categorical(spec: FamilySpec, d: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    F, q = spec.n_features, spec.values
    cat_of = np.arange(F) % q  # (F,) category of each feature
    U = rng.standard_normal((q, d)) / np.sqrt(d)
    W = U[cat_of] + 0.3 * rng.standard_normal((F, d)) / np.sqrt(d)
    c = rng.integers(0, q, n)
    return W, rng.uniform(0.5, 1.5, (n, 1)) * (cat_of[None] == c[:, None]) * rng.uniform(0.6, 1.0, (n, F))


def _unstructured(spec: FamilySpec, d: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    F = spec.n_features
    if spec.kind == "line":
        base = rng.standard_normal(d) / np.sqrt(d)
        W = base + 0.2 * rng.standard_normal((F, d)) / np.sqrt(d)
        return W, rng.uniform(0.1, 2.0, (n, 1)) * rng.uniform(0.5, 1.0, (n, F))
    W = rng.standard_normal((F, d)) / np.sqrt(d)
    if spec.kind == "axes":
        pick = rng.integers(0, F, n)
        return W, (np.arange(F)[None] == pick[:, None]) * rng.uniform(0.3, 2.0, (n, 1))
    return W, np.abs(rng.standard_normal((n, F)))  # blob


def planted_families(specs: dict[str, FamilySpec], *, n_tokens: int = 20_000, d: int = 64,
                     seed: int = 0) -> PlantedLayer:
    """One layer holding every family of ``specs`` (columns in spec order)."""
    rng = np.random.default_rng(seed)
    blocks_W, blocks_A, families, start = [], [], {}, 0
    for name, spec in specs.items():
        make = _tiled if spec.kind in ("ring", "arc") else _categorical if spec.kind == "categorical" else _unstructured
        on = rng.random(n_tokens) < spec.rate
        W, acts = make(spec, d, int(on.sum()), rng)
        W = W + 0.6 * rng.standard_normal(d) / np.sqrt(d) * np.linalg.norm(W, axis=1).mean()  # family offset
        W = W + 0.05 * rng.standard_normal(W.shape) / np.sqrt(d)  # decoder noise
        A = np.zeros((n_tokens, spec.n_features))
        A[on] = acts
        if spec.background > 0:
            bg = (~on) & (rng.random(n_tokens) < spec.background)
            for _ in range(2):
                A[bg, rng.integers(0, spec.n_features, int(bg.sum()))] = rng.uniform(0.02, 0.2, int(bg.sum()))
        blocks_W.append(W)
        blocks_A.append(A)
        families[name] = list(range(start, start + spec.n_features))
        start += spec.n_features
    cyclic = [n for n, s in specs.items() if s.kind in CYCLIC_KINDS]
    return PlantedLayer(A=sp.csr_matrix(np.concatenate(blocks_A, 1)), W=np.concatenate(blocks_W),
                        families=families, cyclic=cyclic)


def default_specs() -> dict[str, FamilySpec]:
    """The tuning set: rings (clean, with harmonic, with heavy weak background) against categorical
    families of 5 / 10 values, arcs, mixtures of lines, blobs and lines."""
    return {
        "ring7": FamilySpec(kind="ring", n_features=14, values=7),
        "ring12_harmonic": FamilySpec(kind="ring", n_features=24, values=12, harmonic=0.4),
        "ring7_background": FamilySpec(kind="ring", n_features=40, values=7, rate=0.05, background=0.6),
        "ring12_background": FamilySpec(kind="ring", n_features=24, values=12, rate=0.05, background=0.4),
        "categorical10": FamilySpec(kind="categorical", n_features=12, values=10),
        "categorical5": FamilySpec(kind="categorical", n_features=10, values=5),
        "categorical10_dup": FamilySpec(kind="categorical", n_features=30, values=10, rate=0.15),
        "arc180": FamilySpec(kind="arc", n_features=11, values=11, span=np.pi),
        "arc270": FamilySpec(kind="arc", n_features=11, values=11, span=1.5 * np.pi),
        "axes": FamilySpec(kind="axes", n_features=8),
        "blob": FamilySpec(kind="blob", n_features=8, rate=0.2),
        "line": FamilySpec(kind="line", n_features=6, rate=0.2),
    }

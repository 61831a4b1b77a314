"""Causal check of a fitted manifold on the real model: class-mean substitution (DRAFT, phase 2).

For a point of value ``v`` at the fit's residual layer and position, substitute the class mean of
another value ``v'`` -- ``a' = a - μ_v + μ_v'`` -- restricted to

* the fitted m-dimensional subspace: add ``U Uᵀ (μ_v' - μ_v)``;
* a random m-dimensional subspace (seeded, orthonormal): add ``R Rᵀ (μ_v' - μ_v)``;
* nothing (full-vector patching): add ``μ_v' - μ_v``;

and count how often the model's answer becomes the one implied by ``v'``. A manifold whose fitted
subspace does no better than a random one is a readout that mediates nothing (``mediates=False``).

The vector is added to residual layer L (0 = embedding output, k = output of block k-1) at the
position with :func:`tracer.interventions.add_to_residual`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analyses.manifolds.fit import ManifoldFitResult
from analyses.results import register_result
from tracer.interventions import VectorAddition, add_to_residual, feature_intervention, prepare
from tracer.models import LoadedModel
from tracer.transcoders.base import Transcoders

KINDS: tuple[str, ...] = ("fitted", "random", "full")


@dataclass(frozen=True, kw_only=True)
class SubstitutionCase:
    """One prompt and the substitutions to try on it."""

    tokens: Sequence[int]
    """prompt token ids (BOS included)"""
    position: int
    """where the fit's variable lives (e.g. -1 for the answer position)"""
    value: int
    """the variable's true value at that position"""
    targets: dict[int, int]
    """v' -> the token id the answer should become when v is replaced by v'"""


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class CausalResult:
    """Success rates of class-mean substitution (share of (prompt, v') pairs whose answer became the target)."""

    SCHEMA_VERSION = 1

    fitted_success: float
    random_success: float
    full_success: float
    n: int
    """substitutions per kind"""
    n_components: int
    layer: int
    mediates: bool
    """fitted_success exceeds random_success by at least ``margin``"""
    outcomes: np.ndarray
    """(n, 3) bool: success per substitution for fitted, random, full"""


def projector(basis: np.ndarray) -> np.ndarray:
    """(d, d) orthogonal projector onto the columns of ``basis`` (d, m) (orthonormalised first)."""
    q, _ = np.linalg.qr(basis)
    return q @ q.T


def random_basis(d: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """(d, m) a uniformly random orthonormal basis."""
    q, r = np.linalg.qr(rng.standard_normal((d, m)))
    return q * np.sign(np.diag(r))


def substitution_vectors(fit: ManifoldFitResult, v: int, v_new: int, random_proj: np.ndarray) -> dict[str, np.ndarray]:
    """The three vectors to add for replacing value v by v_new."""
    delta = fit.class_means[v_new] - fit.class_means[v]  # (d,)
    return {"fitted": fit.basis @ (fit.basis.T @ delta), "random": random_proj @ delta, "full": delta}


def residual_addition(layer: int, position: int, vector: torch.Tensor) -> VectorAddition:
    """Add ``vector`` to residual layer ``layer`` at ``position``."""
    return add_to_residual(layer, position, vector)


def causal_check(loaded: LoadedModel, transcoders: Transcoders, fit: ManifoldFitResult,
                 cases: Sequence[SubstitutionCase], *, seed: int = 0, margin: float = 0.5,
                 freeze_attention: bool = False) -> CausalResult:
    """Run every substitution of every case on the real model (one random subspace per case, seeded)."""
    if fit.layer is None:
        raise ValueError("fit.layer must be set (the residual layer the fit was made at); got None.")
    rng = np.random.default_rng(seed)
    outcomes = []
    for case in cases:
        clean = prepare(loaded, transcoders, list(case.tokens))
        P_rand = projector(random_basis(fit.class_means.shape[1], fit.n_components, rng))
        for v_new, target in case.targets.items():
            vecs = substitution_vectors(fit, case.value, v_new, P_rand)
            row = []
            for kind in KINDS:
                vec = torch.as_tensor(vecs[kind], dtype=loaded.dtype)
                out = feature_intervention(loaded, transcoders, clean.tokens,
                                           [residual_addition(fit.layer, case.position, vec)],
                                           freeze_attention=freeze_attention, return_activations=False, clean=clean)
                row.append(int(out.logits[-1].argmax()) == target)
            outcomes.append(row)
    arr = np.array(outcomes, dtype=bool).reshape(-1, len(KINDS))  # (n, 3)
    rates = arr.mean(0) if len(arr) else np.zeros(len(KINDS))
    return CausalResult(fitted_success=float(rates[0]), random_success=float(rates[1]),
                        full_success=float(rates[2]), n=len(arr), n_components=fit.n_components, layer=fit.layer,
                        mediates=bool(rates[0] - rates[1] >= margin), outcomes=arr)

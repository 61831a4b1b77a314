"""Causal checks of a fitted manifold on the real model: class-mean substitution and steering.

Both add a vector to residual layer L (0 = embedding output, k = output of block k-1, n_layers =
before the final norm) at one position with :func:`tracer.interventions.add_to_residual`, run the
real model (attention free by default: effects propagate) and ask whether the answer became the
token the change implies.

**Substitution** (research note §7b.7). For a point of value ``v``, replace its class mean by that
of ``v'`` -- ``a' = a - μ_v + μ_v'`` -- restricted to

* the fitted m-dimensional subspace: add ``U Uᵀ (μ_v' - μ_v)``;
* a random m-dimensional subspace (seeded, orthonormal, one per case): add ``R Rᵀ (μ_v' - μ_v)``;
* nothing (full-vector patching): add ``μ_v' - μ_v``.

A manifold whose fitted subspace does no better than a random one (by less than ``margin``) is a
readout that mediates nothing (``mediates=False``).

**Steering** (§7c.3 iii). Move the point's subspace coordinates onto the fitted curve at the
target value's angle: add ``U (z* - Uᵀ(x - c))`` with ``z*`` the curve point at ``u_v'`` in subspace
coordinates; everything outside the subspace is kept. Unlike substitution it needs neither the
point's value nor the class means, only the curve and the clean vector ``x``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analyses.base import as_integers, check_number
from analyses.manifolds.fit import ManifoldFitResult
from analyses.results import check_shapes, register_result
from tracer.interventions import CleanRun, VectorAddition, add_to_residual, feature_intervention, prepare
from tracer.models import LoadedModel
from tracer.transcoders.base import Transcoders

KINDS: tuple[str, ...] = ("fitted", "random", "full")
MEDIATION_MARGIN = 0.5
"""A fitted subspace mediates when its substitution success beats the random subspace's by this much."""


@dataclass(frozen=True, kw_only=True)
class SubstitutionCase:
    """One prompt and the substitutions (or steering targets) to try on it."""

    tokens: Sequence[int]
    """prompt token ids (BOS included)"""
    position: int
    """where the fit's variable lives (e.g. -1 for the answer position)"""
    value: int
    """the variable's true value at that position"""
    targets: dict[int, int]
    """v' -> the token id the answer should become when v is replaced by v'"""
    vector: np.ndarray | None = None
    """(d_model,) the clean residual vector at the fit's layer and position (steering needs it)"""


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class CausalResult:
    """Success rates of class-mean substitution (share of (prompt, v') pairs whose answer became the target)."""

    SCHEMA_VERSION = 2

    fitted_success: float
    random_success: float
    full_success: float
    n: int
    """substitutions per kind"""
    n_cases: int
    """prompts"""
    n_components: int
    layer: int
    mediates: bool
    """fitted_success exceeds random_success by at least ``margin``"""
    outcomes: np.ndarray
    """(n, 3) bool: success per substitution for fitted, random, full"""
    case_index: np.ndarray
    """(n,) the case (prompt) each substitution belongs to"""

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file)."""
        check_shapes(self, {"outcomes": (self.n, len(KINDS)), "case_index": (self.n,)},
                     kinds={"outcomes": "b", "case_index": "iu"})

    def summary(self) -> dict[str, object]:
        return {"fitted_success": self.fitted_success, "random_success": self.random_success,
                "full_success": self.full_success, "n": self.n, "n_prompts": self.n_cases,
                "n_components": self.n_components, "layer": self.layer, "mediates": self.mediates}


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class SteeringResult:
    """How often the answer followed a move along the fitted curve."""

    SCHEMA_VERSION = 1

    success_rate: float
    n: int
    """steering runs ((prompt, target) pairs)"""
    n_cases: int
    layer: int
    outcomes: np.ndarray
    """(n,) bool"""
    case_index: np.ndarray
    """(n,) the case each run belongs to"""

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file)."""
        check_shapes(self, {"outcomes": (self.n,), "case_index": (self.n,)},
                     kinds={"outcomes": "b", "case_index": "iu"})

    def summary(self) -> dict[str, object]:
        return {"success_rate": self.success_rate, "n": self.n, "n_prompts": self.n_cases, "layer": self.layer}


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


def steering_vector(fit: ManifoldFitResult, x: np.ndarray, v_new: int) -> np.ndarray:
    """(d,) the vector that puts ``x``'s subspace coordinates on the curve at value ``v_new``'s coordinate."""
    u = fit.value_coordinate(np.array([v_new]))  # (1,)
    z_target = fit.project(fit.curve(u))[0]  # (m,)
    z_now = fit.project(np.asarray(x, dtype=np.float64)[None])[0]  # (m,)
    return fit.basis @ (z_target - z_now)  # (d,)


def steered_logits(loaded: LoadedModel, transcoders: Transcoders, clean: CleanRun, layer: int, position: int,
                   vector: np.ndarray, *, freeze_attention: bool = False) -> torch.Tensor:
    """(d_vocab,) the real model's last-position logits with ``vector`` (d_model,) added to residual
    ``layer`` at ``position``."""
    add: VectorAddition = add_to_residual(layer, position, torch.as_tensor(vector, dtype=loaded.dtype))
    out = feature_intervention(loaded, transcoders, clean.tokens, [add], freeze_attention=freeze_attention,
                               return_activations=False, clean=clean)
    return out.logits[-1]  # (d_vocab,)


def _answer_is(loaded: LoadedModel, transcoders: Transcoders, clean: CleanRun, layer: int, position: int,
               vector: np.ndarray, target: int, freeze_attention: bool) -> bool:
    """Run the real model with ``vector`` added at (layer, position); is the last-position argmax ``target``?"""
    logits = steered_logits(loaded, transcoders, clean, layer, position, vector, freeze_attention=freeze_attention)
    return int(logits.argmax()) == target


def _layer_of(fit: ManifoldFitResult) -> int:
    if fit.layer is None:
        raise ValueError("fit.layer must be set (the residual layer the fit was made at); got None.")
    return fit.layer


def check_cases(cases: Sequence[SubstitutionCase], fit: ManifoldFitResult, d_vocab: int, *,
                steering: bool = False) -> None:
    """Refuse what would silently check the wrong thing: no cases, a value or target value outside
    ``[0, fit.period)`` (a negative one would wrap to another class mean), a target token outside
    ``[0, d_vocab)``, no targets; with ``steering``, a case without its (d_model,) clean vector."""
    if len(cases) == 0:
        raise ValueError("cases must hold at least one SubstitutionCase; got none. A check of nothing has no "
                         "success rate.")
    p, d_model = fit.period, fit.class_means.shape[1]
    for i, case in enumerate(cases):
        if not steering:  # steering reads only the curve, never the point's value
            check_number(f"cases[{i}].value", case.value, lo=0, hi=p, hi_open=True, integer=True)
        if not isinstance(case.targets, Mapping) or not case.targets:
            raise ValueError(f"cases[{i}].targets must be a non-empty mapping value -> token id; got "
                             f"{case.targets!r}.")
        for v_new, token in case.targets.items():
            check_number(f"cases[{i}].targets value", v_new, lo=0, hi=p, hi_open=True, integer=True)
            check_number(f"cases[{i}].targets[{v_new}] token id", token, lo=0, hi=d_vocab, hi_open=True,
                         integer=True)
        if steering:
            _check_vector(i, case.vector, d_model)


def _check_vector(i: int, vector: np.ndarray | None, d_model: int) -> None:
    if vector is None:
        raise ValueError(f"cases must carry their clean residual vector to be steered; got vector=None for case {i}.")
    if np.shape(vector) != (d_model,):
        raise ValueError(f"cases[{i}].vector must have shape ({d_model},) (the fit's d_model); got "
                         f"{np.shape(vector)}.")


def clean_runs(loaded: LoadedModel, transcoders: Transcoders, cases: Sequence[SubstitutionCase]) -> list[CleanRun]:
    """The clean run of every case (reusable by :func:`causal_check` and :func:`steer_check`)."""
    return [prepare(loaded, transcoders, list(case.tokens)) for case in cases]


def _cleans(loaded: LoadedModel, transcoders: Transcoders, cases: Sequence[SubstitutionCase],
            cleans: Sequence[CleanRun] | None) -> Sequence[CleanRun]:
    if cleans is None:
        return clean_runs(loaded, transcoders, cases)
    if len(cleans) != len(cases):
        raise ValueError(f"cleans must hold one clean run per case ({len(cases)}); got {len(cleans)}.")
    return cleans


def causal_check(loaded: LoadedModel, transcoders: Transcoders, fit: ManifoldFitResult,
                 cases: Sequence[SubstitutionCase], *, seed: int = 0, margin: float = MEDIATION_MARGIN,
                 freeze_attention: bool = False, cleans: Sequence[CleanRun] | None = None) -> CausalResult:
    """Run every substitution of every case on the real model (one random subspace per case, seeded)."""
    layer = _layer_of(fit)
    check_cases(cases, fit, loaded.d_vocab)
    rng = np.random.default_rng(seed)
    outcomes, index = [], []
    for i, (case, clean) in enumerate(zip(cases, _cleans(loaded, transcoders, cases, cleans))):
        P_rand = projector(random_basis(fit.class_means.shape[1], fit.n_components, rng))
        for v_new, target in case.targets.items():
            vecs = substitution_vectors(fit, case.value, v_new, P_rand)
            outcomes.append([_answer_is(loaded, transcoders, clean, layer, case.position, vecs[k], target,
                                        freeze_attention) for k in KINDS])
            index.append(i)
    arr = np.array(outcomes, dtype=bool).reshape(-1, len(KINDS))  # (n, 3), n >= 1 (check_cases)
    rates = arr.mean(0)
    return CausalResult(fitted_success=float(rates[0]), random_success=float(rates[1]),
                        full_success=float(rates[2]), n=len(arr), n_cases=len(cases), n_components=fit.n_components,
                        layer=layer, mediates=bool(rates[0] - rates[1] >= margin), outcomes=arr,
                        case_index=np.array(index, dtype=np.int64))


def steer_check(loaded: LoadedModel, transcoders: Transcoders, fit: ManifoldFitResult,
                cases: Sequence[SubstitutionCase], *, freeze_attention: bool = False,
                cleans: Sequence[CleanRun] | None = None) -> SteeringResult:
    """Steer every case to each of its targets along the fitted curve (cases need ``vector``)."""
    layer = _layer_of(fit)
    check_cases(cases, fit, loaded.d_vocab, steering=True)
    vectors = [case.vector for case in cases]
    outcomes, index = [], []
    for i, (case, x, clean) in enumerate(zip(cases, vectors, _cleans(loaded, transcoders, cases, cleans))):
        for v_new, target in case.targets.items():
            vec = steering_vector(fit, np.asarray(x), v_new)
            outcomes.append(_answer_is(loaded, transcoders, clean, layer, case.position, vec, target,
                                       freeze_attention))
            index.append(i)
    arr = np.array(outcomes, dtype=bool)
    return SteeringResult(success_rate=float(arr.mean()), n=len(arr),
                          n_cases=len(cases), layer=layer, outcomes=arr, case_index=np.array(index, dtype=np.int64))


@dataclass(frozen=True, kw_only=True, eq=False)
class PromptSteering:
    """One prompt steered to every value of a fitted curve: what the model then answers."""

    value: int
    """the value the fit reads off the clean vector"""
    targets: np.ndarray
    """(n,) the values steered to"""
    top_token: np.ndarray
    """(n,) the last-position argmax token id after steering to each target"""
    top_prob: np.ndarray
    """(n,) its probability"""
    clean_token: int
    """the clean run's argmax token id"""
    clean_prob: float


def steer_prompt(loaded: LoadedModel, transcoders: Transcoders, fit: ManifoldFitResult, tokens: Sequence[int],
                 position: int, x: np.ndarray, *, targets: Sequence[int] | None = None,
                 freeze_attention: bool = False) -> PromptSteering:
    """Steer one prompt along the fitted curve (see the module docstring) to each of ``targets``
    (default: every value) and read the model's answer; ``x`` (d_model,) is the clean residual vector
    at the fit's layer and ``position``."""
    layer = _layer_of(fit)
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (fit.class_means.shape[1],):
        raise ValueError(f"x must be one residual vector of shape ({fit.class_means.shape[1]},); got {x.shape}.")
    values = list(range(fit.period)) if targets is None else as_integers("targets", list(targets)).ravel().tolist()
    bad = [v for v in values if not 0 <= v < fit.period]
    if bad:
        raise ValueError(f"targets must be values in [0, {fit.period}); got {bad[0]}.")
    clean = prepare(loaded, transcoders, list(tokens))
    clean_p = clean.cache.logits[-1].float().softmax(-1).cpu()  # (d_vocab,) the clean run's, already computed
    with torch.no_grad():
        steered = torch.stack([steered_logits(loaded, transcoders, clean, layer, position,
                                              steering_vector(fit, x, v), freeze_attention=freeze_attention)
                               for v in values]).float().softmax(-1).cpu()  # (n, d_vocab)
    top_p, top_i = steered.max(-1)
    return PromptSteering(value=int(fit.predict_value(x[None])[0]), targets=np.array(values, dtype=np.int64),
                          top_token=top_i.numpy().astype(np.int64), top_prob=top_p.double().numpy(),
                          clean_token=int(clean_p.argmax()), clean_prob=float(clean_p.max()))

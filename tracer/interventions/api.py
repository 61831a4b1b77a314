"""Feature interventions on the real model (circuit-tracer's ``feature_intervention``).

An intervention changes a transcoder feature's activation -- ``set`` it to a value, ``scale`` it
or ``add`` to it -- by adding ``(new - current) * W_dec[feature]`` to the real model's MLP output
at the transcoder's output location (a CLT feature: at every layer it writes to). The model
itself runs, not the replacement model. What else is held fixed:

* ``freeze_attention=True``: attention patterns are replayed from a clean run (V and O live);
* ``constrained_layers``: MLP outputs in those layers are frozen to their clean values (a
  transcoder skip term is recomputed from the live input), the ``current`` activation of an
  intervened feature is its clean one, and CLT features write only into those layers. If they
  cover every layer, every norm's 1/rms is frozen too: the model is then the linearised "local
  replacement model" of attribution, and a source's adjacency column is exactly the change it
  causes (see :func:`measured_columns`);
* ``constrained_layers=None``: effects propagate; each layer's ``current`` activations are read
  by its encoder from the intervened residual stream.

Unlike circuit-tracer, ``freeze_attention=False`` is honoured with ``constrained_layers`` too.
Position 0 (BOS) reads as activation 0, as in circuit-tracer. Everything frozen is frozen at
the prompt positions only; tokens generated after an intervention run live (see
:func:`feature_intervention_generate`). The hook machinery is in :mod:`tracer.interventions.patched`.
"""

import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.interventions.clean import CleanRun, prepare, same_transcoders
from tracer.interventions.patched import Plan, Position, run_patched
from tracer.models.loaded import LoadedModel
from tracer.transcoders.base import Transcoders
from tracer.weights import MAX_ABS_WEIGHT, check_finite_run

logger = logging.getLogger(__name__)

Mode = Literal["set", "scale", "add"]
MODES: tuple[str, ...] = ("set", "scale", "add")


@dataclass(frozen=True, kw_only=True, eq=False)
class Intervention:
    """Change one transcoder feature's activation at some positions."""

    layer: int
    """source layer of the feature"""
    position: Position
    """one position, several, or a slice (``slice(k, None)`` also reaches generated tokens)"""
    feature: int
    """feature index in that layer's transcoder"""
    value: float
    """the new activation (set), the factor (scale) or the increment (add)"""
    mode: Mode = "set"
    """'set', 'scale' or 'add'; several interventions on one feature compose in order"""


@dataclass(frozen=True, kw_only=True, eq=False)
class VectorAddition:
    """Add a vector to the residual stream at one site (how error and token nodes are perturbed)."""

    site: Literal["output", "embedding", "residual"]
    """'output': a layer's transcoder output location; 'embedding': the residual entering layer 0;
    'residual': residual-stream layer ``layer`` (0 = embedding output, k = output of block k-1,
    n_layers = the last block's output, before the final norm)"""
    layer: int
    """the layer of an 'output' site, the residual layer of a 'residual' site (0 for 'embedding')"""
    position: int
    vector: Tensor
    """(d_model,) as it enters the stream at that site (Gemma embeddings: already x sqrt(d_model))"""


def add_to_output_location(layer: int, position: int, vector: Tensor) -> VectorAddition:
    """Add ``vector`` (d_model,) at ``layer``'s transcoder output location (an error node's site)."""
    return VectorAddition(site="output", layer=layer, position=position, vector=vector)


def add_to_embedding(position: int, vector: Tensor) -> VectorAddition:
    """Add ``vector`` (d_model,) to the residual stream entering layer 0 (a token node's site)."""
    return VectorAddition(site="embedding", layer=0, position=position, vector=vector)


def add_to_residual(layer: int, position: int, vector: Tensor) -> VectorAddition:
    """Add ``vector`` (d_model,) to residual-stream layer ``layer`` (0..n_layers) at ``position``.

    Residual layer 0 is the embedding output (same site as :func:`add_to_embedding`), k the output
    of block k-1, n_layers the last block's output before the final norm. Downstream blocks see
    the change (attention frozen or free, as the call says).
    """
    return VectorAddition(site="residual", layer=layer, position=position, vector=vector)


# ----------------------------------------------------------------------------- validation
def _bad(name: str, constraint: str, got: object, hint: str = "") -> WorkbenchError:
    return WorkbenchError(f"{name} must be {constraint}; got {got!r}. {hint}".rstrip())


def _scalar(x: object) -> object:
    """A one-element tensor or a numpy scalar as the Python number it holds (so that the index and value
    taken from a graph's arrays, e.g. ``layer, pos, feature = graph.active_features[i]``, are accepted)."""
    if isinstance(x, Tensor) and x.numel() == 1 and x.dtype != torch.bool:
        return x.item()
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return x


def _check_int(name: str, x: object, lo: int, hi: int, hint: str) -> int:
    x = _scalar(x)
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x < hi:
        raise _bad(name, f"an integer in [{lo}, {hi})", x, hint)
    return x


def _check_position(pos: object, n_pos: int) -> Position:
    hint = f"The prompt has {n_pos} positions (BOS included); negative positions count from its end."
    if isinstance(pos, slice):
        for part in (pos.start, pos.stop):
            if part is not None and (isinstance(part, bool) or not isinstance(part, int)):
                raise _bad("intervention position slice bounds", "integers or None", pos, hint)
        if pos.step is not None and (not isinstance(pos.step, int) or pos.step <= 0):
            raise _bad("intervention position slice step", "a positive integer or None", pos.step, hint)
        if pos.stop is not None and not range(n_pos)[pos]:
            raise _bad("intervention position slice", "non-empty on the prompt (or open-ended)", pos, hint)
        return pos
    if isinstance(pos, Tensor) and pos.dim() == 0:
        return _check_int("intervention position", pos, -n_pos, n_pos, hint)
    if isinstance(pos, (Tensor, np.ndarray, list, tuple)):
        t = torch.as_tensor(pos)
        if t.dim() != 1 or t.numel() == 0 or t.is_floating_point() or t.dtype == torch.bool:
            raise _bad("intervention positions", "a non-empty 1-D list of integers", pos, hint)
        for p in t.tolist():
            _check_int("intervention position", p, -n_pos, n_pos, hint)
        return t.long()
    return _check_int("intervention position", pos, -n_pos, n_pos, hint)


def _check_value(value: object) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad("intervention value", "a finite number", value, "NaN and infinities are not allowed.")
    if abs(value) > MAX_ABS_WEIGHT:
        raise _bad("intervention value", f"a number with |value| <= {MAX_ABS_WEIGHT:.2g}", value,
                   "Larger values overflow float32 in the model's norms (every probability would be garbage).")
    return float(value)


def check_intervention(item: object, tc: Transcoders, n_pos: int) -> Intervention | VectorAddition:
    """Validate an Intervention, a VectorAddition or a (layer, pos, feature, value[, mode]) tuple."""
    L = tc.n_layers
    if isinstance(item, VectorAddition):
        return _check_addition(item, L, tc.d_model, n_pos)
    if isinstance(item, tuple) and len(item) in (4, 5):
        item = Intervention(layer=item[0], position=item[1], feature=item[2], value=item[3],
                            mode=item[4] if len(item) == 5 else "set")
    if not isinstance(item, Intervention):
        raise _bad("an intervention", "an Intervention, a VectorAddition or a (layer, position, feature, "
                   "value) tuple", item)
    layer = _check_int("intervention layer", item.layer, 0, L, f"The model has {L} layers.")
    width = tc.layers[layer].d_transcoder
    feature = _check_int("intervention feature", item.feature, 0, width,
                         f"Layer {layer}'s transcoder has {width} features.")
    if item.mode not in MODES:
        raise _bad("intervention mode", "'set', 'scale' or 'add'", item.mode)
    return Intervention(layer=layer, position=_check_position(item.position, n_pos), feature=feature,
                        value=_check_value(item.value), mode=item.mode)


def _check_addition(item: VectorAddition, n_layers: int, d_model: int, n_pos: int) -> VectorAddition:
    if item.site not in ("output", "embedding", "residual"):
        raise _bad("vector addition site", "'output', 'embedding' or 'residual'", item.site)
    top = n_layers + 1 if item.site == "residual" else n_layers
    layer = _check_int("vector addition layer", item.layer, 0, top,
                       f"The model has {n_layers} layers (residual layers 0..{n_layers}).")
    pos = _check_int("vector addition position", item.position, -n_pos, n_pos,
                     f"The prompt has {n_pos} positions.")
    v = torch.as_tensor(item.vector)
    if tuple(v.shape) != (d_model,):
        raise _bad("vector addition vector shape", f"({d_model},) (d_model)", tuple(v.shape))
    if not torch.isfinite(v).all():
        raise _bad("vector addition vector", "finite", "NaN/inf", "Check how the vector was computed.")
    largest = float(v.abs().max()) if v.numel() else 0.0
    if largest > MAX_ABS_WEIGHT:
        raise _bad("vector addition vector", f"finite with |x| <= {MAX_ABS_WEIGHT:.2g}", float(f"{largest:.3g}"),
                   "Larger entries overflow float32 in the model's norms.")
    return VectorAddition(site=item.site, layer=layer, position=pos % n_pos, vector=v)


def constrained_set(spec: object, n_layers: int) -> frozenset[int] | None:
    """None | 'all' | range | iterable of layer indices -> a set of layers (None: unconstrained)."""
    if spec is None:
        return None
    if spec == "all":
        return frozenset(range(n_layers))
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise _bad("constrained_layers", "None, 'all', a range or a list of layer indices", spec)
    layers = frozenset(_check_int("constrained layer", x, 0, n_layers, f"The model has {n_layers} layers.")
                       for x in spec)
    if not layers:
        raise _bad("constrained_layers", "non-empty (use None for no constraint)", spec)
    return layers




# ----------------------------------------------------------------------------- interventions
@dataclass(frozen=True, kw_only=True, eq=False)
class InterventionResult:
    """The intervened run of the real model, with the clean logits for comparison."""

    tokens: Tensor
    """(n_pos,)"""
    logits: Tensor
    """(n_pos, d_vocab) intervened logits (after any final softcap)"""
    clean_logits: Tensor
    """(n_pos, d_vocab) logits of the clean run"""
    activations: Tensor | None
    """(n_layers, n_pos, d_transcoder) what each layer's encoder reads in the intervened run (an
    intervened feature shows its encoder's reading, not the value it was set to), BOS zeroed;
    dense or sparse COO; None unless return_activations"""
    pre_activations: bool
    """``activations`` holds pre-activations (apply_activation_function=False)"""
    final_hidden: Tensor
    """(n_pos, d_model) the final norm's output (what the unembedding reads)"""


def _build_plan(loaded: LoadedModel, clean: CleanRun, items: Sequence[object], *, freeze_attention: bool,
                constrained_layers: object, record: Literal["acts", "pre", "none"]) -> Plan:
    tc = clean.transcoders
    L, P, d = tc.n_layers, clean.n_pos, loaded.d_model
    single = isinstance(items, tuple) and bool(items) and not isinstance(items[0], (tuple, Intervention,
                                                                                  VectorAddition))
    if single or isinstance(items, (Intervention, VectorAddition)) or not isinstance(items, Iterable):
        raise _bad("interventions", "a list of interventions", items, "Wrap a single one in a list.")
    checked = [check_intervention(it, tc, P) for it in items]
    constrained = constrained_set(constrained_layers, L) or frozenset()
    features: dict[int, list[Intervention]] = {}
    out_adds = torch.zeros(L, P, d, dtype=loaded.dtype, device=loaded.device)  # (L, P, d)
    resid_adds = torch.zeros(L + 1, P, d, dtype=loaded.dtype, device=loaded.device)  # (L + 1, P, d)
    n_out = n_resid = 0
    for it in checked:
        if isinstance(it, Intervention):
            features.setdefault(it.layer, []).append(it)
            continue
        vec = it.vector.to(device=loaded.device, dtype=loaded.dtype)
        if it.site in ("embedding", "residual"):
            resid_adds[it.layer, it.position] += vec
            n_resid += 1
        else:
            out_adds[it.layer, it.position] += vec
            n_out += 1
    all_layers = frozenset(range(L))
    _warn_unwritten(features, tc, constrained)
    return Plan(clean=clean, features=features, out_adds=out_adds if n_out else None,
                resid_adds=resid_adds if n_resid else None,
                freeze_attention=bool(freeze_attention), freeze_norms=constrained == all_layers,
                constrained=constrained, write_layers=constrained or all_layers,
                encode_layers=all_layers if record != "none" else frozenset(features), record=record)


def _warn_unwritten(features: dict[int, list[Intervention]], tc: Transcoders,
                    constrained: frozenset[int]) -> None:
    """circuit-tracer writes deltas only into constrained layers: say so when that drops one."""
    for layer in features:
        targets = range(layer, tc.n_layers) if tc.kind == "clt" else range(layer, layer + 1)
        if constrained and not constrained.intersection(targets):
            warnings.warn(f"an intervention at layer {layer} writes to no layer in constrained_layers "
                          f"{sorted(constrained)}; it has no effect at the prompt positions. Include layer "
                          f"{layer} in constrained_layers.", stacklevel=4)


def _stack(recorded: dict[int, Tensor], n_layers: int, sparse: bool) -> Tensor:
    """Per-layer (T, d_tc) -> (n_layers, T, max d_tc), narrower layers zero-padded."""
    width = max(t.shape[1] for t in recorded.values())
    acts = torch.stack([torch.nn.functional.pad(recorded[i], (0, width - recorded[i].shape[1]))
                        for i in range(n_layers)])  # (L, T, width)
    return acts.to_sparse().coalesce() if sparse else acts


_OVERFLOW = "The interventions' values overflow in this dtype: use smaller ones, or float32."


def _check_flags(**flags: object) -> None:
    """Each flag must be a bool (``"no"`` would be true)."""
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise _bad(name, "True or False", value)


def _clean_for(loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | Sequence[int],
               clean: CleanRun | None) -> CleanRun:
    if clean is None:
        return prepare(loaded, transcoders, tokens)
    got = torch.as_tensor(tokens).reshape(-1).cpu()
    if not torch.equal(got, clean.tokens.cpu()):
        raise _bad("clean", "a CleanRun of the same tokens", "a run of other tokens",
                   "Call prepare() with these tokens.")
    run_dtype = clean.replacement.feature_in.dtype
    if clean.model_id != loaded.model_id or run_dtype != loaded.dtype:
        raise WorkbenchError(f"clean must be a CleanRun of this model; got a run of {clean.model_id!r} in {run_dtype}. "
                             f"Call prepare() with this model ({loaded.model_id!r} in {loaded.dtype}).")
    if not same_transcoders(clean.transcoders, transcoders):
        raise WorkbenchError(f"clean must be a CleanRun of these transcoders; got a run of "
                             f"{clean.transcoders.source!r} ({clean.transcoders.kind}). Call prepare() with these "
                             "transcoders.")
    return clean


def feature_intervention(
    loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | Sequence[int],
    interventions: Sequence[object], *, freeze_attention: bool = True, constrained_layers: object = None,
    apply_activation_function: bool = True, return_activations: bool = True, sparse: bool = False,
    clean: CleanRun | None = None,
) -> InterventionResult:
    """Run the real model on ``tokens`` (BOS included) with ``interventions`` applied.

    interventions: :class:`Intervention` s, ``(layer, position, feature, value[, mode])`` tuples
    (mode 'set' by default, as circuit-tracer's) and :class:`VectorAddition` s.
    constrained_layers: None (effects propagate), 'all', a range or a list of layers.
    clean: a :func:`prepare` d run of the same tokens, model and transcoders, to reuse across calls.
    """
    _check_flags(freeze_attention=freeze_attention, apply_activation_function=apply_activation_function,
                 return_activations=return_activations, sparse=sparse)
    clean = _clean_for(loaded, transcoders, tokens, clean)
    record: Literal["acts", "pre", "none"] = "none"
    if return_activations:
        record = "acts" if apply_activation_function else "pre"
    plan = _build_plan(loaded, clean, interventions, freeze_attention=freeze_attention,
                       constrained_layers=constrained_layers, record=record)
    run = run_patched(loaded, plan, clean.tokens)
    check_finite_run([("intervened logits", run.logits)], loaded, clean.transcoders, _OVERFLOW)
    acts = _stack(run.recorded, loaded.n_layers, sparse) if return_activations else None
    return InterventionResult(tokens=clean.tokens, logits=run.logits, clean_logits=clean.cache.logits,
                              activations=acts, pre_activations=not apply_activation_function,
                              final_hidden=run.final_hidden)


# ----------------------------------------------------------------------------- generation
@dataclass(frozen=True, kw_only=True, eq=False)
class GenerationResult:
    """A continuation generated with interventions applied."""

    tokens: Tensor
    """(n_pos + n_new,) prompt and continuation"""
    new_tokens: Tensor
    """(n_new,)"""
    logits: Tensor
    """(n_new, d_vocab) the logits each new token was chosen from"""
    text: str | None
    """the decoded continuation (None without a tokenizer)"""


def _check_generation(loaded: LoadedModel, n_pos: int, max_new_tokens: object, temperature: object) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise _bad("max_new_tokens", "an integer >= 1", max_new_tokens)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise _bad("temperature", "a finite number > 0", temperature)
    total = n_pos + max_new_tokens
    if loaded.max_positions is not None and total > loaded.max_positions:
        raise _bad("prompt length + max_new_tokens", f"<= the model's context ({loaded.max_positions})",
                   total, "Generate fewer tokens.")
    adapter = loaded.adapter
    window = adapter.window(loaded.config)
    if window is not None and n_pos <= window < total:  # a prompt over the window has its own message
        raise _bad("prompt length + max_new_tokens", f"<= {adapter.name}'s {adapter.window_key} ({window})", total,
                   f"The prompt has {n_pos} tokens: " + (f"generate at most {window - n_pos}" if window > n_pos else
                                                          "it fills the window; shorten it to generate")
                   + " (beyond the window, local and global layers differ).")
    loaded.adapter.check_config(loaded.config, n_pos=total)


def _eos_ids(loaded: LoadedModel) -> set[int]:
    eos = getattr(loaded.config, "eos_token_id", None)
    return set() if eos is None else ({int(eos)} if isinstance(eos, int) else {int(e) for e in eos})


def feature_intervention_generate(
    loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | Sequence[int],
    interventions: Sequence[object], max_new_tokens: int = 20, *, freeze_attention: bool = True,
    constrained_layers: object = None, do_sample: bool = False, temperature: float = 1.0, seed: int = 0,
    stop_at_eos: bool = True, clean: CleanRun | None = None,
) -> GenerationResult:
    """Generate token by token (one full forward per token) with ``interventions`` applied.

    The prompt positions are treated exactly as in :func:`feature_intervention` at every step;
    generated positions run live (no freezing, effects propagate), and open-ended position
    slices (``slice(k, None)``) also reach them. Greedy unless ``do_sample`` (seeded).
    """
    _check_flags(freeze_attention=freeze_attention, do_sample=do_sample, stop_at_eos=stop_at_eos)
    clean = _clean_for(loaded, transcoders, tokens, clean)
    _check_generation(loaded, clean.n_pos, max_new_tokens, temperature)
    plan = _build_plan(loaded, clean, interventions, freeze_attention=freeze_attention,
                       constrained_layers=constrained_layers, record="none")
    seq = clean.tokens.to(loaded.device)
    gen = torch.Generator(device=loaded.device).manual_seed(int(seed))
    eos, step_logits = _eos_ids(loaded), []
    for _ in range(max_new_tokens):
        last = run_patched(loaded, plan, seq).logits[-1]  # (d_vocab,)
        check_finite_run([("generated logits", last)], loaded, clean.transcoders, _OVERFLOW)
        step_logits.append(last)
        if do_sample:
            probs = torch.softmax(last.float() / temperature, -1)
            nxt = torch.multinomial(probs, 1, generator=gen)  # (1,)
        else:
            nxt = last.argmax(-1, keepdim=True)  # (1,)
        seq = torch.cat([seq, nxt.to(seq.dtype)])
        if stop_at_eos and int(nxt) in eos:
            break
    new = seq[clean.n_pos:].cpu()
    tok = loaded.tokenizer
    text = tok.decode(new.tolist()) if tok is not None else None
    return GenerationResult(tokens=seq.cpu(), new_tokens=new, logits=torch.stack(step_logits), text=text)


__all__ = [
    "MODES", "CleanRun", "GenerationResult", "Intervention", "InterventionResult", "VectorAddition",
    "add_to_embedding", "add_to_output_location", "add_to_residual", "check_intervention", "constrained_set",
    "feature_intervention", "feature_intervention_generate", "prepare",
]

"""The patched forward pass behind interventions: PyTorch hooks on a Hugging Face decoder.

:func:`run_patched` runs the real model once with hooks that

* replay attention patterns from a clean run (``self_attn`` forward hook: the output is
  recomputed from the cached pattern ``(n_heads, P, P)`` and the module's own ``v_proj`` /
  ``o_proj``, GQA value heads repeated as HF's ``repeat_kv``);
* freeze every RMSNorm's 1/rms (``x * s * (weight + offset)``, computed in float32 or wider as
  HF's norms do);
* read the transcoder input of each layer and encode it (the *current* activations);
* edit each layer's transcoder output location: freeze it to the clean value (constrained
  layers, skip term recomputed live), then add ``(new - current) * W_dec`` of every feature
  intervention and any plain vector additions;
* add vectors to the residual stream at residual layer L (0: entering block 0, the token-node
  site; k: the output of block k-1; n_layers: entering the final norm).

Hooks are always removed (:func:`tracer.interventions.hooks.installed`), also on error.
Everything frozen is frozen only at the first ``P`` positions (the clean prompt); positions beyond
it -- tokens generated after an intervention -- run live, as in circuit-tracer's KV-cached
generation. Batch size 1 throughout;
``T`` is the current sequence length.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, Protocol

import torch
from torch import Tensor

from tracer.interventions.clean import CleanRun
from tracer.interventions.hooks import (
    HookSpec,
    OutputEdit,
    edit_layer_input,
    edit_output,
    frozen_attention,
    frozen_norm,
    installed,
    watch_input,
    watch_output,
)
from tracer.models.forward import rms_scale
from tracer.models.loaded import LoadedModel
from tracer.replacement import encode

logger = logging.getLogger(__name__)

Position = int | slice | Sequence[int] | Tensor
"""one position, several, or a slice"""


class FeatureEdit(Protocol):
    """What the patched forward needs of a feature intervention (see tracer.interventions)."""

    @property
    def position(self) -> Position: ...
    @property
    def feature(self) -> int: ...
    @property
    def value(self) -> float: ...
    @property
    def mode(self) -> str: ...


@dataclass(frozen=True, kw_only=True, eq=False)
class Plan:
    """What one patched forward does (built and validated by tracer.interventions)."""

    clean: CleanRun
    features: Mapping[int, Sequence[FeatureEdit]]
    """feature interventions by source layer, applied in order"""
    out_adds: Tensor | None
    """(n_layers, n_pos, d_model) vectors added at output locations"""
    resid_adds: Tensor | None
    """(n_layers + 1, n_pos, d_model) vectors added to the residual stream at residual layer L"""
    freeze_attention: bool
    freeze_norms: bool
    """freeze every norm's 1/rms (attribution's linearisation when all layers are constrained)"""
    constrained: frozenset[int]
    """layers whose MLP output is frozen to the clean value (empty: none)"""
    write_layers: frozenset[int]
    """layers that receive feature-intervention deltas at prompt positions"""
    encode_layers: frozenset[int]
    """layers whose live transcoder input is encoded"""
    record: Literal["acts", "pre", "none"]
    """what to return per layer: activations, pre-activations or nothing"""


@dataclass(eq=False)
class _State:
    n_seq: int
    deltas: Tensor
    """(n_layers, n_seq, d_model) feature-intervention deltas, filled as the layers run"""
    acts: dict[int, Tensor] = field(default_factory=dict)
    """layer -> (n_seq, d_transcoder) activations read by the encoder, BOS zeroed"""
    recorded: dict[int, Tensor] = field(default_factory=dict)
    live_skip: dict[int, Tensor] = field(default_factory=dict)
    final_hidden: Tensor | None = None


def resolve_positions(pos: Position, n_seq: int, n_prompt: int) -> Tensor:
    """(n,) absolute positions: ints/lists count from the prompt's end, slices from the sequence's."""
    if isinstance(pos, slice):
        return torch.arange(n_seq)[pos]  # (n,)
    t = torch.as_tensor(pos).reshape(-1).long()  # (n,)
    return torch.where(t < 0, t + n_prompt, t)


def _apply(mode: str, x: Tensor, value: float) -> Tensor:
    if mode == "set":
        return torch.full_like(x, value)
    return x * value if mode == "scale" else x + value


def _accumulate_deltas(plan: Plan, state: _State, layer: int) -> None:
    """Add ``(new - current) * W_dec`` of layer ``layer``'s interventions into ``state.deltas``."""
    P, T = plan.clean.n_pos, state.n_seq
    cur = state.acts[layer]  # (T, d_tc)
    if plan.constrained:  # circuit-tracer: deltas relative to the clean activations
        cur = cur.clone()
        cur[:P] = plan.clean.activations(layer)
    new: dict[int, Tensor] = {}
    touched: dict[int, Tensor] = {}
    for iv in plan.features[layer]:
        pos = resolve_positions(iv.position, T, P).to(cur.device)  # (n,)
        col = new.setdefault(iv.feature, cur[:, iv.feature].clone())  # (T,)
        col[pos] = _apply(iv.mode, col[pos], iv.value)
        touched.setdefault(iv.feature, torch.zeros(T, dtype=torch.bool, device=cur.device))[pos] = True
    feats = sorted(new)
    d_act = torch.stack([(new[f] - cur[:, f]) * touched[f] for f in feats], 1)  # (T, n_f)
    tcl = plan.clean.transcoders.layers[layer]
    rows = tcl.decoder_rows(torch.tensor(feats), cur.dtype, cur.device)  # (n_f, d) | (n_f, n_out, d)
    rows = rows[:, None] if rows.dim() == 2 else rows  # (n_f, n_out, d)
    vecs = torch.einsum("tf,fkd->ktd", d_act, rows)  # (n_out, T, d)
    state.deltas[layer:layer + rows.shape[1]] += vecs.to(state.deltas.dtype)


def _on_input(plan: Plan, state: _State, layer: int, x_in: Tensor) -> None:
    """Encode the live transcoder input (T, d) of ``layer``; keep the live skip term."""
    tcl = plan.clean.transcoders.layers[layer]
    x_in = x_in.to(tcl.W_enc.dtype)
    if layer in plan.encode_layers:
        acts = encode(tcl, x_in)  # (T, d_tc), BOS zeroed
        state.acts[layer] = acts
        if plan.record == "acts":
            state.recorded[layer] = acts
        elif plan.record == "pre":
            pre = tcl.pre_activation(x_in)  # (T, d_tc)
            pre[0] = 0
            state.recorded[layer] = pre
    if layer in plan.constrained and tcl.skip_T is not None:
        state.live_skip[layer] = x_in @ tcl.skip_T  # (T, d)


def _mlp_input(plan: Plan, state: _State, layer: int, x: Tensor) -> None:
    """'mlp_input' location: what the MLP module receives (1, T, d)."""
    _on_input(plan, state, layer, x[0])


def _normalized_input(plan: Plan, state: _State, layer: int, eps: float, x: Tensor) -> None:
    """'normalized' input location: h / rms(h), with the clean 1/rms when norms are frozen."""
    h = x[0]  # (T, d)
    s = rms_scale(h, eps)  # (T,) float32, as HF computes it
    if plan.freeze_norms:
        n = min(plan.clean.n_pos, h.shape[0])
        s[:n] = plan.clean.cache.scale_mlp_in[layer, :n].to(s.device)
    _on_input(plan, state, layer, h * s[:, None])  # promotes like ForwardCache.feature_input


def _edit_output(plan: Plan, state: _State, layer: int, out: Tensor) -> Tensor:
    """The output location of ``layer``: constrain, then add intervention deltas and vectors."""
    out = out.clone()
    P, T = plan.clean.n_pos, out.shape[1]
    n = min(P, T)
    if layer in plan.constrained:
        frozen = plan.clean.feature_output(layer)[:n].to(out.dtype)  # (n, d)
        skip = plan.clean.skip_term(layer)
        if skip is not None:
            frozen = frozen + (state.live_skip[layer][:n] - skip[:n]).to(out.dtype)
        out[0, :n] = frozen
    if layer in plan.features:
        _accumulate_deltas(plan, state, layer)
    delta = state.deltas[layer].to(out.dtype)  # (T, d)
    if layer in plan.write_layers:
        out[0] += delta
    else:  # generated positions are never constrained
        out[0, P:] += delta[P:]
    if plan.out_adds is not None:
        out[0, :n] += plan.out_adds[layer, :n].to(out.dtype)
    return out


def _layer_specs(loaded: LoadedModel, plan: Plan, state: _State) -> list[HookSpec]:
    """Per layer: read the transcoder input, edit the transcoder output location."""
    specs = []
    for i, block in enumerate(loaded.blocks):
        if plan.clean.input_location == "normalized":
            read = partial(_normalized_input, plan, state, i, loaded.norm_eps)
            specs.append(HookSpec(block.mlp_norm, "pre", watch_input(read)))
        else:
            specs.append(HookSpec(block.mlp, "pre", watch_input(partial(_mlp_input, plan, state, i))))
        block_out = plan.clean.output_location == "block_mlp_out" and block.post_mlp_norm is not None
        out_mod = block.post_mlp_norm if block_out and block.post_mlp_norm is not None else block.mlp
        specs.append(HookSpec(out_mod, "forward", edit_output(partial(_edit_output, plan, state, i))))
    return specs


def _freeze_specs(loaded: LoadedModel, plan: Plan) -> list[HookSpec]:
    """Frozen norms (every RMSNorm of the residual stream) and frozen attention patterns."""
    c, offset, specs = plan.clean.cache, loaded.adapter.norm_gain_offset, []
    for i, block in enumerate(loaded.blocks):
        if plan.freeze_norms:
            norms = [(block.attn_norm, c.scale_attn_in[i]), (block.mlp_norm, c.scale_mlp_in[i])]
            if block.post_attn_norm is not None and c.scale_post_attn is not None:
                norms.append((block.post_attn_norm, c.scale_post_attn[i]))
            if block.post_mlp_norm is not None and c.scale_post_mlp is not None:
                norms.append((block.post_mlp_norm, c.scale_post_mlp[i]))
            specs += [HookSpec(m, "forward", frozen_norm(s, offset)) for m, s in norms]
        if plan.freeze_attention:
            specs.append(HookSpec(block.attn, "forward_kw",
                                  frozen_attention(c.patterns[i], loaded.d_head, block.v_proj, block.o_proj)))
    if plan.freeze_norms:
        specs.append(HookSpec(loaded.final_norm, "forward", frozen_norm(c.scale_final, offset)))
    return specs


def _add_at(add: Tensor) -> OutputEdit:
    """Add ``add`` (P, d) to the first P positions of a (1, T, d) residual."""

    def edit(h: Tensor) -> Tensor:
        h = h.clone()
        n = min(add.shape[0], h.shape[1])
        h[0, :n] += add[:n].to(h.dtype)
        return h

    return edit


def _residual_specs(loaded: LoadedModel, plan: Plan) -> list[HookSpec]:
    """Residual additions: layer L < n_layers edits block L's input; L = n_layers the final norm's."""
    if plan.resid_adds is None:
        return []
    specs = []
    for L in range(loaded.n_layers + 1):
        add = plan.resid_adds[L]
        if not bool(add.any()):
            continue
        if L < loaded.n_layers:
            specs.append(HookSpec(loaded.blocks[L].module, "pre_kw", edit_layer_input(_add_at(add))))
        else:
            edit = _add_at(add)
            specs.append(HookSpec(loaded.final_norm, "pre", lambda mod, args, e=edit: (e(args[0]), *args[1:])))
    return specs


@dataclass(frozen=True, kw_only=True, eq=False)
class PatchedRun:
    """What one patched forward returns."""

    logits: Tensor
    """(T, d_vocab) the model's logits (after any final softcap)"""
    final_hidden: Tensor
    """(T, d_model) the final norm's output (what the unembedding reads)"""
    recorded: dict[int, Tensor]
    """layer -> (T, d_transcoder) activations or pre-activations (per ``plan.record``)"""


@torch.no_grad()
def run_patched(loaded: LoadedModel, plan: Plan, tokens: Tensor) -> PatchedRun:
    """Run the real model on ``tokens`` (T,) (the clean prompt, maybe extended) under ``plan``."""
    T = int(tokens.shape[0])
    state = _State(n_seq=T, deltas=torch.zeros(loaded.n_layers, T, loaded.d_model, dtype=loaded.dtype,
                                               device=loaded.device))
    specs = _residual_specs(loaded, plan) + _freeze_specs(loaded, plan) + _layer_specs(loaded, plan, state)
    keep_final = watch_output(lambda out: setattr(state, "final_hidden", out[0]))
    specs.append(HookSpec(loaded.final_norm, "forward", keep_final))
    with installed(specs):
        logits = loaded.logits(tokens[None])
    assert state.final_hidden is not None
    return PatchedRun(logits=logits[0], final_hidden=state.final_hidden, recorded=state.recorded)

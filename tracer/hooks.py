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
* add vectors to the residual entering layer 0 (token-node perturbations).

Hooks are always removed (:func:`installed`), also on error. Everything frozen is frozen only at
the first ``P`` positions (the clean prompt); positions beyond it -- tokens generated after an
intervention -- run live, as in circuit-tracer's KV-cached generation. Batch size 1 throughout;
``T`` is the current sequence length.
"""

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from tracer.forward import ForwardCache, layers_of, rms_scale, run_with_cache
from tracer.model import LoadedModel, check_token_ids
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import check_against_model

logger = logging.getLogger(__name__)

Position = int | slice | Sequence[int] | Tensor
"""one position, several, or a slice"""
OutputEdit = Callable[[Tensor], Tensor]
"""(1, T, d) module output -> (1, T, d) edited output"""


@dataclass(frozen=True)
class HookSpec:
    """One hook to register: ``kind`` is 'forward', 'forward_kw', 'pre' or 'pre_kw'."""

    module: torch.nn.Module
    kind: str
    fn: Callable[..., Any]


@contextlib.contextmanager
def installed(specs: list[HookSpec]) -> Iterator[None]:
    """Register ``specs`` for the duration of the block; always removed, in reverse order."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for spec in specs:
            if spec.kind == "forward":
                handles.append(spec.module.register_forward_hook(spec.fn))
            elif spec.kind == "forward_kw":
                handles.append(spec.module.register_forward_hook(spec.fn, with_kwargs=True))
            elif spec.kind == "pre":
                handles.append(spec.module.register_forward_pre_hook(spec.fn))
            elif spec.kind == "pre_kw":
                handles.append(spec.module.register_forward_pre_hook(spec.fn, with_kwargs=True))
            else:
                raise ValueError(f"hook kind must be forward, forward_kw, pre or pre_kw; got {spec.kind!r}.")
        yield
    finally:
        for h in reversed(handles):
            h.remove()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """HF RMSNorms compute in float32; keep float64 models in float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def frozen_norm(scale: Tensor, offset: float) -> Callable[..., Tensor]:
    """Forward hook for an RMSNorm: ``x * scale * (weight + offset)`` at the first P positions.

    Gemma's ``1 + weight`` is formed in float32 as HF (and the attribution engine) form it.

    scale: (P,) cached 1/rms of the clean run.
    """
    n_frozen = int(scale.shape[0])

    def hook(mod: torch.nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        x = args[0]
        cd = _compute_dtype(x.dtype)
        w = mod.weight  # type: ignore[union-attr]
        gain = (w.float() + offset).to(cd) if offset else w.to(cd)  # (d,) rounded as HF's norms round it
        n = min(n_frozen, x.shape[1])
        frozen = x[:, :n].to(cd) * scale[:n, None].to(device=x.device, dtype=cd) * gain  # (1, n, d)
        out = out.clone()
        out[:, :n] = frozen.to(out.dtype)
        return out

    return hook


def _repeat_kv(v: Tensor, n_rep: int) -> Tensor:
    """(B, n_kv, T, hd) -> (B, n_kv * n_rep, T, hd), as HF's repeat_kv."""
    B, n_kv, T, hd = v.shape
    return v[:, :, None].expand(B, n_kv, n_rep, T, hd).reshape(B, n_kv * n_rep, T, hd)  # (B, H, T, hd)


def frozen_attention(pattern: Tensor, head_dim: int) -> Callable[..., tuple[Any, ...]]:
    """Forward hook (with kwargs) for ``self_attn``: replay ``pattern`` (H, P, P) through V and O.

    Query rows ``< P`` use the frozen pattern (causal: they only see keys ``< P``); later rows keep
    the module's live output.
    """
    H, P, _ = pattern.shape

    def hook(mod: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
             out: tuple[Any, ...]) -> tuple[Any, ...]:
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (1, T, d)
        B, T, _ = x.shape
        n = min(P, T)
        hd = head_dim
        v = mod.v_proj(x[:, :n]).view(B, n, -1, hd).transpose(1, 2)  # type: ignore[operator]  # (B, n_kv, n, hd)
        v = _repeat_kv(v, H // v.shape[1])  # (B, H, n, hd)
        heads = torch.matmul(pattern[None, :, :n, :n].to(device=v.device, dtype=v.dtype), v)  # (B, H, n, hd)
        heads = heads.transpose(1, 2).reshape(B, n, H * hd)  # (B, n, H*hd)
        attn_out = out[0].clone()
        attn_out[:, :n] = mod.o_proj(heads)  # type: ignore[operator]  # (B, n, d)
        return (attn_out, *out[1:])

    return hook


def edit_output(edit: OutputEdit) -> Callable[..., Tensor]:
    """Forward hook that passes the module output through ``edit``."""

    def hook(mod: torch.nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
        return edit(out)

    return hook


def watch_input(sink: Callable[[Tensor], None]) -> Callable[..., None]:
    """Forward pre-hook that hands the module's first input (1, T, d) to ``sink``."""

    def hook(mod: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
        sink(args[0])

    return hook


def watch_output(sink: Callable[[Tensor], None]) -> Callable[..., None]:
    """Forward hook that hands the module's output (1, T, d) to ``sink``."""

    def hook(mod: torch.nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        sink(out)

    return hook


def edit_layer_input(edit: OutputEdit) -> Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]:
    """Forward pre-hook (with kwargs) for a decoder layer: edit the residual it receives."""

    def hook(mod: torch.nn.Module, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}
            return args, kwargs
        return (edit(args[0]), *args[1:]), kwargs

    return hook


# ----------------------------------------------------------------------------- the clean run
@dataclass(frozen=True, kw_only=True, eq=False)
class CleanRun:
    """A clean forward pass and the transcoders on the model's device and dtype."""

    tokens: Tensor
    """(n_pos,)"""
    cache: ForwardCache
    transcoders: Transcoders
    input_location: str
    output_location: str
    token_vectors: Tensor
    """(n_pos, d_model) embeddings as they enter the residual stream"""
    _memo: dict[tuple[str, int], Tensor | None] = field(default_factory=dict, repr=False)

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    def feature_input(self, layer: int) -> Tensor:
        """(n_pos, d_model) at the transcoder input location."""
        dtype = self.transcoders.layers[layer].W_enc.dtype
        return self.cache.feature_input(self.input_location)[layer].to(dtype)

    def feature_output(self, layer: int) -> Tensor:
        """(n_pos, d_model) at the transcoder output location."""
        return self.cache.feature_output(self.output_location)[layer]

    def activations(self, layer: int) -> Tensor:
        """(n_pos, d_transcoder) clean activations, BOS zeroed."""
        key = ("acts", layer)
        if key not in self._memo:
            acts = self.transcoders.layers[layer].encode(self.feature_input(layer))  # (n_pos, d_tc)
            acts[0] = 0
            self._memo[key] = acts
        return self._memo[key]  # type: ignore[return-value]

    def skip_term(self, layer: int) -> Tensor | None:
        """(n_pos, d_model) the clean skip term ``x_in @ skip_T``, or None."""
        skip_T = self.transcoders.layers[layer].skip_T
        return None if skip_T is None else self.feature_input(layer) @ skip_T

    def error_vectors(self) -> Tensor:
        """(n_layers, n_pos, d_model) output minus reconstruction at the output location, BOS zeroed."""
        key = ("errors", 0)
        if key not in self._memo:
            L = self.transcoders.n_layers
            out = torch.stack([self.feature_output(i) for i in range(L)]).to(self.token_vectors.dtype)
            recon = out.new_zeros(out.shape)  # (L, P, d)
            for i, layer in enumerate(self.transcoders.layers):
                acts = self.activations(i)  # (P, d_tc)
                nz = torch.nonzero(acts.any(0)).flatten()  # (n,)
                rows = layer.decoder_rows(nz, out.dtype, out.device)  # (n, d) | (n, n_out, d)
                rows = rows[:, None] if rows.dim() == 2 else rows  # (n, n_out, d)
                recon[i:i + rows.shape[1]] += torch.einsum("pn,nkd->kpd", acts[:, nz], rows)  # (n_out, P, d)
                recon[i] += layer.b_dec
                skip = self.skip_term(i)
                if skip is not None:
                    recon[i] += skip
            errors = out - recon
            errors[:, 0] = 0
            self._memo[key] = errors
        return self._memo[key]  # type: ignore[return-value]


def prepare(loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | Sequence[int]) -> CleanRun:
    """The clean run every intervention on ``tokens`` starts from (reusable across calls)."""
    tokens = check_token_ids(loaded, torch.as_tensor(tokens))
    check_against_model(transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    ad = loaded.adapter
    tc = transcoders.to(loaded.device, loaded.dtype)
    emb = loaded.model.get_input_embeddings().weight.detach()  # type: ignore[operator,union-attr]
    token_vectors = emb[tokens.to(emb.device)]  # (n_pos, d_model)
    if ad.embed_scale_sqrt_d:  # as Gemma2Model.forward scales its embeddings
        token_vectors = token_vectors * torch.tensor(loaded.d_model ** 0.5, dtype=emb.dtype)
    return CleanRun(tokens=tokens, cache=run_with_cache(loaded, tokens), transcoders=tc,
                    input_location=ad.input_location(tc.input_hook),
                    output_location=ad.output_location(tc.output_hook), token_vectors=token_vectors)


# ----------------------------------------------------------------------------- the patched forward
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
    features: dict[int, list[FeatureEdit]]
    """feature interventions by source layer, applied in order"""
    out_adds: Tensor | None
    """(n_layers, n_pos, d_model) vectors added at output locations"""
    embed_add: Tensor | None
    """(n_pos, d_model) vectors added to the residual entering layer 0"""
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
        pre = tcl.pre_activation(x_in)  # (T, d_tc)
        acts = tcl.activate(pre)
        acts[0] = 0
        state.acts[layer] = acts
        if plan.record != "none":
            pre[0] = 0
            state.recorded[layer] = acts if plan.record == "acts" else pre
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
    ad, specs = loaded.adapter, []
    for i, layer in enumerate(layers_of(loaded.model)):
        if plan.clean.input_location == "normalized":
            norm = getattr(layer, ad.mlp_norm)
            eps = float(getattr(norm, ad.norm_eps_attr, getattr(norm, "eps", 1e-6)))
            specs.append(HookSpec(norm, "pre", watch_input(partial(_normalized_input, plan, state, i, eps))))
        else:
            read = partial(_mlp_input, plan, state, i)
            specs.append(HookSpec(layer.mlp, "pre", watch_input(read)))
        block_out = plan.clean.output_location == "block_mlp_out"
        out_mod = getattr(layer, ad.post_mlp_norm) if block_out else layer.mlp
        specs.append(HookSpec(out_mod, "forward", edit_output(partial(_edit_output, plan, state, i))))
    return specs


def _freeze_specs(loaded: LoadedModel, plan: Plan) -> list[HookSpec]:
    """Frozen norms (every RMSNorm of the residual stream) and frozen attention patterns."""
    ad, c, specs = loaded.adapter, plan.clean.cache, []
    cfg = loaded.config
    n_heads = int(cfg.num_attention_heads)  # type: ignore[attr-defined]
    head_dim = int(getattr(cfg, "head_dim", None) or loaded.d_model // n_heads)
    for i, layer in enumerate(layers_of(loaded.model)):
        if plan.freeze_norms:
            norms = [(layer.input_layernorm, c.scale_attn_in[i]),
                     (getattr(layer, ad.mlp_norm), c.scale_mlp_in[i])]
            if ad.post_attn_norm:
                norms.append((getattr(layer, ad.post_attn_norm), c.scale_post_attn[i]))  # type: ignore[index]
            if ad.post_mlp_norm:
                norms.append((getattr(layer, ad.post_mlp_norm), c.scale_post_mlp[i]))  # type: ignore[index]
            specs += [HookSpec(m, "forward", frozen_norm(s, ad.norm_gain_offset)) for m, s in norms]
        if plan.freeze_attention:
            specs.append(HookSpec(layer.self_attn, "forward_kw", frozen_attention(c.patterns[i], head_dim)))
    if plan.freeze_norms:
        specs.append(HookSpec(loaded.model.model.norm, "forward",  # type: ignore[union-attr]
                              frozen_norm(c.scale_final, ad.norm_gain_offset)))
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
    specs = _freeze_specs(loaded, plan) + _layer_specs(loaded, plan, state)
    if plan.embed_add is not None:
        add = plan.embed_add

        def add_embed(h: Tensor) -> Tensor:
            h = h.clone()
            n = min(add.shape[0], h.shape[1])
            h[0, :n] += add[:n].to(h.dtype)
            return h

        specs.append(HookSpec(layers_of(loaded.model)[0], "pre_kw", edit_layer_input(add_embed)))
    specs.append(HookSpec(loaded.model.model.norm, "forward",  # type: ignore[union-attr]
                          watch_output(lambda out: setattr(state, "final_hidden", out[0]))))
    with installed(specs):
        out = loaded.model(tokens[None].to(loaded.device), use_cache=False)
    assert state.final_hidden is not None
    return PatchedRun(logits=out.logits[0], final_hidden=state.final_hidden, recorded=state.recorded)

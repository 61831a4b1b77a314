"""Phase 0: everything the attribution sweep reads, computed once per prompt.

Active features are ordered by (layer, pos, feature) -- the feature-node order. Position 0 (BOS)
has no active features and a zero error vector, as in circuit-tracer.
"""

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tracer.forward import ForwardCache, layers_of, run_with_cache
from tracer.model import LoadedModel
from tracer.transcoders.base import Transcoders

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, eq=False)
class DecoderBlock:
    """Active features of one source layer, as they write to one output layer, padded per position.

    ``padded[p, slot]`` is the decoder vector (already scaled by the activation) of the
    ``slot``-th active feature at position p; ``flat_index[j] = pos_j * n_slots + slot_j`` maps the
    j-th feature of the source layer (in node order) into the flattened (pos, slot) grid.
    """

    source_layer: int
    col_start: int
    """first active-feature index of the source layer"""
    positions: Tensor
    """(n,) ascending positions of the source layer's features"""
    padded: Tensor
    """(n_pos, n_slots, d_model)"""
    flat_index: Tensor
    """(n,)"""

    @property
    def n_slots(self) -> int:
        return int(self.padded.shape[1])


@dataclass(frozen=True, kw_only=True, eq=False)
class SweepWeights:
    """The weights a backward sweep multiplies by, pre-transposed and contiguous, per layer."""

    W_O: list[Tensor]
    """(d_model, n_heads*d_head): g @ W_O is the gradient of the concatenated heads"""
    W_V: list[Tensor]
    """(n_kv*d_head, d_model): gv @ W_V is the gradient of the attention input"""
    gain_attn_in: list[Tensor]
    """(d_model,) effective gain of the attention-input norm"""
    gain_feature_in: list[Tensor]
    """(d_model,) effective gain between resid_mid*scale and the transcoder input"""
    gain_post_attn: list[Tensor] | None
    gain_post_mlp: list[Tensor] | None
    gain_final: Tensor
    n_heads: int
    n_kv_heads: int
    d_head: int


@dataclass(frozen=True, kw_only=True, eq=False)
class AttributionContext:
    cache: ForwardCache
    weights: SweepWeights
    n_layers: int
    n_pos: int
    active_features: Tensor
    """(n_active, 3) (layer, pos, feature)"""
    activation_values: Tensor
    """(n_active,)"""
    encoder_vecs: Tensor
    """(n_active, d_model) raw encoder rows (targets read pre-activations)"""
    layer_starts: list[int]
    """active-feature index where each layer begins, plus n_active at the end"""
    decoder_blocks: list[list[DecoderBlock]]
    """decoder_blocks[l]: every block writing to output layer l"""
    error_vectors: Tensor
    """(n_layers, n_pos, d_model)"""
    token_vectors: Tensor
    """(n_pos, d_model) embeddings as they enter the residual (scaled for Gemma)"""
    feature_in: Tensor
    """(n_layers, n_pos, d_model) transcoder inputs"""
    out_scale: Tensor | None
    """(n_layers, n_pos, d_model) residual = out_scale * (output location), or None for identity"""
    skips: list[Tensor | None]
    """per layer: skip_T (d_model, d_model) or None"""

    @property
    def n_active(self) -> int:
        return int(self.active_features.shape[0])


def effective_gain(norm: torch.nn.Module, offset: float, dtype: torch.dtype) -> Tensor:
    return (norm.weight.detach().float() + offset).to(dtype)  # type: ignore[operator,union-attr]


def sweep_weights(loaded: LoadedModel, input_location: str, dtype: torch.dtype) -> SweepWeights:
    """Pre-transposed, contiguous weights and effective norm gains."""
    ad, cfg = loaded.adapter, loaded.config
    layers = layers_of(loaded.model)
    n_heads = int(cfg.num_attention_heads)  # type: ignore[attr-defined]
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    d_head = int(getattr(cfg, "head_dim", None) or loaded.d_model // n_heads)

    def gain(norm: torch.nn.Module) -> Tensor:
        return effective_gain(norm, ad.norm_gain_offset, dtype)

    ones = torch.ones(loaded.d_model, dtype=dtype, device=loaded.device)
    return SweepWeights(
        W_O=[layer.self_attn.o_proj.weight.detach().to(dtype).contiguous() for layer in layers],
        W_V=[layer.self_attn.v_proj.weight.detach().to(dtype).contiguous() for layer in layers],
        gain_attn_in=[gain(layer.input_layernorm) for layer in layers],
        gain_feature_in=[gain(getattr(layer, ad.mlp_norm)) if input_location == "mlp_input" else ones
                         for layer in layers],
        gain_post_attn=[gain(getattr(layer, ad.post_attn_norm)) for layer in layers]
        if ad.post_attn_norm else None,
        gain_post_mlp=[gain(getattr(layer, ad.post_mlp_norm)) for layer in layers]
        if ad.post_mlp_norm else None,
        gain_final=gain(loaded.model.model.norm),  # type: ignore[union-attr]
        n_heads=n_heads, n_kv_heads=n_kv, d_head=d_head,
    )


def _pad_block(source_layer: int, col_start: int, positions: Tensor, vecs: Tensor, n_pos: int) -> DecoderBlock:
    """Scatter (n, d) vectors at ascending positions into a (n_pos, n_slots, d) grid."""
    n, d = vecs.shape
    counts = torch.bincount(positions, minlength=n_pos)  # (n_pos,)
    n_slots = max(int(counts.max()) if n else 0, 1)
    starts = torch.cumsum(counts, 0) - counts  # (n_pos,)
    slot = torch.arange(n, device=positions.device) - starts[positions]  # (n,)
    padded = vecs.new_zeros(n_pos, n_slots, d)
    padded[positions, slot] = vecs
    return DecoderBlock(source_layer=source_layer, col_start=col_start, positions=positions,
                        padded=padded, flat_index=positions * n_slots + slot)


def encode_all(tc: Transcoders, feature_in: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer: (n_l, 2) (pos, feature) of active features and their (n_l,) activations."""
    idx, vals = [], []
    for layer, x in zip(tc.layers, feature_in):
        acts = layer.encode(x)  # (n_pos, d_transcoder)
        acts[0] = 0  # BOS: circuit-tracer zeroes position 0
        nz = torch.nonzero(acts)  # (n_l, 2), row-major: sorted by (pos, feature)
        idx.append(nz)
        vals.append(acts[nz[:, 0], nz[:, 1]])
    return idx, vals


def build_context(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, dtype: torch.dtype) -> AttributionContext:
    """Forward pass, encoding, decoder vectors, reconstruction and errors."""
    ad = loaded.adapter
    in_loc, out_loc = ad.input_location(tc.input_hook), ad.output_location(tc.output_hook)
    cache = run_with_cache(loaded, tokens)
    L, P = loaded.n_layers, int(tokens.shape[0])
    device = loaded.device
    feature_in = cache.feature_input(in_loc).to(dtype)  # (L, P, d)
    idx, vals = encode_all(tc.to(device, dtype), feature_in)
    counts = [int(i.shape[0]) for i in idx]
    starts = [0, *torch.cumsum(torch.tensor(counts), 0).tolist()]
    active = torch.cat([torch.cat([torch.full((c, 1), l, device=device), i], 1)
                        for l, (c, i) in enumerate(zip(counts, idx))]).long()  # (n_active, 3)
    values = torch.cat(vals)  # (n_active,)
    enc = torch.cat([layer.W_enc.to(device=device, dtype=dtype)[i[:, 1]] for layer, i in zip(tc.layers, idx)])
    recon = torch.stack([layer.b_dec.to(device=device, dtype=dtype).expand(P, -1) for layer in tc.layers]).clone()
    blocks: list[list[DecoderBlock]] = [[] for _ in range(L)]
    for src, (layer, i, v) in enumerate(zip(tc.layers, idx, vals)):
        rows = layer.decoder_rows(i[:, 1], dtype, device)  # PLT (n, d); CLT (n, L - src, d)
        rows = rows[:, None] if rows.dim() == 2 else rows  # (n, n_out, d)
        for k in range(rows.shape[1]):
            vecs = rows[:, k] * v[:, None]  # (n, d) activation-scaled decoder vectors
            recon[src + k].index_add_(0, i[:, 0], vecs)
            blocks[src + k].append(_pad_block(src, starts[src], i[:, 0], vecs, P))
    skips = [None if layer.skip_T is None else layer.skip_T.to(device=device, dtype=dtype) for layer in tc.layers]
    for l, s in enumerate(skips):
        if s is not None:
            recon[l] += feature_in[l] @ s
    errors = cache.feature_output(out_loc).to(dtype) - recon  # (L, P, d)
    errors[:, 0] = 0
    weights = sweep_weights(loaded, in_loc, dtype)
    out_scale = None
    if out_loc == "mlp_output" and ad.post_mlp_norm is not None:
        assert cache.scale_post_mlp is not None and weights.gain_post_mlp is not None
        out_scale = torch.stack([g[None] * s[:, None].to(dtype) for g, s in
                                 zip(weights.gain_post_mlp, cache.scale_post_mlp)])  # (L, P, d)
    emb = loaded.model.get_input_embeddings().weight.detach()  # type: ignore[operator,union-attr]
    token_vectors = emb[tokens.to(device)].to(dtype)  # (P, d)
    if ad.embed_scale_sqrt_d:
        token_vectors = token_vectors * torch.tensor(math.sqrt(loaded.d_model), dtype=emb.dtype).to(dtype)
    logger.info("phase 0: %d active features (%.1f per token per layer)", values.shape[0],
                values.shape[0] / max(1, (P - 1) * L))
    return AttributionContext(
        cache=cache, weights=weights, n_layers=L, n_pos=P, active_features=active, activation_values=values,
        encoder_vecs=enc, layer_starts=starts, decoder_blocks=blocks, error_vectors=errors,
        token_vectors=token_vectors, feature_in=feature_in, out_scale=out_scale, skips=skips,
    )

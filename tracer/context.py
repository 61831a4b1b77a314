"""Phase 0: everything the attribution sweep reads, computed once per prompt.

Active features are ordered by (layer, pos, feature) -- the feature-node order. Position 0 (BOS)
has no active features and a zero error vector, as in circuit-tracer.
"""

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tracer.forward import ForwardCache, layers_of, run_with_cache
from tracer.model import LoadedModel
from tracer.transcoders.base import Transcoders

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, eq=False)
class OutputBlock:
    """Every source that writes at one layer's output location, for one gathered GEMM.

    ``vectors[p, :, slot]`` is a source vector at position p, as it enters the residual stream
    (activation-scaled decoder rows and the error vector, any post-MLP norm folded in). The
    contraction ``(n, B, d) @ vectors[:n] -> (n, B, n_slots)`` gives every edge at once; entry
    ``m`` of the gather lists (sorted by position) says that slot ``(src_pos[m], src_slot[m])``
    is buffer column ``dest_col[m]``.
    """

    vectors: Tensor
    """(n_pos, d_model, n_slots)"""
    src_pos: Tensor
    """(M,) ascending"""
    src_slot: Tensor
    """(M,)"""
    dest_col: Tensor
    """(M,)"""

    def n_valid(self, n: int) -> int:
        """How many gather entries lie at positions < n."""
        return int(torch.searchsorted(self.src_pos, n))


@dataclass(frozen=True, kw_only=True, eq=False)
class SweepWeights:
    """Per-layer weights of the backward sweep, pre-transposed, contiguous, norm scales folded in."""

    W_O: list[Tensor]
    """(d_model, n_heads*d_head): ``g @ W_O`` is the gradient of the concatenated heads
    (Gemma-2's post-attention gain folded into its rows)"""
    W_V: list[Tensor]
    """(n_kv, d_head, d_model): ``gv_j @ W_V[j]`` is group j's gradient on the attention input
    (the input-norm gain folded into its columns)"""
    patterns: list[Tensor]
    """(n_kv, n_pos[key], group, n_pos[query]): ``A[j*group+g, q, k] * s_in[k] * s_post[q]``, the
    frozen pattern with the input norm's 1/rms (keys) and a post-attention 1/rms (queries)"""
    skip: list[Tensor | None]
    """(d_model, d_model) skip Jacobian (output -> input location, gains folded), or None"""
    skip_scale: Tensor
    """(n_layers, n_pos): per-position scalar of the skip path"""
    gain_feature_in: list[Tensor]
    """(d_model,) effective gain between resid_mid*scale and the transcoder input"""
    read_final: Tensor
    """(d_model,) gain of the final norm (logit targets read through it)"""
    n_kv_heads: int
    d_head: int


@dataclass(frozen=True, kw_only=True, eq=False)
class AttributionContext:
    """Phase-0 results for one prompt: nodes, source vectors and the sweep's weights."""

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
    outputs: list[OutputBlock]
    """outputs[l]: every source writing at layer l's output location"""
    error_vectors: Tensor
    """(n_layers, n_pos, d_model) at the output location (before any post-MLP norm)"""
    token_vectors: Tensor
    """(n_pos, d_model) embeddings as they enter the residual (scaled for Gemma)"""
    flops: list[int] = field(default_factory=list)
    """multiply-add FLOPs of every sweep (2 per MAC), appended by the sweeps (thread-safe append)"""

    @property
    def n_active(self) -> int:
        return int(self.active_features.shape[0])


def effective_gain(norm: torch.nn.Module, offset: float, dtype: torch.dtype) -> Tensor:
    return (norm.weight.detach().float() + offset).to(dtype)  # type: ignore[operator,union-attr]


def _head_dims(loaded: LoadedModel) -> tuple[int, int, int]:
    cfg = loaded.config
    n_heads = int(cfg.num_attention_heads)  # type: ignore[attr-defined]
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    d_head = int(getattr(cfg, "head_dim", None) or loaded.d_model // n_heads)
    return n_heads, n_kv, d_head


def fold_pattern(pattern: Tensor, s_key: Tensor, s_query: Tensor | None, n_kv: int) -> Tensor:
    """(H, q, k) pattern -> (n_kv, k, group, q) with key and query norm scales folded in."""
    H, P, _ = pattern.shape
    p = pattern * s_key[None, None, :]  # (H, q, k)
    if s_query is not None:
        p = p * s_query[None, :, None]
    return p.reshape(n_kv, H // n_kv, P, P).permute(0, 3, 1, 2).contiguous()  # (n_kv, k, group, q)


def sweep_weights(loaded: LoadedModel, cache: ForwardCache, tc: Transcoders, input_location: str,
                  output_location: str, dtype: torch.dtype) -> SweepWeights:
    """Pre-transposed, contiguous weights with every frozen norm folded in."""
    ad = loaded.adapter
    layers = layers_of(loaded.model)
    _, n_kv, d_head = _head_dims(loaded)
    dev = loaded.device

    def gain(norm: torch.nn.Module) -> Tensor:
        return effective_gain(norm, ad.norm_gain_offset, dtype)

    ones = torch.ones(loaded.d_model, dtype=dtype, device=dev)
    W_O, W_V, pats, skips, g_in = [], [], [], [], []
    skip_scale = cache.scale_mlp_in.to(dtype).clone()  # (L, P)
    for i, layer in enumerate(layers):
        w_o = layer.self_attn.o_proj.weight.detach().to(dtype)  # (d, H*hd)
        s_q = None
        if ad.post_attn_norm:
            w_o = gain(getattr(layer, ad.post_attn_norm))[:, None] * w_o
            s_q = cache.scale_post_attn[i].to(dtype)  # type: ignore[index]
        W_O.append(w_o.contiguous())
        w_v = layer.self_attn.v_proj.weight.detach().to(dtype) * gain(layer.input_layernorm)[None, :]
        W_V.append(w_v.reshape(n_kv, d_head, -1).contiguous())  # (n_kv, hd, d)
        pats.append(fold_pattern(cache.patterns[i].to(dtype), cache.scale_attn_in[i].to(dtype), s_q, n_kv))
        gi = gain(getattr(layer, ad.mlp_norm)) if input_location == "mlp_input" else ones
        g_in.append(gi)
        skip_T = tc.layers[i].skip_T
        if skip_T is None:
            skips.append(None)
            continue
        jac = skip_T.to(device=dev, dtype=dtype).T * gi[None, :]  # (d_out, d_in)
        if output_location == "mlp_output" and ad.post_mlp_norm:
            jac = gain(getattr(layer, ad.post_mlp_norm))[:, None] * jac
            skip_scale[i] *= cache.scale_post_mlp[i].to(dtype)  # type: ignore[index]
        skips.append(jac.contiguous())
    return SweepWeights(W_O=W_O, W_V=W_V, patterns=pats, skip=skips, skip_scale=skip_scale,
                        gain_feature_in=g_in, read_final=gain(loaded.model.model.norm),  # type: ignore[union-attr]
                        n_kv_heads=n_kv, d_head=d_head)


def output_block(sources: list[tuple[Tensor, Tensor, Tensor]], n_pos: int) -> OutputBlock:
    """Pad (positions, vectors, dest columns) sources into one (n_pos, d, n_slots) block."""
    pos = torch.cat([p for p, _, _ in sources])  # (M,)
    vecs = torch.cat([v for _, v, _ in sources])  # (M, d)
    cols = torch.cat([c for _, _, c in sources])  # (M,)
    order = torch.argsort(pos, stable=True)
    pos, vecs, cols = pos[order], vecs[order], cols[order]
    counts = torch.bincount(pos, minlength=n_pos)  # (n_pos,)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(pos.shape[0], device=pos.device) - starts[pos]  # (M,)
    n_slots = max(int(counts.max()), 1)
    padded = vecs.new_zeros(n_pos, n_slots, vecs.shape[1])  # (n_pos, n_slots, d)
    padded[pos, slot] = vecs
    return OutputBlock(vectors=padded.transpose(1, 2).contiguous(), src_pos=pos, src_slot=slot, dest_col=cols)


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


def _out_scale(loaded: LoadedModel, cache: ForwardCache, out_loc: str, layer: int, dtype: torch.dtype) -> Tensor | None:
    """(n_pos, d): residual = scale * (output-location vector), for a post-MLP norm after it."""
    ad = loaded.adapter
    if out_loc != "mlp_output" or ad.post_mlp_norm is None:
        return None
    norm = getattr(layers_of(loaded.model)[layer], ad.post_mlp_norm)
    g = effective_gain(norm, ad.norm_gain_offset, dtype)
    return g[None, :] * cache.scale_post_mlp[layer].to(dtype)[:, None]  # type: ignore[index]


def build_context(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, dtype: torch.dtype) -> AttributionContext:
    """Forward pass, encoding, decoder vectors, reconstruction, errors and sweep weights."""
    ad = loaded.adapter
    in_loc, out_loc = ad.input_location(tc.input_hook), ad.output_location(tc.output_hook)
    cache = run_with_cache(loaded, tokens)
    L, P, dev = loaded.n_layers, int(tokens.shape[0]), loaded.device
    feature_in = cache.feature_input(in_loc).to(dtype)  # (L, P, d)
    tcd = tc.to(dev, dtype)
    idx, vals = encode_all(tcd, feature_in)
    counts = [int(i.shape[0]) for i in idx]
    starts = [0, *torch.cumsum(torch.tensor(counts), 0).tolist()]
    F = starts[-1]
    active = torch.cat([torch.cat([torch.full((c, 1), l, device=dev), i], 1)
                        for l, (c, i) in enumerate(zip(counts, idx))]).long()  # (n_active, 3)
    values = torch.cat(vals)  # (n_active,)
    enc = torch.cat([layer.W_enc[i[:, 1]] for layer, i in zip(tcd.layers, idx)])  # (n_active, d)
    recon = torch.stack([layer.b_dec.expand(P, -1) for layer in tcd.layers]).clone()  # (L, P, d)
    sources: list[list[tuple[Tensor, Tensor, Tensor]]] = [[] for _ in range(L)]
    for src, (layer, i, v) in enumerate(zip(tcd.layers, idx, vals)):
        rows = layer.decoder_rows(i[:, 1], dtype, dev)  # PLT (n, d); CLT (n, L - src, d)
        rows = rows[:, None] if rows.dim() == 2 else rows  # (n, n_out, d)
        cols = torch.arange(starts[src], starts[src + 1], device=dev)
        for k in range(rows.shape[1]):
            vecs = rows[:, k] * v[:, None]  # (n, d) activation-scaled decoder vectors
            recon[src + k].index_add_(0, i[:, 0], vecs)
            sources[src + k].append((i[:, 0], vecs, cols))
    for l, layer in enumerate(tcd.layers):
        if layer.skip_T is not None:
            recon[l] += feature_in[l] @ layer.skip_T
    errors = cache.feature_output(out_loc).to(dtype) - recon  # (L, P, d)
    errors[:, 0] = 0
    outputs = []
    positions = torch.arange(P, device=dev)
    for l in range(L):
        srcs = sources[l] + [(positions, errors[l], F + l * P + positions)]
        scale = _out_scale(loaded, cache, out_loc, l, dtype)
        if scale is not None:  # fold the frozen post-MLP norm into the source vectors
            srcs = [(p, v * scale[p], c) for p, v, c in srcs]
        outputs.append(output_block(srcs, P))
    emb = loaded.model.get_input_embeddings().weight.detach()  # type: ignore[operator,union-attr]
    token_vectors = emb[tokens.to(dev)].to(dtype)  # (P, d)
    if ad.embed_scale_sqrt_d:
        token_vectors = token_vectors * torch.tensor(math.sqrt(loaded.d_model), dtype=emb.dtype).to(dtype)
    logger.info("phase 0: %d active features (%.1f per token per layer)", F, F / max(1, (P - 1) * L))
    return AttributionContext(
        cache=cache, weights=sweep_weights(loaded, cache, tcd, in_loc, out_loc, dtype), n_layers=L, n_pos=P,
        active_features=active, activation_values=values, encoder_vecs=enc, outputs=outputs,
        error_vectors=errors, token_vectors=token_vectors,
    )

"""Phase 0: everything the attribution sweep reads, computed once per prompt.

Active features are ordered by (layer, pos, feature) -- the feature-node order. Position 0 (BOS)
has no active features and a zero error vector, as in circuit-tracer.
"""

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tracer.models.forward import ForwardCache
from tracer.models.loaded import LoadedModel, weight
from tracer.replacement import Replacement, build_replacement
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


def fold_pattern(pattern: Tensor, s_key: Tensor, s_query: Tensor | None, n_kv: int) -> Tensor:
    """(H, q, k) pattern -> (n_kv, k, group, q) with key and query norm scales folded in."""
    H, P, _ = pattern.shape
    p = pattern * s_key[None, None, :]  # (H, q, k)
    if s_query is not None:
        p = p * s_query[None, :, None]
    return p.reshape(n_kv, H // n_kv, P, P).permute(0, 3, 1, 2).contiguous()  # (n_kv, k, group, q)


def sweep_weights(loaded: LoadedModel, rep: Replacement, dtype: torch.dtype) -> SweepWeights:
    """Pre-transposed, contiguous weights with every frozen norm folded in."""
    cache, n_kv, d_head = rep.cache, loaded.n_kv_heads, loaded.d_head
    ones = torch.ones(loaded.d_model, dtype=dtype, device=loaded.device)
    W_O, W_V, pats, g_in = [], [], [], []
    skips: list[Tensor | None] = []
    skip_scale = cache.scale_mlp_in.to(dtype).clone()  # (L, P)
    for i, block in enumerate(loaded.blocks):
        w_o = weight(block.o_proj).detach().to(dtype)  # (d, H*hd)
        s_q = None
        if block.post_attn_norm is not None and cache.scale_post_attn is not None:
            w_o = loaded.gain(block.post_attn_norm, dtype)[:, None] * w_o
            s_q = cache.scale_post_attn[i].to(dtype)
        W_O.append(w_o.contiguous())
        w_v = weight(block.v_proj).detach().to(dtype) * loaded.gain(block.attn_norm, dtype)[None, :]
        W_V.append(w_v.reshape(n_kv, d_head, -1).contiguous())  # (n_kv, hd, d)
        pats.append(fold_pattern(cache.patterns[i].to(dtype), cache.scale_attn_in[i].to(dtype), s_q, n_kv))
        gi = loaded.gain(block.mlp_norm, dtype) if rep.input_location == "mlp_input" else ones
        g_in.append(gi)
        skip_T = rep.transcoders.layers[i].skip_T
        if skip_T is None:
            skips.append(None)
            continue
        jac = skip_T.to(device=loaded.device, dtype=dtype).T * gi[None, :]  # (d_out, d_in)
        if rep.output_location == "mlp_output" and block.post_mlp_norm is not None \
                and cache.scale_post_mlp is not None:
            jac = loaded.gain(block.post_mlp_norm, dtype)[:, None] * jac
            skip_scale[i] *= cache.scale_post_mlp[i].to(dtype)
        skips.append(jac.contiguous())
    return SweepWeights(W_O=W_O, W_V=W_V, patterns=pats, skip=skips, skip_scale=skip_scale, gain_feature_in=g_in,
                        read_final=loaded.gain(loaded.final_norm, dtype), n_kv_heads=n_kv, d_head=d_head)


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


def _out_scale(loaded: LoadedModel, rep: Replacement, layer: int, dtype: torch.dtype) -> Tensor | None:
    """(n_pos, d): residual = scale * (output-location vector), for a post-MLP norm after it."""
    norm, scales = loaded.blocks[layer].post_mlp_norm, rep.cache.scale_post_mlp
    if rep.output_location != "mlp_output" or norm is None or scales is None:
        return None
    return loaded.gain(norm, dtype)[None, :] * scales[layer].to(dtype)[:, None]


def _source_blocks(loaded: LoadedModel, rep: Replacement, dtype: torch.dtype) -> list[OutputBlock]:
    """Per layer: every source written at its output location (features, then the error vectors)."""
    L, P, dev = loaded.n_layers, rep.n_pos, loaded.device
    counts = torch.bincount(rep.active[:, 0], minlength=L).tolist() if rep.active.numel() else [0] * L
    starts = [0, *torch.cumsum(torch.tensor(counts), 0).tolist()]
    F = starts[-1]
    positions = torch.arange(P, device=dev)
    outputs = []
    for out in range(L):
        srcs = [(blk.positions, blk.vectors,
                 torch.arange(starts[blk.source_layer], starts[blk.source_layer + 1], device=dev))
                for blk in rep.decoded[out]]
        srcs.append((positions, rep.errors[out], F + out * P + positions))
        scale = _out_scale(loaded, rep, out, dtype)
        if scale is not None:  # fold the frozen post-MLP norm into the source vectors
            srcs = [(p, v * scale[p], c) for p, v, c in srcs]
        outputs.append(output_block(srcs, P))
    return outputs


def build_context(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, dtype: torch.dtype) -> AttributionContext:
    """The replacement model of ``tokens`` plus the sweep's source blocks and folded weights."""
    rep = build_replacement(loaded, tc, tokens, dtype)
    enc = torch.cat([layer.W_enc[rep.active[rep.active[:, 0] == i, 2]]
                     for i, layer in enumerate(rep.transcoders.layers)])  # (n_active, d)
    F, L, P = int(rep.active.shape[0]), loaded.n_layers, rep.n_pos
    logger.info("phase 0: %d active features (%.1f per token per layer)", F, F / max(1, (P - 1) * L))
    return AttributionContext(
        cache=rep.cache, weights=sweep_weights(loaded, rep, dtype), n_layers=L, n_pos=P,
        active_features=rep.active, activation_values=rep.values, encoder_vecs=enc,
        outputs=_source_blocks(loaded, rep, dtype), error_vectors=rep.errors, token_vectors=rep.token_vectors,
    )

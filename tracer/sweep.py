"""The explicit backward: vector-Jacobian products through the local replacement model, by hand.

With attention patterns, norm scales and MLP outputs frozen, the map from any node's output
vector to any later read location is linear. A batch of B targets that all start at one layer
is swept down the layers on a ``(B, p_max + 1, d_model)`` gradient (causal truncation: a target
at position p only touches positions <= p). At each layer's output location one gathered GEMM
per decoder block contracts the gradient with the active decoder rows there, and the result is
added straight into rows of the preallocated adjacency buffer. Attention is walked through V
and O only, with the query heads of a KV group summed *before* the value projection (GQA).

Buffer column layout (circuit-tracer's): ``[active features | errors (layer*n_pos + pos) |
tokens (pos) | logits]``; rows are the targets being computed.
"""

import torch
from torch import Tensor

from tracer.context import AttributionContext


def _attn_in_scale(ctx: AttributionContext, layer: int, n: int) -> Tensor:
    """(n, d_model): gain * 1/rms of the attention-input norm at positions < n."""
    w, c = ctx.weights, ctx.cache
    return w.gain_attn_in[layer] * c.scale_attn_in[layer, :n, None].to(w.gain_attn_in[layer].dtype)


def _post_attn(ctx: AttributionContext, layer: int, g: Tensor, pos: Tensor | None, n: int) -> Tensor:
    """Gemma-2: the gradient through the frozen post-attention norm (identity elsewhere)."""
    w, c = ctx.weights, ctx.cache
    if w.gain_post_attn is None:
        return g
    assert c.scale_post_attn is not None
    s = c.scale_post_attn[layer].to(g.dtype)
    scale = s[pos, None] if pos is not None else s[:n, None]  # (B, 1) or (n, 1)
    return g * w.gain_post_attn[layer] * scale


def attn_backward_sparse(ctx: AttributionContext, layer: int, inj: Tensor, pos: Tensor, n: int) -> Tensor:
    """Gradient on the layer's input residual from a one-position gradient on its mid residual.

    inj: (B, d_model) at positions ``pos`` (B,); returns (B, n, d_model), residual path included.
    """
    w = ctx.weights
    B, d = inj.shape
    kv, hd = w.n_kv_heads, w.d_head
    grp = w.n_heads // kv
    go = (_post_attn(ctx, layer, inj, pos, n) @ w.W_O[layer]).view(B, kv, grp, hd)  # (B, kv, grp, hd)
    rows = ctx.cache.patterns[layer][:, pos, :n].to(inj.dtype)  # (H, B, n)
    rows = rows.permute(1, 0, 2).reshape(B, kv, grp, n)  # (B, kv, grp, n)
    gv = torch.einsum("bjgk,bjge->bkje", rows, go).reshape(B * n, kv * hd)  # (B*n, kv*hd)
    g = (gv @ w.W_V[layer]).view(B, n, d) * _attn_in_scale(ctx, layer, n)  # (B, n, d)
    g[torch.arange(B, device=g.device), pos] += inj
    return g


def attn_backward_dense(ctx: AttributionContext, layer: int, g_h: Tensor) -> Tensor:
    """Gradient through attention only (residual path excluded): (B, n, d) -> (B, n, d)."""
    w = ctx.weights
    B, n, d = g_h.shape
    kv, hd = w.n_kv_heads, w.d_head
    grp = w.n_heads // kv
    go = (_post_attn(ctx, layer, g_h, None, n).reshape(B * n, d) @ w.W_O[layer])  # (B*n, H*hd)
    go = go.view(B, n, kv, grp, hd).permute(2, 3, 1, 0, 4).reshape(kv, grp * n, B * hd)  # (kv, grp*q, B*hd)
    pat = ctx.cache.patterns[layer][:, :n, :n].to(g_h.dtype)  # (H, q, k)
    pat_t = pat.reshape(kv, grp, n, n).permute(0, 3, 1, 2).reshape(kv, n, grp * n)  # (kv, k, grp*q)
    gv = torch.bmm(pat_t, go)  # (kv, k, B*hd): query heads of a group summed before W_V
    gv = gv.view(kv, n, B, hd).permute(2, 1, 0, 3).reshape(B * n, kv * hd)  # (B*n, kv*hd)
    return (gv @ w.W_V[layer]).view(B, n, d) * _attn_in_scale(ctx, layer, n)


def contract_outputs(ctx: AttributionContext, buf: Tensor, rows: slice, layer: int, g_out: Tensor) -> None:
    """Add the edges from every source writing at ``layer``'s output location into ``buf[rows]``."""
    B, n, _ = g_out.shape
    F, P = ctx.n_active, ctx.n_pos
    err = torch.einsum("bpd,pd->bp", g_out, ctx.error_vectors[layer, :n])  # (B, n)
    col = F + layer * P
    buf[rows, col:col + n] += err.to(buf.dtype)
    for blk in ctx.decoder_blocks[layer]:
        n_valid = int(torch.searchsorted(blk.positions, n))
        if n_valid == 0:
            continue
        vals = torch.einsum("bpd,psd->bps", g_out, blk.padded[:n]).reshape(B, n * blk.n_slots)  # (B, n*slots)
        buf[rows, blk.col_start:blk.col_start + n_valid] += vals[:, blk.flat_index[:n_valid]].to(buf.dtype)


def sweep(ctx: AttributionContext, buf: Tensor, row_start: int, start_layer: int, pos: Tensor,
          vecs: Tensor) -> None:
    """Compute B target rows into ``buf[row_start : row_start + B]``.

    start_layer < n_layers: feature targets reading ``vecs`` (B, d) at that layer's input location
    at positions ``pos``; start_layer == n_layers: logit targets reading the final-norm output.
    """
    w, c = ctx.weights, ctx.cache
    L, P, F = ctx.n_layers, ctx.n_pos, ctx.n_active
    B = int(pos.shape[0])
    n = int(pos.max()) + 1
    rows = slice(row_start, row_start + B)
    g = vecs.new_zeros(B, n, vecs.shape[1])
    if start_layer == L:
        g[torch.arange(B, device=g.device), pos] = vecs * w.gain_final * c.scale_final[pos, None].to(vecs.dtype)
    for layer in range(min(start_layer, L - 1), -1, -1):
        if layer == start_layer:  # injection: one position per row
            inj = vecs * w.gain_feature_in[layer] * c.scale_mlp_in[layer, pos, None].to(vecs.dtype)
            g = attn_backward_sparse(ctx, layer, inj, pos, n)
            continue
        scale = ctx.out_scale
        g_out = g if scale is None else g * scale[layer, :n]
        contract_outputs(ctx, buf, rows, layer, g_out)
        g_h = g
        skip = ctx.skips[layer]
        if skip is not None:
            s_in = w.gain_feature_in[layer] * c.scale_mlp_in[layer, :n, None].to(g.dtype)  # (n, d)
            g_h = g + (g_out @ skip.T) * s_in
        g = g_h + attn_backward_dense(ctx, layer, g_h)
    tok = torch.einsum("bpd,pd->bp", g, ctx.token_vectors[:n])  # (B, n)
    col = F + L * P
    buf[rows, col:col + n] += tok.to(buf.dtype)

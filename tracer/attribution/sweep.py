"""The explicit backward: vector-Jacobian products through the local replacement model, by hand.

With attention patterns, norm scales and MLP outputs frozen, the map from any node's output
vector to any later read location is linear. A batch of B targets that all start at one layer
is swept down the layers on a position-major ``(n, B, d_model)`` gradient, ``n = p_max + 1``
(causal truncation: a target at position p only touches positions <= p). At each layer's
output location one gathered GEMM contracts the gradient with every source vector written there
(active decoder rows and error vectors), and the edges are added straight into rows of the
preallocated adjacency buffer. Attention is walked through V and O only; the query heads of a
KV group are summed *before* the value projection (GQA), and every frozen norm scale is folded
into the pattern or the weights (``tracer.attribution.context.sweep_weights``), so a layer costs one W_O
GEMM, one pattern bmm, one W_V GEMM per KV group (accumulating onto the residual gradient) and
one gathered source GEMM.

Buffer column layout (circuit-tracer's): ``[active features | errors (layer*n_pos + pos) |
tokens (pos) | logits]``; rows are the targets being computed.
"""

import torch
from torch import Tensor

from tracer.attribution.context import AttributionContext


def add_edges(ctx: AttributionContext, buf: Tensor, rows: slice, layer: int, g: Tensor) -> None:
    """Edges from every source at ``layer``'s output location into ``buf[rows]``.

    g: (n, B, d) gradient on the residual stream at that location.
    """
    n = g.shape[0]
    blk = ctx.outputs[layer]
    m = blk.n_valid(n)
    if m == 0:
        return
    out = torch.bmm(g, blk.vectors[:n])  # (n, B, n_slots)
    ctx.flops.append(2 * g.numel() * out.shape[2])
    vals = out[blk.src_pos[:m], :, blk.src_slot[:m]]  # (m, B)
    buf[rows].index_add_(1, blk.dest_col[:m], vals.T.to(buf.dtype))


def attn_sparse(ctx: AttributionContext, layer: int, inj: Tensor, pos: Tensor, n: int) -> Tensor:
    """Residual gradient below ``layer`` from one position per row on its mid residual.

    inj: (B, d) at positions ``pos`` (B,). Returns (n, B, d), the residual path included.
    """
    w = ctx.weights
    B, d = inj.shape
    kv, hd = w.n_kv_heads, w.d_head
    go = (inj @ w.W_O[layer]).view(B, kv, -1, hd)  # (B, kv, group, hd)
    rows = w.patterns[layer][:, :n, :, pos]  # (kv, n, group, B): each row's query = its position
    gv = torch.einsum("jkgb,bjge->jkbe", rows, go)  # (kv, n, B, hd)
    ctx.flops.append(2 * B * d * go.shape[1] * go.shape[2] * hd + 2 * rows.numel() * hd + kv * 2 * n * B * hd * d)
    g = inj.new_zeros(n, B, d)
    g[pos, torch.arange(B, device=g.device)] = inj
    flat = g.view(n * B, d)
    for j in range(kv):
        flat.addmm_(gv[j].reshape(n * B, hd), w.W_V[layer][j])
    return g


def attn_dense(ctx: AttributionContext, layer: int, g: Tensor) -> Tensor:
    """Residual gradient below ``layer`` from (n, B, d) on its mid residual (residual included)."""
    w = ctx.weights
    n, B, d = g.shape
    kv, hd = w.n_kv_heads, w.d_head
    go = (g.view(n * B, d) @ w.W_O[layer]).view(n, B, kv, -1, hd)  # (q, B, kv, group, hd)
    grp = go.shape[3]
    go = go.permute(2, 3, 0, 1, 4).reshape(kv, grp * n, B * hd)  # (kv, group*q, B*hd)
    pat = w.patterns[layer][:, :n, :, :n].reshape(kv, n, grp * n)  # (kv, k, group*q)
    gv = torch.bmm(pat, go)  # (kv, k, B*hd): a group's query heads summed before W_V
    ctx.flops.append(2 * n * B * d * kv * grp * hd + 2 * kv * n * grp * n * B * hd + kv * 2 * n * B * hd * d)
    out = torch.addmm(g.view(n * B, d), gv[0].view(n * B, hd), w.W_V[layer][0])  # (n*B, d)
    for j in range(1, kv):
        out.addmm_(gv[j].view(n * B, hd), w.W_V[layer][j])
    return out.view(n, B, d)


def skip_backward(ctx: AttributionContext, layer: int, g: Tensor) -> Tensor:
    """Add the transcoder skip path (output location -> input location) to the gradient."""
    w = ctx.weights
    jac = w.skip[layer]
    if jac is None:
        return g
    n, B, d = g.shape
    through = (g.view(n * B, d) @ jac).view(n, B, d)  # (n, B, d)
    ctx.flops.append(2 * n * B * d * d)
    return g + through * w.skip_scale[layer, :n, None, None]


def sweep(ctx: AttributionContext, buf: Tensor, row_start: int, start_layer: int, pos: Tensor,
          vecs: Tensor) -> None:
    """Compute B target rows into ``buf[row_start : row_start + B]``.

    start_layer < n_layers: feature targets reading ``vecs`` (B, d) at that layer's input location
    at positions ``pos`` (B,); start_layer == n_layers: logit targets reading the final-norm output.
    """
    w, c = ctx.weights, ctx.cache
    L, P, F = ctx.n_layers, ctx.n_pos, ctx.n_active
    B = int(pos.shape[0])
    n = int(pos.max()) + 1
    rows = slice(row_start, row_start + B)
    if start_layer == L:
        g = vecs.new_zeros(n, B, vecs.shape[1])
        g[pos, torch.arange(B, device=g.device)] = vecs * w.read_final * c.scale_final[pos, None].to(vecs.dtype)
    for layer in range(min(start_layer, L - 1), -1, -1):
        if layer == start_layer:  # injection: one position per row
            inj = vecs * w.gain_feature_in[layer] * c.scale_mlp_in[layer, pos, None].to(vecs.dtype)
            g = attn_sparse(ctx, layer, inj, pos, n)
            continue
        add_edges(ctx, buf, rows, layer, g)
        g = attn_dense(ctx, layer, skip_backward(ctx, layer, g))
    tok = torch.bmm(g, ctx.token_vectors[:n, :, None])[..., 0]  # (n, B)
    ctx.flops.append(2 * g.numel())
    col = F + L * P
    buf[rows, col:col + n] += tok.T.to(buf.dtype)

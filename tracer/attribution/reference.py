"""The autograd reference: small, slow and obviously right. The oracle for the fast engine.

It rebuilds the local replacement model as an ordinary differentiable function of per-location
perturbations, from the frozen quantities of one forward pass (patterns, 1/rms scales, MLP
outputs), with plain per-head attention and dense decoders -- none of the fast engine's folding,
grouping or layout tricks -- and asks autograd for every row:

    A[t, s] = d reading_t / d (amount of source s's output vector added at its location)

Feature readings are pre-activations at the transcoder input location; logit readings are
``final_norm_out[-1] @ (W_U[tok] - mean W_U)``. Only for small graphs (one backward per row).
"""

import logging
import time

import torch
from torch import Tensor

from tracer.attribution.greedy import greedy_order, package_rows
from tracer.attribution.packaging import make_graph
from tracer.attribution.settings import adjacency_dtype, as_config
from tracer.attribution.targets import select_logits
from tracer.config import AttributionConfig
from tracer.graph.core import Graph
from tracer.models.forward import run_with_cache
from tracer.models.loaded import LoadedModel, weight
from tracer.models.tokens import check_token_ids
from tracer.replacement import Replacement, build_replacement, logit_vectors
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import check_against_model

logger = logging.getLogger(__name__)


def _dense_decoder(tc: Transcoders, layer: int, dtype: torch.dtype) -> Tensor:
    """(d_tc, n_out, d) whole decoder of one source layer."""
    W = tc.layers[layer].W_dec
    full = (W if isinstance(W, Tensor) else W.full()).to(dtype)
    return full[:, None] if full.dim() == 2 else full


def _replacement_forward(loaded: LoadedModel, rep: Replacement, tok_leaf: Tensor, out_leaves: list[Tensor],
                         dtype: torch.dtype) -> tuple[list[Tensor], Tensor]:
    """The linearised model: returns (transcoder inputs per layer (P, d), final-norm output (P, d))."""
    c, H, KV = rep.cache, loaded.n_heads, loaded.n_kv_heads
    r = rep.token_vectors + tok_leaf  # (P, d)
    x_ins = []
    for i, block in enumerate(loaded.blocks):
        x1 = r * c.scale_attn_in[i, :, None].to(dtype) * loaded.gain(block.attn_norm, dtype)
        v = x1 @ weight(block.v_proj).detach().to(dtype).T  # (P, KV*hd)
        v = v.view(v.shape[0], KV, -1).repeat_interleave(H // KV, dim=1)  # (P, H, hd)
        o = torch.einsum("hqk,khe->qhe", c.patterns[i].to(dtype), v).reshape(v.shape[0], -1)  # (P, H*hd)
        a = o @ weight(block.o_proj).detach().to(dtype).T  # (P, d)
        if block.post_attn_norm is not None and c.scale_post_attn is not None:
            a = a * c.scale_post_attn[i, :, None].to(dtype) * loaded.gain(block.post_attn_norm, dtype)
        h = r + a
        x_in = h * c.scale_mlp_in[i, :, None].to(dtype)
        if rep.input_location == "mlp_input":
            x_in = x_in * loaded.gain(block.mlp_norm, dtype)
        x_ins.append(x_in)
        skip_T, frozen_skip = rep.transcoders.layers[i].skip_T, rep.skips[i]
        out = c.feature_output(rep.output_location)[i].to(dtype) + out_leaves[i]
        if skip_T is not None and frozen_skip is not None:  # the skip is live: swap the frozen term
            out = out - frozen_skip + x_in @ skip_T
        if rep.output_location == "mlp_output" and block.post_mlp_norm is not None \
                and c.scale_post_mlp is not None:
            out = out * c.scale_post_mlp[i, :, None].to(dtype) * loaded.gain(block.post_mlp_norm, dtype)
        r = h + out
    final = r * c.scale_final[:, None].to(dtype) * loaded.gain(loaded.final_norm, dtype)
    return x_ins, final


def reference_adjacency(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, logit_ids: Tensor,
                        dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """(active_features (F, 3), activation values (F,), A (F+K, F+(L+1)P)) of every feature and logit row.

    Rows: all active features (node order), then the logit targets ``logit_ids``; columns: features,
    errors (layer-major), tokens.
    """
    loaded.adapter.check_config(loaded.config, n_pos=int(tokens.shape[0]))
    rep = build_replacement(loaded, tc, tokens, dtype)
    L, P, d = loaded.n_layers, int(tokens.shape[0]), loaded.d_model
    active, values = rep.active.cpu(), rep.values.cpu()
    tok_leaf = torch.zeros(P, d, dtype=dtype, requires_grad=True)
    out_leaves = [torch.zeros(P, d, dtype=dtype, requires_grad=True) for _ in range(L)]
    with torch.enable_grad():
        x_ins, final = _replacement_forward(loaded, rep, tok_leaf, out_leaves, dtype)
        logit_vecs = logit_vectors(loaded.W_U.detach().to(dtype), logit_ids)  # (K, d)
        reads = []
        for l in range(L):  # pre-activations of layer l's active features (node order)
            sel = active[:, 0] == l
            enc = tc.layers[l].W_enc.to(dtype)[active[sel, 2]]  # (n_l, d)
            reads.append((x_ins[l][active[sel, 1]] * enc).sum(-1))
        reads.append(logit_vecs @ final[-1])  # (K,)
        F = active.shape[0]
        R = torch.cat(reads)  # (n_rows,)
        eye = torch.eye(R.shape[0], dtype=dtype)  # one backward per row, vectorised with vmap
        grads = torch.autograd.grad(R, [*out_leaves, tok_leaf], grad_outputs=eye, is_grads_batched=True,
                                    allow_unused=True, materialize_grads=True)
    g_out, g_tok = grads[:L], grads[L]  # each (n_rows, P, d)
    A = torch.zeros(R.shape[0], F + (L + 1) * P, dtype=dtype)
    for l in range(L):
        cols = torch.nonzero(active[:, 0] == l).flatten()
        pos, feat = active[cols, 1], active[cols, 2]
        dec = _dense_decoder(tc, l, dtype)[feat] * values[cols, None, None]  # (n_l, n_out, d)
        for k in range(dec.shape[1]):  # a CLT feature writes to layers l, l+1, ...
            A[:, cols] += torch.einsum("rnd,nd->rn", g_out[l + k][:, pos], dec[:, k])
    for l in range(L):
        A[:, F + l * P:F + (l + 1) * P] = (g_out[l] * rep.errors[l]).sum(-1)
    A[:, F + L * P:] = (g_tok * rep.token_vectors).sum(-1)
    return active, values.detach(), A.detach()


def reference_attribute(loaded: LoadedModel, tc: Transcoders, tokens: Tensor | list[int],
                        cfg: AttributionConfig) -> Graph:
    """A Graph computed by autograd (all rows), with circuit-tracer's logit and feature selection.

    As in the fast engine, rows are computed in the model's dtype and stored in
    ``cfg.adjacency_dtype`` (cast before the greedy selection, which then sees the stored values).
    """
    t0 = time.perf_counter()
    cfg = as_config(cfg)
    tokens = check_token_ids(loaded, tokens)
    check_against_model(tc, n_layers=loaded.n_layers, d_model=loaded.d_model)
    dtype = loaded.dtype
    with torch.no_grad():
        logits = run_with_cache(loaded, tokens).logits[-1].to(dtype)
    targets = select_logits(logits, loaded.W_U.detach().to(dtype), cfg.max_n_logits, cfg.desired_logit_prob)
    active, values, rows = reference_adjacency(loaded, tc, tokens, targets.token_ids, dtype)
    F = active.shape[0]
    K = int(targets.token_ids.shape[0])
    full = torch.cat([rows, torch.zeros(rows.shape[0], K, dtype=rows.dtype)], 1)  # (F + K, N_all): logit columns
    full = full.to(adjacency_dtype(cfg, dtype))
    selected = greedy_order(full[:F], full[F:], targets.probabilities, cfg, F)
    A = package_rows(full[:F], full[F:], selected, F)
    return make_graph(loaded, tc, tokens, active, values, targets, A, selected, cfg, time.perf_counter() - t0)

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
from dataclasses import dataclass

import torch
from torch import Tensor

from tracer.config import AttributionConfig
from tracer.context import effective_gain
from tracer.forward import ForwardCache, layers_of, run_with_cache
from tracer.graph import Graph
from tracer.model import LoadedModel, check_token_ids
from tracer.transcoders.base import Transcoders

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, eq=False)
class _Frozen:
    cache: ForwardCache
    feature_in: Tensor  # (L, P, d)
    out_const: Tensor  # (L, P, d): output-location value minus the live skip term
    acts: list[Tensor]  # per layer (P, d_tc), BOS zeroed
    errors: Tensor  # (L, P, d)


def _dense_decoder(tc: Transcoders, layer: int, dtype: torch.dtype) -> Tensor:
    """(d_tc, n_out, d) whole decoder of one source layer."""
    W = tc.layers[layer].W_dec
    full = W.full() if hasattr(W, "full") else W  # type: ignore[union-attr]
    full = full.to(dtype)
    return full[:, None] if full.dim() == 2 else full


def _freeze(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, dtype: torch.dtype) -> _Frozen:
    ad = loaded.adapter
    in_loc, out_loc = ad.input_location(tc.input_hook), ad.output_location(tc.output_hook)
    cache = run_with_cache(loaded, tokens)
    x_in = cache.feature_input(in_loc).to(dtype)
    acts = []
    recon = torch.zeros_like(x_in)
    for i, layer in enumerate(tc.layers):
        a = layer.encode(x_in[i])  # (P, d_tc)
        a[0] = 0
        acts.append(a)
        dec = _dense_decoder(tc, i, dtype)  # (d_tc, n_out, d)
        for k in range(dec.shape[1]):
            recon[i + k] += a @ dec[:, k]
    skip_terms = torch.zeros_like(x_in)
    for i, layer in enumerate(tc.layers):
        recon[i] += layer.b_dec.to(dtype)
        if layer.skip_T is not None:
            skip_terms[i] = x_in[i] @ layer.skip_T.to(dtype)
    recon += skip_terms
    actual = cache.feature_output(out_loc).to(dtype)
    errors = actual - recon
    errors[:, 0] = 0
    return _Frozen(cache=cache, feature_in=x_in, out_const=actual - skip_terms, acts=acts, errors=errors)


def _replacement_forward(loaded: LoadedModel, tc: Transcoders, fz: _Frozen, tok_leaf: Tensor,
                         out_leaves: list[Tensor], dtype: torch.dtype) -> tuple[list[Tensor], Tensor]:
    """The linearised model: returns (transcoder inputs per layer (P, d), final-norm output (P, d))."""
    ad, c = loaded.adapter, fz.cache
    in_loc, out_loc = ad.input_location(tc.input_hook), ad.output_location(tc.output_hook)
    cfg = loaded.config
    H = int(cfg.num_attention_heads)  # type: ignore[attr-defined]
    KV = int(getattr(cfg, "num_key_value_heads", None) or H)
    emb = loaded.model.get_input_embeddings().weight.detach().to(dtype)  # type: ignore[operator,union-attr]
    scale = float(loaded.d_model) ** 0.5 if ad.embed_scale_sqrt_d else 1.0
    r = emb[c.tokens] * scale + tok_leaf  # (P, d)
    x_ins = []
    for i, layer in enumerate(layers_of(loaded.model)):
        g = lambda norm: effective_gain(norm, ad.norm_gain_offset, dtype)  # noqa: E731
        x1 = r * c.scale_attn_in[i, :, None].to(dtype) * g(layer.input_layernorm)
        v = x1 @ layer.self_attn.v_proj.weight.detach().to(dtype).T  # (P, KV*hd)
        v = v.view(v.shape[0], KV, -1).repeat_interleave(H // KV, dim=1)  # (P, H, hd)
        o = torch.einsum("hqk,khe->qhe", c.patterns[i].to(dtype), v).reshape(v.shape[0], -1)  # (P, H*hd)
        a = o @ layer.self_attn.o_proj.weight.detach().to(dtype).T  # (P, d)
        if ad.post_attn_norm:
            a = a * c.scale_post_attn[i, :, None].to(dtype) * g(getattr(layer, ad.post_attn_norm))  # type: ignore[index]
        h = r + a
        x_in = h * c.scale_mlp_in[i, :, None].to(dtype)
        if in_loc == "mlp_input":
            x_in = x_in * g(getattr(layer, ad.mlp_norm))
        x_ins.append(x_in)
        skip_T = tc.layers[i].skip_T
        out = fz.out_const[i] + out_leaves[i]
        if skip_T is not None:
            out = out + x_in @ skip_T.to(dtype)
        if out_loc == "mlp_output" and ad.post_mlp_norm:
            out = out * c.scale_post_mlp[i, :, None].to(dtype) * g(getattr(layer, ad.post_mlp_norm))  # type: ignore[index]
        r = h + out
    final = r * c.scale_final[:, None].to(dtype) * effective_gain(loaded.model.model.norm, ad.norm_gain_offset, dtype)  # type: ignore[union-attr]
    return x_ins, final


def reference_adjacency(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, logit_ids: Tensor,
                        dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """(active_features (F, 3), activation values (F,), A (F+K, F+(L+1)P)) of every feature and logit row.

    Rows: all active features (node order), then the logit targets ``logit_ids``; columns: features,
    errors (layer-major), tokens.
    """
    loaded.adapter.check_config(loaded.config, n_pos=int(tokens.shape[0]))
    fz = _freeze(loaded, tc, tokens, dtype)
    L, P, d = loaded.n_layers, int(tokens.shape[0]), loaded.d_model
    active = torch.cat([torch.cat([torch.full((nz.shape[0], 1), i), nz], 1)
                        for i, nz in enumerate(torch.nonzero(a) for a in fz.acts)]).long()  # (F, 3)
    values = torch.stack([fz.acts[int(l)][int(p), int(f)] for l, p, f in active.tolist()]) \
        if len(active) else torch.zeros(0, dtype=dtype)
    tok_leaf = torch.zeros(P, d, dtype=dtype, requires_grad=True)
    out_leaves = [torch.zeros(P, d, dtype=dtype, requires_grad=True) for _ in range(L)]
    with torch.enable_grad():
        x_ins, final = _replacement_forward(loaded, tc, fz, tok_leaf, out_leaves, dtype)
        W_U = loaded.model.get_output_embeddings().weight.detach().to(dtype)  # type: ignore[operator,union-attr]
        logit_vecs = W_U[logit_ids] - W_U.mean(0, keepdim=True)  # (K, d)
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
        A[:, F + l * P:F + (l + 1) * P] = (g_out[l] * fz.errors[l]).sum(-1)
    tok_vecs = loaded.model.get_input_embeddings().weight.detach().to(dtype)[fz.cache.tokens]  # type: ignore[operator,union-attr]
    if loaded.adapter.embed_scale_sqrt_d:
        tok_vecs = tok_vecs * float(d) ** 0.5
    A[:, F + L * P:] = (g_tok * tok_vecs).sum(-1)
    return active, values.detach(), A.detach()


def reference_attribute(loaded: LoadedModel, tc: Transcoders, tokens: Tensor | list[int],
                        cfg: AttributionConfig) -> Graph:
    """A Graph computed by autograd (all rows), with circuit-tracer's logit and feature selection."""
    from tracer.attribution import LogitTargets, greedy_order, package_rows, select_logits

    tokens = check_token_ids(loaded, tokens)
    dtype = loaded.dtype
    with torch.no_grad():
        logits = run_with_cache(loaded, tokens).logits[-1].to(dtype)
    W_U = loaded.model.get_output_embeddings().weight.detach().to(dtype)  # type: ignore[operator,union-attr]
    targets: LogitTargets = select_logits(logits, W_U, cfg.max_n_logits, cfg.desired_logit_prob)
    active, values, rows = reference_adjacency(loaded, tc, tokens, targets.token_ids, dtype)
    F = active.shape[0]
    K = int(targets.token_ids.shape[0])
    full = torch.cat([rows, torch.zeros(rows.shape[0], K, dtype=rows.dtype)], 1)  # logit columns
    selected = greedy_order(full[:F], full[F:], targets.probabilities, cfg, F)
    A = package_rows(full[:F], full[F:], selected, F)
    from tracer.attribution import make_graph

    return make_graph(loaded, tc, tokens, active, values, targets, A, selected, cfg, 0.0)

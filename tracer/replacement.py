"""The local replacement model's bookkeeping, written once.

For one prompt, the replacement model swaps each layer's MLP for its transcoder: the output at
the transcoder's output location becomes ``b_dec + sum_i a_i W_dec[i] (+ skip) + error``, where
the error vector is whatever the transcoder misses, so the model's forward pass is unchanged.
Everything that attribution (the fast engine and the autograd reference), interventions and the
analyses need of it comes from here:

* :func:`encode` -- feature activations of one layer, position 0 (BOS) zeroed as circuit-tracer does;
* :func:`active_features` -- the sparse (layer, pos, feature) activations in node order;
* :func:`decode_active` / :func:`reconstruction` -- activation-scaled decoder vectors per output
  layer (a CLT feature writes to every later layer) and their sum with ``b_dec`` and the skip;
* :func:`error_vectors` -- output minus reconstruction, BOS zeroed;
* :func:`token_vectors` and :func:`logit_vectors` -- embeddings as they enter the residual stream
  (with the embedding scale) and demeaned unembedding rows;
* :func:`decode_features` -- ``sum_i a_i W_dec[i]`` over any feature set (a family's point cloud).

:func:`build_replacement` bundles them for one prompt.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from tracer.models.forward import ForwardCache, run_with_cache
from tracer.models.loaded import LoadedModel
from tracer.transcoders.base import TranscoderLayer, Transcoders
from tracer.weights import check_finite_run


def encode(layer: TranscoderLayer, x: Tensor) -> Tensor:
    """(..., n_pos, d_model) transcoder input -> (..., n_pos, d_transcoder) activations, position 0 zeroed.

    Position 0 (the BOS) never has active features, as in circuit-tracer; a batch of sequences
    ``(batch, n_pos, d_model)`` has position 0 of every sequence zeroed.
    """
    acts = layer.encode(x)  # (..., n_pos, d_transcoder)
    acts[..., 0, :] = 0
    return acts


def encode_non_bos(layer: TranscoderLayer, x: Tensor) -> Tensor:
    """(n, d_model) transcoder inputs of positions other than 0 -> (n, d_transcoder) activations.

    For callers that gather real positions of a padded batch and leave the BOS out themselves
    (:mod:`tracer.activations`): the same activations as :func:`encode` at those positions.
    """
    return layer.encode(x)


def active_features(tc: Transcoders, feature_in: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer: (n_l, 2) (pos, feature) of active features, sorted, and their (n_l,) activations.

    feature_in: (n_layers, n_pos, d_model) at the transcoders' input location.
    """
    idx, vals = [], []
    for layer, x in zip(tc.layers, feature_in):
        acts = encode(layer, x)  # (n_pos, d_transcoder)
        nz = torch.nonzero(acts)  # (n_l, 2), row-major: sorted by (pos, feature)
        idx.append(nz)
        vals.append(acts[nz[:, 0], nz[:, 1]])
    return idx, vals


def stack_active(idx: list[Tensor]) -> Tensor:
    """Per-layer (n_l, 2) (pos, feature) -> (n_active, 3) (layer, pos, feature) in node order."""
    device = idx[0].device if idx else torch.device("cpu")
    parts = [torch.cat([torch.full((i.shape[0], 1), layer, device=device), i], 1) for layer, i in enumerate(idx)]
    return torch.cat(parts).long() if parts else torch.zeros(0, 3, dtype=torch.long)


@dataclass(frozen=True, kw_only=True, eq=False)
class Decoded:
    """Activation-scaled decoder vectors that one source layer writes at one output layer."""

    source_layer: int
    positions: Tensor
    """(n,) position of each active feature of the source layer"""
    vectors: Tensor
    """(n, d_model) ``a_i * W_dec[i]`` (the CLT slice into this output layer)"""


def decode_active(tc: Transcoders, idx: list[Tensor], vals: list[Tensor], dtype: torch.dtype,
                  device: torch.device) -> list[list[Decoded]]:
    """outputs[l]: the decoded vectors of every source layer writing at layer l (source order)."""
    outputs: list[list[Decoded]] = [[] for _ in range(tc.n_layers)]
    for src, (layer, i, v) in enumerate(zip(tc.layers, idx, vals)):
        rows = layer.decoder_rows(i[:, 1], dtype, device)  # PLT (n, d); CLT (n, L - src, d)
        rows = rows[:, None] if rows.dim() == 2 else rows  # (n, n_out, d)
        for k in range(rows.shape[1]):
            vecs = rows[:, k] * v[:, None]  # (n, d) activation-scaled decoder vectors
            outputs[src + k].append(Decoded(source_layer=src, positions=i[:, 0], vectors=vecs))
    return outputs


def skip_terms(tc: Transcoders, feature_in: Tensor) -> list[Tensor | None]:
    """Per layer: the (n_pos, d_model) skip term ``x_in @ skip_T``, or None."""
    return [None if layer.skip_T is None else x @ layer.skip_T for layer, x in zip(tc.layers, feature_in)]


def reconstruction(tc: Transcoders, decoded: list[list[Decoded]], skips: list[Tensor | None],
                   n_pos: int) -> Tensor:
    """(n_layers, n_pos, d_model): ``b_dec`` + decoded vectors (source order) + skip, per layer."""
    recon = torch.stack([layer.b_dec.expand(n_pos, -1) for layer in tc.layers]).clone()  # (L, P, d)
    for src in range(tc.n_layers):  # the order every engine has always summed in
        for out, blocks in enumerate(decoded):
            for blk in blocks:
                if blk.source_layer == src:
                    recon[out].index_add_(0, blk.positions, blk.vectors)
    for layer, skip in enumerate(skips):
        if skip is not None:
            recon[layer] += skip
    return recon


def error_vectors(outputs: Tensor, recon: Tensor) -> Tensor:
    """(n_layers, n_pos, d_model) output minus reconstruction at the output location, BOS zeroed."""
    errors = outputs - recon
    errors[:, 0] = 0
    return errors


def token_vectors(loaded: LoadedModel, tokens: Tensor, dtype: torch.dtype) -> Tensor:
    """(n_pos, d_model) embeddings as they enter the residual stream (Gemma: x sqrt(d_model))."""
    emb = loaded.W_E.detach()
    vecs = emb[tokens.to(emb.device)].to(dtype)  # (n_pos, d_model)
    scale = loaded.embed_scale
    if scale is not None:  # as Gemma2Model.forward scales: the factor rounded to the weights' dtype
        vecs = vecs * torch.tensor(scale, dtype=emb.dtype).to(dtype)
    return vecs


def logit_vectors(W_U: Tensor, token_ids: Tensor) -> Tensor:
    """(n_logits, d_model) demeaned unembedding rows: a reader of ``logit - mean(logit)``."""
    return W_U[token_ids.to(W_U.device)] - W_U.mean(0, keepdim=True)


def decode_features(layer: TranscoderLayer, features: Tensor, values: Tensor, *,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """``values @ W_dec[features]``: (n_rows, n_f) activations of features (n_f,) -> (n_rows, [n_out,] d_model).

    The reconstruction a feature set writes (a family's point cloud); a CLT layer gives one vector
    per output layer (n_rows, n_out, d_model).
    """
    rows = layer.decoder_rows(features, dtype, values.device)  # (n_f, d) | (n_f, n_out, d)
    if rows.dim() == 2:
        return values.to(dtype) @ rows  # (n_rows, d)
    return torch.einsum("rf,fkd->rkd", values.to(dtype), rows)  # (n_rows, n_out, d)


@dataclass(frozen=True, kw_only=True, eq=False)
class Replacement:
    """One prompt's local replacement model: what every consumer of it reads."""

    cache: ForwardCache
    transcoders: Transcoders
    """on the model's device, in ``dtype`` (mapped decoders stay mapped)"""
    input_location: str
    output_location: str
    feature_in: Tensor
    """(n_layers, n_pos, d_model) at the transcoders' input location"""
    active: Tensor
    """(n_active, 3) (layer, pos, feature), node order"""
    values: Tensor
    """(n_active,) activations"""
    decoded: list[list[Decoded]]
    """decoded[l]: activation-scaled decoder vectors written at layer l"""
    skips: list[Tensor | None]
    """per layer (n_pos, d_model) skip term, or None"""
    reconstruction: Tensor
    """(n_layers, n_pos, d_model)"""
    errors: Tensor
    """(n_layers, n_pos, d_model), BOS zeroed"""
    token_vectors: Tensor
    """(n_pos, d_model)"""

    @property
    def n_pos(self) -> int:
        return int(self.feature_in.shape[1])

    def layer_activations(self, layer: int) -> Tensor:
        """(n_pos, d_transcoder) dense activations of one layer (BOS zeroed)."""
        sel = self.active[:, 0] == layer
        width = self.transcoders.layers[layer].d_transcoder
        dense = self.values.new_zeros(self.n_pos, width)  # (n_pos, d_transcoder)
        dense[self.active[sel, 1], self.active[sel, 2]] = self.values[sel]
        return dense


def build_replacement(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, dtype: torch.dtype,
                      cache: ForwardCache | None = None) -> Replacement:
    """Forward pass (unless ``cache`` is given), encoding, decoding, reconstruction and errors."""
    ad = loaded.adapter
    in_loc, out_loc = ad.input_location(tc.input_hook), ad.output_location(tc.output_hook)
    cache = cache if cache is not None else run_with_cache(loaded, tokens)
    dev, P = loaded.device, int(tokens.shape[0])
    feature_in = cache.feature_input(in_loc).to(dtype)  # (L, P, d)
    tcd = tc.to(dev, dtype)
    idx, vals = active_features(tcd, feature_in)
    decoded = decode_active(tcd, idx, vals, dtype, dev)
    skips = skip_terms(tcd, feature_in)
    recon = reconstruction(tcd, decoded, skips, P)
    errors = error_vectors(cache.feature_output(out_loc).to(dtype), recon)
    values = torch.cat(vals) if vals else feature_in.new_zeros(0)
    check_finite_run([("activations", values), ("residual stream", cache.resid_pre), ("logits", cache.logits)],
                     loaded, tc)
    return Replacement(cache=cache, transcoders=tcd, input_location=in_loc, output_location=out_loc,
                       feature_in=feature_in, active=stack_active(idx).to(dev), values=values, decoded=decoded,
                       skips=skips, reconstruction=recon, errors=errors,
                       token_vectors=token_vectors(loaded, tokens, dtype))

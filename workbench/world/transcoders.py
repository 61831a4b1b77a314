"""Transcoders of the demo world: the training module, and small batched helpers over tracer's type.

Both kinds read the MLP input of layer l (the output of ``post_attention_layernorm``) and
reconstruct that MLP's output. The in-memory form is tracer's
:class:`~tracer.transcoders.base.Transcoders` (JumpReLU layers: ``a = pre * (pre > threshold)``
with ``pre = x @ W_enc.T + b_enc``); the files are circuit-tracer's, written by
:func:`tracer.transcoders.writer.write_transcoders` (:func:`save_transcoders` adds the config keys
the world has always written) and read by :func:`tracer.transcoders.loaders.load_transcoders`.

* PLT (``transcoder_set``): ``y_l = a_l @ W_dec_l + b_dec_l``; files ``layer_{l}.safetensors``.
* CLT (``cross_layer_transcoder``): features of layer i write to layers i..L-1,
  ``y_l = sum_{i<=l} a_i @ W_dec_i[:, l - i] + b_dec_l``; files ``W_enc_{i}.safetensors`` and
  ``W_dec_{i}.safetensors``.

Training works on inputs and outputs divided by one scalar per layer (their RMS norm) so that
one learning rate suits every layer; :meth:`TrainableTranscoders.export` folds the scales back
into the weights.
"""

import logging
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from tracer.replacement import decode_features
from tracer.transcoders.base import Kind, TranscoderLayer, Transcoders
from tracer.transcoders.writer import write_transcoders

logger = logging.getLogger(__name__)


def encode_layers(tc: Transcoders, x: Tensor) -> Tensor:
    """Activations `(L, n, F)` of every layer from MLP inputs `x` `(L, n, d_model)` (each layer's
    :meth:`~tracer.transcoders.base.TranscoderLayer.encode`; rows are tokens, none is a BOS)."""
    return torch.stack([layer.encode(x_l) for layer, x_l in zip(tc.layers, x)])  # (L, n, F)


def decode_layers(tc: Transcoders, acts: Tensor) -> Tensor:
    """MLP outputs `(L, n, d_model)` from activations `(L, n, F)`: ``b_dec`` plus every source
    layer's :func:`~tracer.replacement.decode_features` (a CLT layer writes to itself and every later one)."""
    n_layers, n, d_tc = acts.shape
    out = torch.stack([layer.b_dec.expand(n, -1) for layer in tc.layers])  # (L, n, d_model)
    every = torch.arange(d_tc)
    for i, layer in enumerate(tc.layers):
        written = decode_features(layer, every, acts[i], dtype=acts.dtype)  # PLT (n, d); CLT (n, L - i, d)
        if written.dim() == 2:
            out[i] += written
        else:
            out[i:] += written.permute(1, 0, 2)  # (L - i, n, d_model)
    return out


def save_transcoders(tc: Transcoders, out_dir: Path) -> Path:
    """Write ``tc`` in circuit-tracer's format (config.yaml also records n_layers, d_transcoder, d_model)."""
    extra: dict[str, object] = {"n_layers": tc.n_layers, "d_transcoder": tc.d_transcoder, "d_model": tc.d_model}
    return write_transcoders(tc, out_dir, extra_config=extra)


class TrainableTranscoders(nn.Module):
    """PLT or CLT for all layers at once, trained with BatchTopK on RMS-scaled data."""

    def __init__(self, kind: str, n_layers: int, d_model: int, d_transcoder: int, *,
                 generator: torch.Generator) -> None:
        super().__init__()
        if kind not in ("plt", "clt"):
            raise ValueError(f"kind must be 'plt' or 'clt'; got {kind!r}.")
        self.kind: Kind = "plt" if kind == "plt" else "clt"
        self.n_layers = n_layers
        bound = 1.0 / math.sqrt(d_model)
        enc = (torch.rand(n_layers, d_transcoder, d_model, generator=generator) * 2 - 1) * bound
        self.W_enc = nn.Parameter(enc)  # (L, F, d_model)
        self.b_enc = nn.Parameter(torch.zeros(n_layers, d_transcoder))  # (L, F)
        self.W_dec = nn.ParameterList()
        for i in range(n_layers):
            width = 1 if kind == "plt" else n_layers - i
            dec = torch.randn(d_transcoder, width, d_model, generator=generator)  # (F, width, d_model)
            self.W_dec.append(nn.Parameter(dec / dec.flatten(1).norm(dim=1)[:, None, None] * 0.5))
        self.b_dec = nn.Parameter(torch.zeros(n_layers, d_model))  # (L, d_model)

    def pre(self, x: Tensor) -> Tensor:
        """Pre-activations `(L, n, F)` of scaled inputs `(L, n, d_model)`."""
        return torch.einsum("lnd,lfd->lnf", x, self.W_enc) + self.b_enc[:, None]

    def decode(self, acts: Tensor) -> Tensor:
        """Scaled outputs `(L, n, d_model)` from activations `(L, n, F)`."""
        n_layers, n, _ = acts.shape
        outs = [self.b_dec[l].expand(n, -1) for l in range(n_layers)]
        for i in range(n_layers):
            w = self.W_dec[i]  # (F, width, d_model)
            contrib = (acts[i] @ w.flatten(1)).view(n, w.shape[1], -1)  # (n, width, d_model)
            for j in range(w.shape[1]):
                outs[i + j] = outs[i + j] + contrib[:, j]
        return torch.stack(outs)  # (L, n, d_model)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Give every feature's decoder (all its target layers together) unit norm."""
        for w in self.W_dec:
            w.div_(w.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None])

    @torch.no_grad()
    def export(self, threshold: Tensor, x_scale: Tensor, y_scale: Tensor, *, scan: str = "") -> Transcoders:
        """tracer's form: fold the per-layer scales (L,) back in; `threshold` `(L,)` or `(L, F)`."""
        n_layers, d_tc, _ = self.W_enc.shape
        thr = threshold.expand(n_layers, d_tc) if threshold.ndim == 2 else threshold[:, None].expand(-1, d_tc)
        W_enc = (self.W_enc / x_scale[:, None, None]).clone()  # (L, F, d_model)
        b_dec = (self.b_dec * y_scale[:, None]).clone()  # (L, d_model)
        layers = []
        for i, w in enumerate(self.W_dec):
            scale = y_scale[i:i + w.shape[1]][None, :, None]  # (1, width, 1)
            scaled = w * scale  # (F, width, d_model)
            layers.append(TranscoderLayer(
                W_enc=W_enc[i], b_enc=self.b_enc[i].clone(), W_dec=scaled[:, 0].clone() if self.kind == "plt"
                else scaled.clone(), b_dec=b_dec[i], activation="jumprelu", threshold=thr[i].clone().contiguous()))
        return Transcoders(kind=self.kind, layers=tuple(layers), scan=scan)

"""Per-layer (PLT) and cross-layer (CLT) transcoders, as the attribution engine sees them.

One :class:`TranscoderLayer` per *source* layer i:

* encoder: ``pre = x_i @ W_enc.T + b_enc``, ``a = act(pre)`` with ReLU, JumpReLU
  (``pre * (pre > threshold)``) or TopK (keep the k largest pre-activations per position);
* decoder rows: PLT ``W_dec (d_transcoder, d_model)`` writes to layer i;
  CLT ``W_dec (d_transcoder, n_layers - i, d_model)`` writes to layers i..n_layers-1;
* skip: ``y_i += x_i @ skip_T`` (``skip_T`` is ``W_skip.T`` for a PLT file, ``W_skip`` for a CLT:
  circuit-tracer's two conventions, normalised here).

Decoders may be memory-mapped (:class:`tracer.transcoders.mmap.MappedTensor`): only the rows
of active features are ever read.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tracer.errors import TranscoderFormatError
from tracer.transcoders.mmap import MappedTensor
from tracer.weights import check_weight

Kind = Literal["plt", "clt"]
Activation = Literal["relu", "jumprelu", "topk"]


@dataclass(frozen=True, kw_only=True, eq=False)
class TranscoderLayer:
    """The weights of one source layer."""

    W_enc: Tensor
    """(d_transcoder, d_model)"""
    b_enc: Tensor
    """(d_transcoder,)"""
    W_dec: Tensor | MappedTensor
    """PLT (d_transcoder, d_model); CLT (d_transcoder, n_layers - layer, d_model)"""
    b_dec: Tensor
    """(d_model,) the bias of the *output* at this layer"""
    activation: Activation = "relu"
    threshold: Tensor | None = None
    """(d_transcoder,) JumpReLU thresholds"""
    topk: int | None = None
    skip_T: Tensor | None = None
    """(d_model, d_model): the skip adds ``x @ skip_T`` to this layer's output"""

    @property
    def d_transcoder(self) -> int:
        return int(self.W_enc.shape[0])

    def pre_activation(self, x: Tensor) -> Tensor:
        """(..., d_model) -> (..., d_transcoder)"""
        return x @ self.W_enc.T.to(x.dtype) + self.b_enc.to(x.dtype)

    def activate(self, pre: Tensor) -> Tensor:
        """(..., d_transcoder) pre-activations -> activations (same shape)."""
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            assert self.threshold is not None
            return pre * (pre > self.threshold.to(pre.dtype))
        assert self.topk is not None
        idx = pre.topk(self.topk, dim=-1).indices  # (..., k)
        gate = torch.zeros_like(pre).scatter_(-1, idx, 1.0)
        return pre * gate

    def encode(self, x: Tensor) -> Tensor:
        return self.activate(self.pre_activation(x))

    def decoder_rows(self, index: Tensor, dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
        """Decoder rows of features ``index``: (n, d_model) PLT or (n, n_out, d_model) CLT."""
        if isinstance(self.W_dec, MappedTensor):
            rows = self.W_dec.rows(index)  # checked as read
        else:
            rows = self.W_dec[index.to(self.W_dec.device)]
            check_weight(rows, "W_dec", "the transcoders", TranscoderFormatError, rows=index)  # sampled at load
        return rows.to(device=device, dtype=dtype)


@dataclass(frozen=True, kw_only=True, eq=False)
class Transcoders:
    """A complete transcoder set for a model: every layer, one kind."""

    kind: Kind
    layers: tuple[TranscoderLayer, ...]
    input_hook: str = "mlp.hook_in"
    output_hook: str = "mlp.hook_out"
    scan: str = ""
    source: str = ""
    """where it was loaded from (for provenance)"""

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.layers[0].W_enc.shape[1])

    @property
    def d_transcoder(self) -> int:
        return self.layers[0].d_transcoder

    @property
    def has_skip(self) -> bool:
        return any(layer.skip_T is not None for layer in self.layers)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "Transcoders":
        """Encoders, biases and skips on ``device`` in ``dtype`` (mapped decoders stay mapped)."""

        def conv(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        def conv_opt(t: Tensor | None) -> Tensor | None:
            return None if t is None else conv(t)

        layers = tuple(
            TranscoderLayer(
                W_enc=conv(layer.W_enc), b_enc=conv(layer.b_enc),
                W_dec=layer.W_dec if isinstance(layer.W_dec, MappedTensor) else conv(layer.W_dec),
                b_dec=conv(layer.b_dec), activation=layer.activation,
                threshold=conv_opt(layer.threshold), topk=layer.topk, skip_T=conv_opt(layer.skip_T),
            )
            for layer in self.layers
        )
        return Transcoders(kind=self.kind, layers=layers, input_hook=self.input_hook,
                           output_hook=self.output_hook, scan=self.scan, source=self.source)

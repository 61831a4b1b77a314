"""Transcoders of the demo world: training modules and circuit-tracer's on-disk formats.

Both kinds read the MLP input of layer l (the output of ``post_attention_layernorm``) and
reconstruct that MLP's output. Saved activations are JumpReLU: ``a = pre * (pre > threshold)``
with ``pre = x @ W_enc.T + b_enc``.

* PLT (``transcoder_set``): ``y_l = a_l @ W_dec_l + b_dec_l``; files ``layer_{l}.safetensors``.
* CLT (``cross_layer_transcoder``): features of layer i write to layers i..L-1,
  ``y_l = sum_{i<=l} a_i @ W_dec_i[:, l - i] + b_dec_l``; files ``W_enc_{i}.safetensors`` and
  ``W_dec_{i}.safetensors``.

Training works on inputs and outputs divided by one scalar per layer (their RMS norm) so that
one learning rate suits every layer; :meth:`export` folds the scales back into the weights.
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tracer.io import atomic_path

logger = logging.getLogger(__name__)

HOOK_IN, HOOK_OUT = "mlp.hook_in", "mlp.hook_out"


@dataclass(frozen=True, kw_only=True)
class SavedTranscoders:
    """Transcoder weights in the saved (unscaled, JumpReLU) form; L = n_layers, F = d_transcoder."""

    kind: str
    """"plt" or "clt"."""
    W_enc: Tensor
    """(L, F, d_model)."""
    b_enc: Tensor
    """(L, F)."""
    threshold: Tensor
    """(L, F): JumpReLU thresholds on the pre-activation."""
    W_dec: list[Tensor]
    """PLT: L tensors (F, d_model); CLT: L tensors (F, L - i, d_model)."""
    b_dec: Tensor
    """(L, d_model)."""

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return int(self.W_enc.shape[0])

    def encode(self, x: Tensor) -> Tensor:
        """Activations `(L, n, F)` from MLP inputs `x` `(L, n, d_model)`."""
        pre = torch.einsum("lnd,lfd->lnf", x, self.W_enc) + self.b_enc[:, None]  # (L, n, F)
        return pre * (pre > self.threshold[:, None])

    def decode(self, acts: Tensor) -> Tensor:
        """MLP outputs `(L, n, d_model)` from activations `(L, n, F)`."""
        n_layers, n, _ = acts.shape
        out = self.b_dec[:, None].expand(n_layers, n, -1).clone()  # (L, n, d_model)
        for i in range(n_layers):
            if self.kind == "plt":
                out[i] += acts[i] @ self.W_dec[i]  # (n, d_model)
            else:
                out[i:] += torch.einsum("nf,fld->lnd", acts[i], self.W_dec[i])  # (L - i, n, d_model)
        return out


class TrainableTranscoders(nn.Module):
    """PLT or CLT for all layers at once, trained with BatchTopK on RMS-scaled data."""

    def __init__(self, kind: str, n_layers: int, d_model: int, d_transcoder: int, *,
                 generator: torch.Generator) -> None:
        super().__init__()
        if kind not in ("plt", "clt"):
            raise ValueError(f"kind must be 'plt' or 'clt'; got {kind!r}.")
        self.kind, self.n_layers = kind, n_layers
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
    def export(self, threshold: Tensor, x_scale: Tensor, y_scale: Tensor) -> SavedTranscoders:
        """Saved form: fold the per-layer scales (L,) back in; `threshold` `(L,)` or `(L, F)`."""
        n_layers, d_tc, _ = self.W_enc.shape
        thr = threshold.expand(n_layers, d_tc) if threshold.ndim == 2 else threshold[:, None].expand(-1, d_tc)
        W_dec = []
        for i, w in enumerate(self.W_dec):
            scale = y_scale[i:i + w.shape[1]][None, :, None]  # (1, width, 1)
            scaled = w * scale  # (F, width, d_model)
            W_dec.append(scaled[:, 0].clone() if self.kind == "plt" else scaled.clone())
        return SavedTranscoders(
            kind=self.kind, W_enc=(self.W_enc / x_scale[:, None, None]).clone(), b_enc=self.b_enc.clone(),
            threshold=thr.clone().contiguous(), W_dec=W_dec, b_dec=(self.b_dec * y_scale[:, None]).clone())


def write_transcoders(tc: SavedTranscoders, out_dir: Path, *, scan: str) -> None:
    """Write `tc` in circuit-tracer's format into `out_dir` (config.yaml + safetensors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(tc.n_layers):
        enc = {"b_enc": tc.b_enc[i], "b_dec": tc.b_dec[i]}
        if tc.kind == "plt":
            tensors = {"W_enc": tc.W_enc[i], "W_dec": tc.W_dec[i], **enc,
                       "activation_function.threshold": tc.threshold[i]}
            _save(tensors, out_dir / f"layer_{i}.safetensors")
        else:
            _save({f"W_enc_{i}": tc.W_enc[i], f"b_enc_{i}": tc.b_enc[i], f"b_dec_{i}": tc.b_dec[i],
                   f"threshold_{i}": tc.threshold[i]}, out_dir / f"W_enc_{i}.safetensors")
            _save({f"W_dec_{i}": tc.W_dec[i]}, out_dir / f"W_dec_{i}.safetensors")
    config = {
        "model_kind": "transcoder_set" if tc.kind == "plt" else "cross_layer_transcoder",
        "feature_input_hook": HOOK_IN, "feature_output_hook": HOOK_OUT, "scan": scan,
        "n_layers": tc.n_layers,
        "d_transcoder": int(tc.W_enc.shape[1]), "d_model": int(tc.W_enc.shape[2]),
    }
    with atomic_path(out_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))


def read_transcoders(directory: Path) -> SavedTranscoders:
    """Load a PLT or CLT written by :func:`write_transcoders` (upcast to float32)."""
    cfg = yaml.safe_load((directory / "config.yaml").read_text())
    kind = {"transcoder_set": "plt", "cross_layer_transcoder": "clt"}[cfg["model_kind"]]
    W_enc, b_enc, thr, W_dec, b_dec = [], [], [], [], []
    for i in range(int(cfg["n_layers"])):
        if kind == "plt":
            t = load_file(str(directory / f"layer_{i}.safetensors"))
            names = ("W_enc", "b_enc", "activation_function.threshold", "b_dec")
            W_dec.append(t["W_dec"].float())
        else:
            t = load_file(str(directory / f"W_enc_{i}.safetensors"))
            names = (f"W_enc_{i}", f"b_enc_{i}", f"threshold_{i}", f"b_dec_{i}")
            W_dec.append(load_file(str(directory / f"W_dec_{i}.safetensors"))[f"W_dec_{i}"].float())
        for store, name in zip((W_enc, b_enc, thr, b_dec), names):
            store.append(t[name].float())
    return SavedTranscoders(kind=kind, W_enc=torch.stack(W_enc), b_enc=torch.stack(b_enc),
                            threshold=torch.stack(thr), W_dec=W_dec, b_dec=torch.stack(b_dec))


def _save(tensors: dict[str, Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(tmp))

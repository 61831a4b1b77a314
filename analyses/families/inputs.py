"""Decoder rows of a :class:`tracer.transcoders.base.Transcoders` set, as FeatureFamilies' ``X``.

PLT: each feature's decoder row. CLT (features of source layer i write to layers i..L-1), three
ways to compare features:

* ``"concat"`` (default): the feature's decoders into every layer it writes to, concatenated
  and placed at those layers' blocks of an ``(n_layers * d_model,)`` row (zeros before its
  source layer), so rows of every source layer share one width and their cosine sums over the
  output layers they share;
* ``"into"``: the decoder into one analysed layer L, for the features of every source layer
  i <= L (fit with ``per_layer=False`` to let families span source layers);
* ``"sum"``: the sum of its decoders (its total write to the residual stream).
"""

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where decoders are read: `workbench --help` does not pay for it
    import torch

    from tracer.transcoders.base import Transcoders
    from tracer.transcoders.mmap import MappedTensor

CLT_MODES = ("concat", "into", "sum")


def _full(w: "torch.Tensor | MappedTensor") -> "torch.Tensor":
    from tracer.transcoders.mmap import MappedTensor

    return w.full() if isinstance(w, MappedTensor) else w


def place_decoders(W_dec: np.ndarray, n_layers: int) -> np.ndarray:
    """CLT decoders (F, n_out, d_model) of one source layer (writing to the last n_out layers) as
    rows (F, n_layers * d_model), each output layer at its own block."""
    n_feat, n_out, d_model = W_dec.shape
    out = np.zeros((n_feat, n_layers * d_model), dtype=np.float32)
    out[:, (n_layers - n_out) * d_model:] = W_dec.reshape(n_feat, n_out * d_model)  # (F, n_out * d_model)
    return out


def decoder_matrix(transcoders: "Transcoders", layers: int | list[int] | str = "all", *,
                   clt_mode: str = "concat") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (n_rows, dim) float32, layer (n_rows,), feature (n_rows,))`` for the chosen layers
    ("all", one layer or a list); for ``clt_mode="into"`` the chosen layers are analysed layers."""
    import torch

    if clt_mode not in CLT_MODES:
        raise ValueError(f"clt_mode must be one of {list(CLT_MODES)}; got {clt_mode!r}.")
    n_layers = transcoders.n_layers
    chosen = list(range(n_layers)) if layers == "all" else [layers] if isinstance(layers, int) else layers
    if not isinstance(chosen, list) or not all(isinstance(x, int) and 0 <= x < n_layers for x in chosen):
        raise ValueError(f"layers must be 'all', an int or a list of ints in [0, {n_layers}); got {layers!r}.")
    if transcoders.kind == "clt" and clt_mode == "into" and len(chosen) != 1:
        raise ValueError(f"layers must be one analysed layer for clt_mode='into'; got {layers!r}.")
    xs, ls, fs = [], [], []
    for target in chosen:
        if transcoders.kind == "clt" and clt_mode == "into":
            sources = [(i, _full(transcoders.layers[i].W_dec)[:, target - i]) for i in range(target + 1)]
        else:
            w = _full(transcoders.layers[target].W_dec).detach().float().cpu()
            if transcoders.kind == "clt":
                w = w.sum(dim=1) if clt_mode == "sum" else torch.from_numpy(
                    place_decoders(w.numpy(), n_layers))  # (F, n_layers * d_model)
            sources = [(target, w)]
        for src, w in sources:
            xs.append(w.detach().float().cpu().numpy())
            ls.append(np.full(w.shape[0], src, dtype=np.int64))
            fs.append(np.arange(w.shape[0], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ls), np.concatenate(fs)

"""Write a :class:`~tracer.transcoders.base.Transcoders` set in circuit-tracer's on-disk formats.

PLT (``model_kind: transcoder_set``): ``layer_{i}.safetensors`` with ``W_enc``, ``W_dec``, ``b_enc``,
``b_dec`` [, ``activation_function.threshold``] [, ``W_skip`` applied as ``x @ W_skip.T``].
CLT (``model_kind: cross_layer_transcoder``): ``W_enc_{i}.safetensors`` {``W_enc_i``, ``b_enc_i``,
``b_dec_i`` [, ``threshold_i``] [, ``W_skip_i`` applied as ``x @ W_skip_i``]} and
``W_dec_{i}.safetensors`` {``W_dec_i``}. Plus ``config.yaml``. Every file is written atomically.
"""

from pathlib import Path

import torch
import yaml
from torch import Tensor

from tracer.io import atomic_path
from tracer.transcoders.base import TranscoderLayer, Transcoders


def _save(tensors: dict[str, Tensor], path: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().to(dtype).contiguous() for k, v in tensors.items()}, str(tmp))


def _dense_decoder(layer: TranscoderLayer) -> Tensor:
    W = layer.W_dec
    return W if isinstance(W, Tensor) else W.full()


def config_dict(tc: Transcoders, extra: dict[str, object] | None = None) -> dict[str, object]:
    """The ``config.yaml`` of ``tc`` (TopK sets add ``activation_function: topk`` and ``topk_k``)."""
    cfg: dict[str, object] = {
        "model_kind": "transcoder_set" if tc.kind == "plt" else "cross_layer_transcoder",
        "feature_input_hook": tc.input_hook, "feature_output_hook": tc.output_hook, "scan": tc.scan or "tiny",
    }
    if tc.layers[0].activation == "topk":
        cfg.update(activation_function="topk", topk_k=tc.layers[0].topk)
    cfg.update(extra or {})
    return cfg


def write_transcoders(tc: Transcoders, directory: str | Path, *, dtype: torch.dtype = torch.float32,
                      extra_config: dict[str, object] | None = None) -> Path:
    """Write ``tc`` into ``directory`` (created if missing); returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for i, layer in enumerate(tc.layers):
        dense = _dense_decoder(layer)
        if tc.kind == "plt":
            t = {"W_enc": layer.W_enc, "W_dec": dense, "b_enc": layer.b_enc, "b_dec": layer.b_dec}
            if layer.threshold is not None:
                t["activation_function.threshold"] = layer.threshold
            if layer.skip_T is not None:
                t["W_skip"] = layer.skip_T.T  # applied as x @ W_skip.T
            _save(t, out / f"layer_{i}.safetensors", dtype)
            continue
        t = {f"W_enc_{i}": layer.W_enc, f"b_enc_{i}": layer.b_enc, f"b_dec_{i}": layer.b_dec}
        if layer.threshold is not None:
            t[f"threshold_{i}"] = layer.threshold
        if layer.skip_T is not None:
            t[f"W_skip_{i}"] = layer.skip_T  # CLT convention: x @ W_skip
        _save(t, out / f"W_enc_{i}.safetensors", dtype)
        _save({f"W_dec_{i}": dense}, out / f"W_dec_{i}.safetensors", dtype)
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config_dict(tc, extra_config), sort_keys=False))
    return out

"""Loaders for circuit-tracer's on-disk transcoder formats (all local; nothing is downloaded).

* ``config.yaml`` (``model_kind: transcoder_set``) + ``layer_{i}.safetensors`` with ``W_enc``
  (d_tc, d), ``W_dec`` (d_tc, d), ``b_enc``, ``b_dec``, optional ``activation_function.threshold``
  (JumpReLU) and ``W_skip`` (applied as ``x @ W_skip.T``): the mwhanna/qwen3-4b-transcoders layout;
* ``config.yaml`` (``model_kind: cross_layer_transcoder``) + ``W_enc_{i}.safetensors``
  {``W_enc_i``, ``b_enc_i``, ``b_dec_i``, optional ``threshold_i``, optional ``W_skip_i``} and
  ``W_dec_{i}.safetensors`` {``W_dec_i`` (d_tc, n_layers - i, d)};
* Gemma Scope ``params.npz`` (``W_enc`` (d, d_tc), ``W_dec``, ``b_enc``, ``b_dec``, ``threshold``),
  listed per layer under ``transcoders:`` in config.yaml;
* Gemma Scope 2 safetensors (``w_enc`` (d, d_tc), ``w_dec``, ``b_enc``, ``b_dec``, ``threshold``,
  optional ``affine_skip_connection``), likewise listed.

Extension (not in circuit-tracer 0.5.0): ``activation_function: topk`` with ``topk_k: K`` in
config.yaml makes every layer a TopK transcoder.
"""

import logging
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import yaml

from tracer.errors import TranscoderFormatError
from tracer.folders import folder_hint
from tracer.models.loading import parse_dtype
from tracer.transcoders.base import Activation, TranscoderLayer, Transcoders
from tracer.transcoders.mmap import MappedTensor, check_mapped, open_safetensors
from tracer.weights import check_weight

logger = logging.getLogger(__name__)

RawTensor = MappedTensor | np.ndarray
"""A tensor as a layer file holds it: memory-mapped safetensors or an array loaded from .npz."""
_T = TypeVar("_T", bound=RawTensor)


def _fail(msg: str) -> TranscoderFormatError:
    return TranscoderFormatError(msg)


def read_config(directory: Path) -> dict[str, object]:
    """config.yaml of a transcoder directory, or one inferred from the file names."""
    cfg_path = directory / "config.yaml"
    if cfg_path.is_file():
        try:
            cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise _fail(f"config.yaml must be valid YAML; got {str(cfg_path)!r} ({err}).") from None
        except UnicodeDecodeError as err:  # the CLI's generic "input must be UTF-8 text" named no file
            raise _fail(f"config.yaml must be UTF-8 text; got {str(cfg_path)!r} (byte "
                        f"{err.object[err.start:err.start + 1]!r} at offset {err.start}).") from None
        if not isinstance(cfg, dict):
            raise _fail(f"config.yaml must be a mapping; got {type(cfg).__name__} in {str(cfg_path)!r}.")
        return cfg
    if (directory / "layer_0.safetensors").is_file():
        return {"model_kind": "transcoder_set"}
    if (directory / "W_enc_0.safetensors").is_file():
        return {"model_kind": "cross_layer_transcoder"}
    raise _fail(
        f"transcoder directory must hold config.yaml, layer_0.safetensors or W_enc_0.safetensors; "
        f"got {str(directory)!r}. Pass a circuit-tracer transcoder folder.{folder_hint(directory, 'transcoders')}"
    )


def _resolve(directory: Path, ref: str) -> Path:
    """A `transcoders:` entry -> a local file (hf://org/repo/path is looked up under directory)."""
    if ref.startswith("hf://"):
        parts = ref[len("hf://"):].split("?")[0].split("/")
        rel = Path(*parts[2:]) if len(parts) > 2 else Path(parts[-1])
        candidates = [directory / rel, directory / Path(*parts)]
    else:
        candidates = [Path(ref) if Path(ref).is_absolute() else directory / ref]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise _fail(
        f"transcoder file must exist locally; got {ref!r} (looked for {str(candidates[0])!r}). "
        "Download it into the transcoder folder first; tracer never downloads."
    )


def _tensor(x: RawTensor, dtype: torch.dtype, name: str = "tensor",
            path: Path | None = None) -> torch.Tensor:
    """A whole tensor in `dtype`, checked: a float dtype, finite, of plausible magnitude."""
    t = x.full() if isinstance(x, MappedTensor) else torch.from_numpy(np.ascontiguousarray(x))
    where = str(path) if path is not None else "the transcoder files"
    if not t.is_floating_point():
        raise _fail(f"{name} in {where!r} must be a float tensor; got {t.dtype}. Re-export the transcoders.")
    out = t.to(dtype)
    if not (isinstance(x, MappedTensor) and x.region.holds(out)):  # mapped, not cast: the set's file check
        # (or, for a decoder, the check of each row as it is read) covers it
        check_weight(out, name, where, TranscoderFormatError, sample=True)  # after the cast: overflow shows
    return out


def _require(t: Mapping[str, _T], key: str, path: Path) -> _T:
    if key not in t:
        raise _fail(f"{path.name} must hold the tensor {key!r}; got keys {sorted(t)[:8]} in {str(path)!r}. "
                    "The transcoder file is incomplete: re-download or re-export it.")
    return t[key]


def _shape(x: RawTensor) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _check_shape(path: Path, name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if tuple(got) != tuple(want):
        raise _fail(f"{name} in {str(path)!r} must have shape {tuple(want)}; got {tuple(got)}.")


def _check_float(path: Path, name: str, x: MappedTensor) -> None:
    if not x.torch_dtype.is_floating_point:
        raise _fail(f"{name} in {str(path)!r} must be a float tensor; got {x.torch_dtype}. Re-export the transcoders.")


def _check_ndim(path: Path, name: str, x: RawTensor, ndim: int) -> None:
    if len(_shape(x)) != ndim or 0 in _shape(x):
        raise _fail(f"{name} in {str(path)!r} must be a non-empty {ndim}-d tensor; got shape {_shape(x)}.")


def _activation(cfg: dict[str, object], has_threshold: bool) -> tuple[Activation, int | None]:
    act = str(cfg.get("activation_function", "")).lower()
    if act == "topk":
        k = cfg.get("topk_k")
        if not isinstance(k, int) or k <= 0:
            raise _fail(f"topk_k must be a positive integer for activation_function: topk; got {k!r}.")
        return "topk", k
    return ("jumprelu" if has_threshold else "relu"), None


def _plt_keys(path: Path, t: Mapping[str, RawTensor]) -> tuple[str, str, str, bool, str]:
    """(encoder key, decoder key, skip key, transpose skip, threshold key) of a PLT file's format."""
    if "W_enc" in t and path.suffix != ".npz":  # circuit-tracer / mwhanna layout
        thr = "activation_function.threshold" if "activation_function.threshold" in t else "threshold"
        return "W_enc", "W_dec", "W_skip", True, thr
    if "w_enc" in t or "W_enc" in t:  # Gemma Scope npz / Gemma Scope 2: encoder is (d_model, d_tc)
        return ("w_enc" if "w_enc" in t else "W_enc"), ("w_dec" if "w_dec" in t else "W_dec"), \
            "affine_skip_connection", False, "threshold"
    raise _fail(f"transcoder layer file must hold W_enc/W_dec (or w_enc/w_dec); got keys "
                f"{sorted(t)[:8]} in {str(path)!r}.")


def _layer_from_tensors(path: Path, t: Mapping[str, RawTensor], cfg: dict[str, object], dtype: torch.dtype,
                        lazy: bool) -> TranscoderLayer:
    """One PLT layer from a {name: tensor} mapping in any of the three per-layer formats."""
    enc_key, dec_key, skip_key, transpose_skip, thr_key = _plt_keys(path, t)
    enc_raw, W_dec_raw = _require(t, enc_key, path), _require(t, dec_key, path)
    _check_ndim(path, enc_key, enc_raw, 2)
    W_enc = _tensor(enc_raw, dtype, enc_key, path)
    W_enc = W_enc if enc_key == "W_enc" and path.suffix != ".npz" else W_enc.T.contiguous()
    d_tc, d_model = W_enc.shape
    _check_shape(path, dec_key, _shape(W_dec_raw), (d_tc, d_model))
    if isinstance(W_dec_raw, MappedTensor) and lazy:
        _check_float(path, dec_key, W_dec_raw)
        W_dec: torch.Tensor | MappedTensor = W_dec_raw  # rows are checked as they are read
    else:
        W_dec = _tensor(W_dec_raw, dtype, dec_key, path)
    b_enc = _tensor(_require(t, "b_enc", path), dtype, "b_enc", path)
    b_dec = _tensor(_require(t, "b_dec", path), dtype, "b_dec", path)
    _check_shape(path, "b_enc", tuple(b_enc.shape), (d_tc,))
    _check_shape(path, "b_dec", tuple(b_dec.shape), (d_model,))
    threshold = _tensor(t[thr_key], dtype, thr_key, path).reshape(-1) if thr_key in t else None
    if threshold is not None:
        _check_shape(path, thr_key, tuple(threshold.shape), (d_tc,))
    skip_T = None
    if skip_key in t:
        skip = _tensor(t[skip_key], dtype, skip_key, path)
        _check_shape(path, skip_key, tuple(skip.shape), (d_model, d_model))
        skip_T = skip.T.contiguous() if transpose_skip else skip
    act, k = _activation(cfg, threshold is not None)
    return TranscoderLayer(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, activation=act,
                           threshold=threshold, topk=k, skip_T=skip_T)


def _open_any(path: Path) -> dict[str, RawTensor]:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise _fail(f"transcoder file must be a valid .npz; got {str(path)!r} "
                        f"({type(err).__name__}: {str(err)[:100]}).") from None
    return dict(open_safetensors(path, check=False))  # checked by the caller, all files at once


def load_transcoder_set(directory: Path, cfg: dict[str, object], dtype: torch.dtype,
                        lazy: bool) -> list[TranscoderLayer]:
    listed = cfg.get("transcoders")
    if listed:
        if not isinstance(listed, list):
            raise _fail(f"transcoders in config.yaml must be a list of paths; got {listed!r}.")
        paths = [_resolve(directory, str(ref)) for ref in listed]
    else:
        paths = sorted((p for p in directory.glob("layer_*.safetensors") if re.fullmatch(r"layer_\d+", p.stem)),
                       key=lambda p: int(p.stem.split("_")[1]))
        expected = [directory / f"layer_{i}.safetensors" for i in range(len(paths))]
        if paths != expected:
            raise _fail(f"layer files must be layer_0..layer_{len(paths) - 1}.safetensors without gaps; "
                        f"got {[p.name for p in paths]} in {str(directory)!r}.")
        if not paths:
            raise _fail(f"transcoder_set folder must hold layer_{{i}}.safetensors files; got none in "
                        f"{str(directory)!r}.")
    opened = [_open_any(p) for p in paths]
    layers = [_layer_from_tensors(p, t, cfg, dtype, lazy) for p, t in zip(paths, opened, strict=True)]
    for p, tensors in zip(paths, opened, strict=True):  # back to back: a hot loop costs less than checks spread out
        check_mapped(tensors, skip=(_plt_keys(p, tensors)[1],))  # the decoder: checked row by row as read
    return layers


def _clt_layer(directory: Path, i: int, n: int, cfg: dict[str, object], dtype: torch.dtype, lazy: bool,
               opened: list[dict[str, MappedTensor]]) -> TranscoderLayer:
    """Layer i of a cross-layer transcoder; its encoder file is appended to `opened` (checked by the caller)."""
    enc_path, dec_path = directory / f"W_enc_{i}.safetensors", directory / f"W_dec_{i}.safetensors"
    enc, dec = open_safetensors(enc_path, check=False), open_safetensors(dec_path, check=False)
    opened.append(enc)  # the decoder file is not: its rows are checked as they are read
    enc_raw, dec_raw = _require(enc, f"W_enc_{i}", enc_path), _require(dec, f"W_dec_{i}", dec_path)
    _check_ndim(enc_path, f"W_enc_{i}", enc_raw, 2)
    W_enc = _tensor(enc_raw, dtype, f"W_enc_{i}", enc_path)
    d_tc, d_model = W_enc.shape
    _check_shape(dec_path, f"W_dec_{i}", _shape(dec_raw), (d_tc, n - i, d_model))
    b_enc = _tensor(_require(enc, f"b_enc_{i}", enc_path), dtype, f"b_enc_{i}", enc_path)
    b_dec = _tensor(_require(enc, f"b_dec_{i}", enc_path), dtype, f"b_dec_{i}", enc_path)
    _check_shape(enc_path, f"b_enc_{i}", tuple(b_enc.shape), (d_tc,))
    _check_shape(enc_path, f"b_dec_{i}", tuple(b_dec.shape), (d_model,))
    threshold = None
    if f"threshold_{i}" in enc:
        threshold = _tensor(enc[f"threshold_{i}"], dtype, f"threshold_{i}", enc_path).reshape(-1)
        _check_shape(enc_path, f"threshold_{i}", tuple(threshold.shape), (d_tc,))
    skip_T = None
    if f"W_skip_{i}" in enc:
        skip_T = _tensor(enc[f"W_skip_{i}"], dtype, f"W_skip_{i}", enc_path)
        _check_shape(enc_path, f"W_skip_{i}", tuple(skip_T.shape), (d_model, d_model))
    act, k = _activation(cfg, threshold is not None)
    if lazy:
        _check_float(dec_path, f"W_dec_{i}", dec_raw)
    W_dec = dec_raw if lazy else _tensor(dec_raw, dtype, f"W_dec_{i}", dec_path)
    return TranscoderLayer(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec,
                           activation=act, threshold=threshold, topk=k, skip_T=skip_T)


def load_clt(directory: Path, cfg: dict[str, object], dtype: torch.dtype, lazy: bool) -> list[TranscoderLayer]:
    n = 0
    while (directory / f"W_enc_{n}.safetensors").is_file():
        n += 1
    if n == 0:
        raise _fail(f"cross_layer_transcoder folder must hold W_enc_0.safetensors ...; got none in "
                    f"{str(directory)!r}.")
    opened: list[dict[str, MappedTensor]] = []
    layers = [_clt_layer(directory, i, n, cfg, dtype, lazy, opened) for i in range(n)]
    for tensors in opened:  # back to back, as for per-layer transcoders
        check_mapped(tensors)
    return layers


def load_transcoders(path: str | Path, *, dtype: torch.dtype | str = torch.float32, lazy_decoder: bool = True,
                     n_layers: int | None = None, d_model: int | None = None) -> Transcoders:
    """Load a transcoder folder in any supported format and check it against the model's dims.

    `dtype` is a torch dtype or one of the names :func:`tracer.models.load_model` accepts
    ('float32', 'bf16', ...).
    """
    dtype = parse_dtype(dtype)
    directory = Path(path)
    if not directory.is_dir():
        raise _fail(f"transcoder path must be a directory; got {str(directory)!r}. "
                    "Pass the folder that holds config.yaml and the layer files.")
    cfg = read_config(directory)
    kind = cfg.get("model_kind", "transcoder_set")
    if kind == "transcoder_set":
        layers = load_transcoder_set(directory, cfg, dtype, lazy_decoder)
    elif kind == "cross_layer_transcoder":
        layers = load_clt(directory, cfg, dtype, lazy_decoder)
    else:
        raise _fail(f"model_kind must be 'transcoder_set' or 'cross_layer_transcoder'; got {kind!r} "
                    f"in {str(directory / 'config.yaml')!r}.")
    declared = cfg.get("n_layers")
    if isinstance(declared, int) and not isinstance(declared, bool) and declared != len(layers):
        raise _fail(f"transcoder layer files must match config.yaml's n_layers ({declared}); got {len(layers)} "
                    f"in {str(directory)!r}. A layer file is missing or extra.")
    d_tcs = {layer.d_transcoder for layer in layers}
    dims = {int(layer.W_enc.shape[1]) for layer in layers}
    if len(dims) != 1:
        raise _fail(f"all transcoder layers must share d_model; got {sorted(dims)} in {str(directory)!r}.")
    if len(d_tcs) != 1:
        logger.info("transcoder layers have different widths: %s", sorted(d_tcs))
    tc = Transcoders(
        kind="clt" if kind == "cross_layer_transcoder" else "plt", layers=tuple(layers),
        input_hook=str(cfg.get("feature_input_hook", "mlp.hook_in")),
        output_hook=str(cfg.get("feature_output_hook", "mlp.hook_out")),
        scan=str(cfg.get("scan", directory.name)), source=str(directory),
    )
    check_against_model(tc, n_layers=n_layers, d_model=d_model)
    return tc


def check_against_model(tc: Transcoders, *, n_layers: int | None, d_model: int | None) -> None:
    """Errors that name the file set and the dimension that disagrees."""
    if d_model is not None and tc.d_model != d_model:
        raise _fail(f"transcoder d_model must equal the model's hidden_size ({d_model}); got {tc.d_model} "
                    f"in {tc.source!r}. These transcoders were trained for another model.")
    if n_layers is not None and tc.n_layers != n_layers:
        raise _fail(f"transcoder layer count must equal the model's num_hidden_layers ({n_layers}); got "
                    f"{tc.n_layers} in {tc.source!r}. Every layer needs a transcoder.")

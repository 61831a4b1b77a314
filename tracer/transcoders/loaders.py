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
from pathlib import Path

import numpy as np
import torch
import yaml

from tracer.errors import TranscoderFormatError
from tracer.transcoders.base import Activation, TranscoderLayer, Transcoders
from tracer.transcoders.mmap import MappedTensor, open_safetensors

logger = logging.getLogger(__name__)


def _fail(msg: str) -> TranscoderFormatError:
    return TranscoderFormatError(msg)


def read_config(directory: Path) -> dict[str, object]:
    """config.yaml of a transcoder directory, or one inferred from the file names."""
    cfg_path = directory / "config.yaml"
    if cfg_path.is_file():
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as err:
            raise _fail(f"config.yaml must be valid YAML; got {str(cfg_path)!r} ({err}).") from None
        if not isinstance(cfg, dict):
            raise _fail(f"config.yaml must be a mapping; got {type(cfg).__name__} in {str(cfg_path)!r}.")
        return cfg
    if (directory / "layer_0.safetensors").is_file():
        return {"model_kind": "transcoder_set"}
    if (directory / "W_enc_0.safetensors").is_file():
        return {"model_kind": "cross_layer_transcoder"}
    raise _fail(
        f"transcoder directory must hold config.yaml, layer_0.safetensors or W_enc_0.safetensors; "
        f"got {str(directory)!r}. Pass a circuit-tracer transcoder folder."
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


def _tensor(x: MappedTensor | np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = x.full() if isinstance(x, MappedTensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(dtype)


def _check_shape(path: Path, name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if tuple(got) != tuple(want):
        raise _fail(f"{name} in {str(path)!r} must have shape {tuple(want)}; got {tuple(got)}.")


def _activation(cfg: dict[str, object], has_threshold: bool) -> tuple[Activation, int | None]:
    act = str(cfg.get("activation_function", "")).lower()
    if act == "topk":
        k = cfg.get("topk_k")
        if not isinstance(k, int) or k <= 0:
            raise _fail(f"topk_k must be a positive integer for activation_function: topk; got {k!r}.")
        return "topk", k
    return ("jumprelu" if has_threshold else "relu"), None


def _layer_from_tensors(path: Path, t: dict[str, object], cfg: dict[str, object], dtype: torch.dtype,
                        lazy: bool) -> TranscoderLayer:
    """One PLT layer from a {name: tensor} mapping in any of the three per-layer formats."""
    if "W_enc" in t and path.suffix != ".npz":  # circuit-tracer / mwhanna layout
        W_enc = _tensor(t["W_enc"], dtype)  # type: ignore[arg-type]
        W_dec_raw, skip_key, transpose_skip = t["W_dec"], "W_skip", True
        thr_key = "activation_function.threshold" if "activation_function.threshold" in t else "threshold"
    elif "w_enc" in t or "W_enc" in t:  # Gemma Scope npz / Gemma Scope 2: encoder is (d_model, d_tc)
        key = "w_enc" if "w_enc" in t else "W_enc"
        W_enc = _tensor(t[key], dtype).T.contiguous()  # type: ignore[arg-type]
        W_dec_raw = t["w_dec"] if "w_dec" in t else t["W_dec"]
        skip_key, transpose_skip, thr_key = "affine_skip_connection", False, "threshold"
    else:
        raise _fail(f"transcoder layer file must hold W_enc/W_dec (or w_enc/w_dec); got keys "
                    f"{sorted(t)[:8]} in {str(path)!r}.")
    d_tc, d_model = W_enc.shape
    if isinstance(W_dec_raw, MappedTensor):
        _check_shape(path, "W_dec", W_dec_raw.shape, (d_tc, d_model))
        W_dec: torch.Tensor | MappedTensor = W_dec_raw if lazy else _tensor(W_dec_raw, dtype)
    else:
        W_dec = _tensor(W_dec_raw, dtype)  # type: ignore[arg-type]
        _check_shape(path, "W_dec", tuple(W_dec.shape), (d_tc, d_model))
    b_enc = _tensor(t["b_enc"], dtype)  # type: ignore[arg-type]
    b_dec = _tensor(t["b_dec"], dtype)  # type: ignore[arg-type]
    _check_shape(path, "b_enc", tuple(b_enc.shape), (d_tc,))
    _check_shape(path, "b_dec", tuple(b_dec.shape), (d_model,))
    threshold = _tensor(t[thr_key], dtype).reshape(-1) if thr_key in t else None  # type: ignore[arg-type]
    if threshold is not None:
        _check_shape(path, thr_key, tuple(threshold.shape), (d_tc,))
    skip_T = None
    if skip_key in t:
        skip = _tensor(t[skip_key], dtype)  # type: ignore[arg-type]
        _check_shape(path, skip_key, tuple(skip.shape), (d_model, d_model))
        skip_T = skip.T.contiguous() if transpose_skip else skip
    act, k = _activation(cfg, threshold is not None)
    return TranscoderLayer(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, activation=act,
                           threshold=threshold, topk=k, skip_T=skip_T)


def _open_any(path: Path) -> dict[str, object]:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            raise _fail(f"transcoder file must be a valid .npz; got {str(path)!r} ({err}).") from None
    return dict(open_safetensors(path))


def load_transcoder_set(directory: Path, cfg: dict[str, object], dtype: torch.dtype,
                        lazy: bool) -> list[TranscoderLayer]:
    listed = cfg.get("transcoders")
    if listed:
        if not isinstance(listed, list):
            raise _fail(f"transcoders in config.yaml must be a list of paths; got {listed!r}.")
        paths = [_resolve(directory, str(ref)) for ref in listed]
    else:
        paths = sorted(directory.glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
        expected = [directory / f"layer_{i}.safetensors" for i in range(len(paths))]
        if paths != expected:
            raise _fail(f"layer files must be layer_0..layer_{len(paths) - 1}.safetensors without gaps; "
                        f"got {[p.name for p in paths]} in {str(directory)!r}.")
        if not paths:
            raise _fail(f"transcoder_set folder must hold layer_{{i}}.safetensors files; got none in "
                        f"{str(directory)!r}.")
    return [_layer_from_tensors(p, _open_any(p), cfg, dtype, lazy) for p in paths]


def load_clt(directory: Path, cfg: dict[str, object], dtype: torch.dtype, lazy: bool) -> list[TranscoderLayer]:
    n = 0
    while (directory / f"W_enc_{n}.safetensors").is_file():
        n += 1
    if n == 0:
        raise _fail(f"cross_layer_transcoder folder must hold W_enc_0.safetensors ...; got none in "
                    f"{str(directory)!r}.")
    layers = []
    for i in range(n):
        enc_path, dec_path = directory / f"W_enc_{i}.safetensors", directory / f"W_dec_{i}.safetensors"
        enc, dec = open_safetensors(enc_path), open_safetensors(dec_path)
        for key, src, path in ((f"W_enc_{i}", enc, enc_path), (f"b_enc_{i}", enc, enc_path),
                               (f"b_dec_{i}", enc, enc_path), (f"W_dec_{i}", dec, dec_path)):
            if key not in src:
                raise _fail(f"{path.name} must hold {key!r}; got keys {sorted(src)}.")
        W_enc = _tensor(enc[f"W_enc_{i}"], dtype)
        d_tc, d_model = W_enc.shape
        W_dec_m = dec[f"W_dec_{i}"]
        _check_shape(dec_path, f"W_dec_{i}", W_dec_m.shape, (d_tc, n - i, d_model))
        threshold = _tensor(enc[f"threshold_{i}"], dtype).reshape(-1) if f"threshold_{i}" in enc else None
        skip_T = _tensor(enc[f"W_skip_{i}"], dtype) if f"W_skip_{i}" in enc else None
        b_enc, b_dec = _tensor(enc[f"b_enc_{i}"], dtype), _tensor(enc[f"b_dec_{i}"], dtype)
        _check_shape(enc_path, f"b_enc_{i}", tuple(b_enc.shape), (d_tc,))
        _check_shape(enc_path, f"b_dec_{i}", tuple(b_dec.shape), (d_model,))
        act, k = _activation(cfg, threshold is not None)
        layers.append(TranscoderLayer(
            W_enc=W_enc, b_enc=b_enc, W_dec=W_dec_m if lazy else _tensor(W_dec_m, dtype), b_dec=b_dec,
            activation=act, threshold=threshold, topk=k, skip_T=skip_T,
        ))
    return layers


def load_transcoders(path: str | Path, *, dtype: torch.dtype = torch.float32, lazy_decoder: bool = True,
                     n_layers: int | None = None, d_model: int | None = None) -> Transcoders:
    """Load a transcoder folder in any supported format and check it against the model's dims."""
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

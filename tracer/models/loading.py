"""Loading a local Hugging Face causal LM (never downloads; safetensors only)."""

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tracer.errors import ArchitectureError, WorkbenchError
from tracer.folders import folder_hint
from tracer.io import require_readable
from tracer.models.adapters import adapter_for
from tracer.models.loaded import LoadedModel, Tokenizer
from tracer.models.tokens import FastTokenizer
from tracer.weights import check_weight

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16, "fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16,
          "fp16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise WorkbenchError(f"dtype must be one of {sorted(DTYPES)}; got {name!r}.") from None


def parse_device(name: str | torch.device) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise WorkbenchError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {name!r}.") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise WorkbenchError(f"device must be 'cpu', 'cuda' or 'mps'; got {name!r}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"device must be available; got {name!r} but CUDA is not. Use device 'cpu'.")
    n = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= n:
        raise WorkbenchError(f"device must be one of this machine's {n} GPU(s) (cuda:0 to cuda:{n - 1}); got {name!r}.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise WorkbenchError(f"device must be available; got {name!r} but MPS is not. Use device 'cpu'.")
    return device


def _read_config(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        require_readable(directory, "model path", folder=True)  # missing, unreadable, or a file
        raise WorkbenchError(f"model path must be a local model directory; got {str(directory)!r}.")
    cfg_path = directory / "config.json"
    if not os.path.lexists(cfg_path):
        raise WorkbenchError(f"model directory must contain config.json; got {str(directory)!r}. Pass a "
                             f"folder saved with save_pretrained().{folder_hint(directory, 'model')}")
    require_readable(cfg_path, "config.json")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise WorkbenchError(f"config.json must be valid JSON; got {str(cfg_path)!r} ({err}).") from None
    if not isinstance(raw, dict):
        raise WorkbenchError(f"config.json must be a JSON object; got {type(raw).__name__} in {str(cfg_path)!r}.")
    validate_config(raw, str(cfg_path))
    return raw


def _is_num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# config key -> (test, what it must be); keys absent or null are not checked (defaults apply)
_CONFIG_TYPES: dict[str, tuple[Any, str]] = {
    "intermediate_size": (lambda x: isinstance(x, int) and not isinstance(x, bool) and x > 0, "a positive integer"),
    "rope_theta": (lambda x: _is_num(x) and x > 0, "a positive number"),
    "attention_bias": (lambda x: isinstance(x, bool), "true or false"),
    "mlp_bias": (lambda x: isinstance(x, bool), "true or false"),
    "tie_word_embeddings": (lambda x: isinstance(x, bool), "true or false"),
    "use_sliding_window": (lambda x: isinstance(x, bool), "true or false"),
    "hidden_act": (lambda x: isinstance(x, str), "a string"),
    "hidden_activation": (lambda x: isinstance(x, str), "a string"),
    "rope_scaling": (lambda x: isinstance(x, dict), "an object"),
    "rope_parameters": (lambda x: isinstance(x, dict), "an object"),
    "query_pre_attn_scalar": (lambda x: _is_num(x) and x > 0, "a positive number"),
    "attn_logit_softcapping": (lambda x: _is_num(x) and x > 0, "a positive number"),
    "final_logit_softcapping": (lambda x: _is_num(x) and x > 0, "a positive number"),
    "sliding_window": (lambda x: isinstance(x, int) and not isinstance(x, bool) and x > 0, "a positive integer"),
    "partial_rotary_factor": (lambda x: _is_num(x) and 0 < x <= 1, "a number in (0, 1]"),
    "pretraining_tp": (lambda x: isinstance(x, int) and not isinstance(x, bool) and x > 0, "a positive integer"),
    "architectures": (lambda x: isinstance(x, list) and all(isinstance(a, str) for a in x), "a list of strings"),
    "model_type": (lambda x: isinstance(x, str), "a string"),
}


def validate_config(raw: dict[str, Any], where: str = "config.json") -> None:
    """Type-check the config.json values tracer reads (dimensions are checked by the adapter)."""
    for key, (ok, what) in _CONFIG_TYPES.items():
        value = raw.get(key)
        if value is None and key == "intermediate_size":
            raise WorkbenchError(f"config intermediate_size must be a positive integer; got none in {where}. "
                                 "The model's config.json is damaged.")
        if value is not None and not ok(value):
            raise WorkbenchError(f"config {key} must be {what}; got {value!r:.60} in {where}. "
                                 "The model's config.json is damaged.")
    for key in ("rope_scaling", "rope_parameters"):
        rope = raw.get(key)
        if isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) == "llama3":
            for name in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                if not _is_num(rope.get(name)):
                    raise WorkbenchError(f"config {key}.{name} must be a number for llama3 RoPE; got "
                                         f"{rope.get(name)!r:.60} in {where}.")
            if rope["low_freq_factor"] == rope["high_freq_factor"]:
                raise WorkbenchError(f"config {key} must have low_freq_factor != high_freq_factor; got both "
                                     f"{rope['low_freq_factor']!r} in {where}.")


def wrap_model(model: nn.Module, tokenizer: Tokenizer | None = None, model_id: str = "") -> LoadedModel:
    """Wrap an already-built HF-layout model (tests build tiny ones from config classes)."""
    config = getattr(model, "config", None)
    adapter = adapter_for(config)
    adapter.check_config(config)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel.wrap(model, adapter, tokenizer, model_id or str(getattr(config, "_name_or_path", "")))


def load_model(path: str | Path, *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype = torch.float32, backend: str = "hf") -> LoadedModel:
    """Load a local HF model folder (safetensors only; never downloads).

    backend: "hf" builds the real `transformers` model (eager attention); "native" builds
    :mod:`tracer.models.native`'s HF-layout model without importing `transformers` (fast start-up for
    tracing); "auto" uses native when it reproduces the config exactly, else HF.
    """
    directory = Path(path)
    raw = _read_config(directory)
    torch_dtype, torch_device = parse_dtype(dtype), parse_device(device)
    if backend not in ("hf", "native", "auto"):
        raise WorkbenchError(f"backend must be 'hf', 'native' or 'auto'; got {backend!r}.")
    if not list(directory.glob("*.safetensors")):
        raise WorkbenchError(f"model directory must hold *.safetensors weights; got none in {str(directory)!r}. "
                             "Re-save with save_pretrained(safe_serialization=True); tracer does not unpickle.")
    adapter = adapter_for(raw)
    adapter.check_config(raw)
    adapter.facts(raw, where=str(directory / "config.json"))
    if backend != "hf":
        from tracer.models.native import load_native, unsupported_reason

        reason = unsupported_reason(raw)
        if reason is None:
            native = load_native(directory, torch_dtype, torch_device)
            if native is not None:
                return wrap_model(native, _load_fast_tokenizer(directory), model_id=str(directory))
            reason = "weights do not match the native layout"
        if backend == "native":
            raise ArchitectureError(f"native loading must support this config; it does not ({reason}). "
                                    "Use backend='hf'.")
        logger.info("loading through transformers (%s)", reason)
    return _load_hf(directory, raw, torch_dtype, torch_device)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:100]}" if text else type(err).__name__


def _hf_config(directory: Path, raw: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - transformers raises many types for a bad config
        arch = (raw.get("architectures") or [raw.get("model_type")])[0]
        raise ArchitectureError(f"model config must be readable by transformers; got {arch!r} in "
                                f"{str(directory)!r} ({_first_line(err)}).") from None


def _check_loading_info(info: dict[str, Any], directory: Path, origin: dict[str, str]) -> None:
    """transformers' loading report: a missing (newly initialised), unexpected or misshapen tensor
    is an error, never a made-up weight."""
    files = ", ".join(sorted({Path(f).name for f in origin.values()})) or "no tensors"
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise WorkbenchError(f"model weights must hold every tensor the config needs; {missing[0]!r} is missing "
                             f"from {str(directory)!r} ({files}), with {len(missing)} missing in all.")
    extra = sorted(k for k in (info.get("unexpected_keys") or ()) if not k.endswith("rotary_emb.inv_freq"))
    if extra:
        raise WorkbenchError(f"model weights must match config.json; {extra[0]!r} in {origin.get(extra[0], files)!r} "
                             f"is not a weight of this model ({len(extra)} unexpected in all).")
    mismatched = sorted(info.get("mismatched_keys") or (), key=str)
    if mismatched:
        item = mismatched[0]
        name, got, want = (item[0], tuple(item[1]), tuple(item[2])) if isinstance(item, tuple) and len(item) == 3 \
            else (item, "?", "?")
        raise WorkbenchError(f"model weight {name} in {origin.get(str(name), str(directory))!r} must have shape {want} "
                             f"(from config.json); got {got}. The weights do not match config.json.")


@contextlib.contextmanager
def hf_progress_bars(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") on or off for a block,
    restored after it."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on and not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on and not enabled:
            hf_logging.enable_progress_bar()


def _load_hf(directory: Path, raw: dict[str, Any], torch_dtype: torch.dtype,
             torch_device: torch.device) -> LoadedModel:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from tracer.models.native import read_state_origin

    config = _hf_config(directory, raw)
    adapter_for(config).check_config(config)
    origin = read_state_origin(directory)  # validates every weight file's header first
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would be a second stderr line; we raise instead
    try:
        with hf_progress_bars(logger.isEnabledFor(logging.INFO)):  # quiet: no "Loading weights" bars (transformers 5)
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                directory, dtype=torch_dtype, attn_implementation="eager", local_files_only=True,
                use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=True,
            )  # mismatched sizes are reported in `info` (and refused below), not raised without a name
        model, info = loaded
    except Exception as err:  # noqa: BLE001 - transformers raises many types for bad files
        msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise WorkbenchError(f"model weights must load; got an error for {str(directory)!r}: {msg}. "
                             "The weights do not match config.json.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    _check_loading_info(info, directory, origin)
    for name, param in model.named_parameters():
        check_weight(param.detach(), f"model weight {name}", origin.get(name, str(directory)), sample=True)
    nn.Module.to(model, torch_device)
    return wrap_model(model, _load_tokenizer(directory), model_id=str(directory))


def _load_tokenizer(directory: Path) -> Tokenizer | None:
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    try:
        tok: Any = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        return tok
    except Exception as err:  # noqa: BLE001 - a tokenizer file that is there must load
        raise WorkbenchError(f"the tokenizer in {str(directory)!r} must load; got {_first_line(err)}. "
                             "Fix or remove its files.") from None


_PLAIN_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
"""``tokenizer_class`` values whose transformers tokenizer is ``tokenizer.json`` as written (4.x, 5.x)."""


def _plain_tokenizer_class(directory: Path) -> bool:
    """Whether the folder's tokenizer is tokenizer.json alone: its tokenizer_config names a generic
    class. A model-specific class (transformers 5's GemmaTokenizer, LlamaTokenizer, ...) may rebuild its
    normalizer and pre-tokenizer instead, and without a named class AutoTokenizer picks one from the
    model type."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False  # AutoTokenizer reads it and names the problem
    return isinstance(config, dict) and config.get("tokenizer_class") in _PLAIN_TOKENIZER_CLASSES


def _load_fast_tokenizer(directory: Path) -> Tokenizer | None:
    """The native backend's tokenizer: the `tokenizers` library on tokenizer.json (no transformers
    import) when that file is the whole tokenizer, else the one circuit-tracer gets (AutoTokenizer),
    so that both backends trace the same token ids."""
    if not (directory / "tokenizer.json").is_file() or not _plain_tokenizer_class(directory):
        return _load_tokenizer(directory)
    try:
        return FastTokenizer(directory)
    except Exception as err:  # noqa: BLE001 - a tokenizer file that is there must load
        raise WorkbenchError(f"tokenizer.json in {str(directory)!r} must load; got {_first_line(err)}. "
                             "Fix or remove it.") from None


__all__ = ["DTYPES", "load_model", "parse_device", "parse_dtype", "wrap_model"]

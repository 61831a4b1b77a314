"""Loading a local Hugging Face causal LM (never downloads; safetensors only)."""

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tracer.errors import ArchitectureError, WorkbenchError
from tracer.models.adapters import adapter_for
from tracer.models.loaded import LoadedModel, Tokenizer
from tracer.models.tokens import FastTokenizer

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
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise WorkbenchError(f"device must be available; got {name!r} but MPS is not. Use device 'cpu'.")
    return device


def _read_config(directory: Path) -> dict[str, Any]:
    cfg_path = directory / "config.json"
    if not directory.is_dir():
        raise WorkbenchError(f"model path must be a local model directory; got {str(directory)!r}, which "
                             "does not exist. tracer loads local Hugging Face folders only.")
    if not cfg_path.is_file():
        raise WorkbenchError(f"model directory must contain config.json; got {str(directory)!r}. Pass a "
                             "folder saved with save_pretrained().")
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"config.json must be valid JSON; got {str(cfg_path)!r} ({err}).") from None
    if not isinstance(raw, dict):
        raise WorkbenchError(f"config.json must be a JSON object; got {type(raw).__name__} in {str(cfg_path)!r}.")
    return raw


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
            try:
                native = load_native(directory, torch_dtype, torch_device)
            except Exception as err:  # noqa: BLE001 - safetensors raises several types
                raise WorkbenchError(f"model weights must load; got an error for {str(directory)!r}: "
                                     f"{str(err).splitlines()[0]}. The weights are corrupt or do not match "
                                     "config.json.") from None
            if native is not None:
                return wrap_model(native, _load_fast_tokenizer(directory), model_id=str(directory))
            reason = "weights do not match the native layout"
        if backend == "native":
            raise ArchitectureError(f"native loading must support this config; it does not ({reason}). "
                                    "Use backend='hf'.")
        logger.info("loading through transformers (%s)", reason)
    return _load_hf(directory, raw, torch_dtype, torch_device)


def _load_hf(directory: Path, raw: dict[str, Any], torch_dtype: torch.dtype,
             torch_device: torch.device) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if not logger.isEnabledFor(logging.INFO):  # quiet: no "Loading weights" bars (transformers 5)
        hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (ValueError, KeyError) as err:
        arch = (raw.get("architectures") or [raw.get("model_type")])[0]
        raise ArchitectureError(f"model architecture must be supported by transformers and tracer; got "
                                f"{arch!r} ({str(err).splitlines()[0]}).") from None
    adapter_for(config).check_config(config)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch_dtype, attn_implementation="eager", local_files_only=True,
            use_safetensors=True,
        )
    except Exception as err:  # noqa: BLE001 - transformers raises many types for bad files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WorkbenchError(f"model weights must load; got an error for {str(directory)!r}: {msg}. "
                             "The weights are corrupt or do not match config.json.") from None
    nn.Module.to(model, torch_device)
    return wrap_model(model, _load_tokenizer(directory), model_id=str(directory))


def _load_tokenizer(directory: Path) -> Tokenizer | None:
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    try:
        tok: Any = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        return tok
    except Exception as err:  # noqa: BLE001
        logger.warning("could not load the tokenizer in %s (%s); use token ids", directory, err)
        return None


def _load_fast_tokenizer(directory: Path) -> Tokenizer | None:
    if not (directory / "tokenizer.json").is_file():
        return None
    try:
        return FastTokenizer(directory)
    except Exception as err:  # noqa: BLE001
        logger.warning("could not load tokenizer.json in %s (%s); use token ids", directory, err)
        return None


__all__ = ["DTYPES", "load_model", "parse_device", "parse_dtype", "wrap_model"]

"""Loading a local Hugging Face causal LM, with checks, and turning prompts into token ids."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from tracer.adapters import Adapter, adapter_for
from tracer.errors import ArchitectureError, WorkbenchError

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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"device must be available; got {name!r} but CUDA is not. Use --device cpu.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise WorkbenchError(f"device must be 'cpu', 'cuda' or 'mps'; got {name!r}.")
    return device


@dataclass(frozen=True, kw_only=True, eq=False)
class LoadedModel:
    """An HF causal LM in eval mode with its adapter and (optional) tokenizer."""

    model: torch.nn.Module
    adapter: Adapter
    tokenizer: object | None
    model_id: str

    @property
    def config(self) -> object:
        return self.model.config  # type: ignore[no-any-return]

    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)  # type: ignore[attr-defined]

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)  # type: ignore[attr-defined]

    @property
    def d_vocab(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])  # type: ignore[operator,union-attr]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_positions(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None)


def _read_config(directory: Path) -> dict[str, object]:
    cfg_path = directory / "config.json"
    if not directory.is_dir():
        raise WorkbenchError(f"model path must be a local model directory; got {str(directory)!r}, which "
                             "does not exist. tracer loads local Hugging Face folders only.")
    if not cfg_path.is_file():
        raise WorkbenchError(f"model directory must contain config.json; got {str(directory)!r}. Point "
                             "--model at a folder saved with save_pretrained().")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"config.json must be valid JSON; got {str(cfg_path)!r} ({err}).") from None


def wrap_model(model: torch.nn.Module, tokenizer: object | None = None, model_id: str = "") -> LoadedModel:
    """Wrap an already-built HF model (tests build tiny ones from config classes)."""
    adapter = adapter_for(model.config)
    adapter.check_config(model.config)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model, adapter=adapter, tokenizer=tokenizer,
                       model_id=model_id or getattr(model.config, "_name_or_path", ""))


def load_model(path: str | Path, *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype = torch.float32, backend: str = "hf") -> LoadedModel:
    """Load a local HF model folder (safetensors only; never downloads).

    backend: "hf" builds the real `transformers` model (eager attention); "native" builds
    :mod:`tracer.native`'s HF-layout model without importing `transformers` (fast start-up for
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
    if backend != "hf":
        from tracer.native import load_native, unsupported_reason

        adapter_for(SimpleNamespace(**raw)).check_config(SimpleNamespace(**raw))
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


def _load_hf(directory: Path, raw: dict[str, object], torch_dtype: torch.dtype,
             torch_device: torch.device) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if not logger.isEnabledFor(logging.INFO):  # quiet: no "Loading weights" bars (transformers 5)
        hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (ValueError, KeyError) as err:
        arch = (raw.get("architectures") or [raw.get("model_type")])[0]  # type: ignore[index]
        raise ArchitectureError(f"model architecture must be supported by transformers and tracer; got "
                                f"{arch!r} ({str(err).splitlines()[0]}).") from None
    adapter = adapter_for(config)
    adapter.check_config(config)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch_dtype, attn_implementation="eager", local_files_only=True,
            use_safetensors=True,
        )
    except Exception as err:  # noqa: BLE001 - transformers raises many types for bad files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WorkbenchError(f"model weights must load; got an error for {str(directory)!r}: {msg}. "
                             "The weights are corrupt or do not match config.json.") from None
    model.to(torch_device)
    return wrap_model(model, _load_tokenizer(directory), model_id=str(directory))


class FastTokenizer:
    """The few tokenizer methods tracer uses, on the `tokenizers` library alone (no transformers)."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        cfg: dict[str, object] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (directory / name).is_file():
                cfg.update(json.loads((directory / name).read_text()))

        def tid(key: str) -> int | None:
            val = cfg.get(key)
            val = val.get("content") if isinstance(val, dict) else val
            return None if val is None else self._tok.token_to_id(str(val))

        self.bos_token_id, self.eos_token_id = tid("bos_token"), tid("eos_token")
        self.pad_token_id = tid("pad_token")
        added = [i for i, t in self._tok.get_added_tokens_decoder().items() if t.special]
        ids = [self.bos_token_id, self.eos_token_id, self.pad_token_id, tid("unk_token"), *added]
        self.all_special_ids = sorted({i for i in ids if i is not None})

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self._tok.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


def _load_tokenizer(directory: Path) -> object | None:
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except Exception as err:  # noqa: BLE001
        logger.warning("could not load the tokenizer in %s (%s); use token ids", directory, err)
        return None


def _load_fast_tokenizer(directory: Path) -> object | None:
    if not (directory / "tokenizer.json").is_file():
        return None
    try:
        return FastTokenizer(directory)
    except Exception as err:  # noqa: BLE001
        logger.warning("could not load tokenizer.json in %s (%s); use token ids", directory, err)
        return None


def bos_id(tokenizer: object) -> int:
    """circuit-tracer's choice: the first truthy of bos, pad, eos, then other special ids."""
    cands = [getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "pad_token_id", None),
             getattr(tokenizer, "eos_token_id", None), *getattr(tokenizer, "all_special_ids", [])]
    for cand in cands:
        if cand:
            return int(cand)
    raise WorkbenchError("tokenizer must define a non-zero BOS/PAD/EOS id to prepend; got none. "
                         "Pass --token-ids with the BOS you want instead.")


def tokenize(loaded: LoadedModel, prompt: str) -> Tensor:
    """Prompt text -> ids with a BOS prepended (as circuit-tracer's ensure_tokenized does)."""
    if not prompt or not prompt.strip():
        raise WorkbenchError("prompt must be non-empty; got ''. Pass --prompt TEXT or --token-ids.")
    tok = loaded.tokenizer
    if tok is None:
        raise WorkbenchError(f"model folder must hold a tokenizer to use --prompt; got none in "
                             f"{loaded.model_id!r}. Pass --token-ids instead.")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    special = set(getattr(tok, "all_special_ids", []))
    if not ids or ids[0] not in special:
        ids = [bos_id(tok), *ids]
    return torch.tensor(ids, dtype=torch.long)


def check_token_ids(loaded: LoadedModel, ids: Tensor | list[int]) -> Tensor:
    """Validate user token ids: non-empty, in the vocabulary, within the context."""
    t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if t.numel() == 0:
        raise WorkbenchError("token ids must be non-empty; got []. Pass at least one id (e.g. the BOS).")
    vocab = int(loaded.model.get_input_embeddings().weight.shape[0])  # type: ignore[operator,union-attr]
    bad = t[(t < 0) | (t >= vocab)]
    if bad.numel():
        raise WorkbenchError(f"token ids must be in [0, {vocab}) for this model; got {int(bad[0])}. "
                             "Check the ids against the model's tokenizer.")
    max_pos = loaded.max_positions
    if max_pos is not None and t.numel() > max_pos:
        raise WorkbenchError(f"prompt length must be <= the model's context ({max_pos} tokens); got "
                             f"{t.numel()}. Shorten the prompt.")
    loaded.adapter.check_config(loaded.config, n_pos=int(t.numel()))
    return t

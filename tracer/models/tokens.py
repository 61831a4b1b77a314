"""Prompts to token ids: BOS handling, unknown words, and checks against the model."""

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.models.loaded import LoadedModel

logger = logging.getLogger(__name__)


class FastTokenizer:
    """The few tokenizer methods tracer uses, on the `tokenizers` library alone (no transformers)."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        cfg: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (directory / name).is_file():
                loaded = json.loads((directory / name).read_text())
                if isinstance(loaded, dict):
                    cfg.update(loaded)

        def tid(key: str) -> int | None:
            val = cfg.get(key)
            val = val.get("content") if isinstance(val, dict) else val
            return None if val is None else self._tok.token_to_id(str(val))

        self.bos_token_id, self.eos_token_id = tid("bos_token"), tid("eos_token")
        self.pad_token_id, self.unk_token_id = tid("pad_token"), tid("unk_token")
        added = [i for i, t in self._tok.get_added_tokens_decoder().items() if t.special]
        ids = [self.bos_token_id, self.eos_token_id, self.pad_token_id, self.unk_token_id, *added]
        self.all_special_ids = sorted({i for i in ids if i is not None})

    def __call__(self, text: str | list[str], add_special_tokens: bool = False) -> dict[str, Any]:
        """``{"input_ids": ids}`` of a text, or a list of id lists for a list of texts (as HF's)."""
        if isinstance(text, list):
            return {"input_ids": [e.ids for e in self._tok.encode_batch(text, add_special_tokens=add_special_tokens)]}
        return {"input_ids": self._tok.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


def bos_id(tokenizer: Any) -> int:
    """circuit-tracer's choice: the first truthy of bos, pad, eos, then other special ids."""
    cands = [getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "pad_token_id", None),
             getattr(tokenizer, "eos_token_id", None), *getattr(tokenizer, "all_special_ids", [])]
    for cand in cands:
        if cand:
            return int(cand)
    raise WorkbenchError("tokenizer must define a non-zero BOS/PAD/EOS id to prepend; got none. "
                         "Pass token ids with the BOS you want instead.")


def _ids(tok: Any, text: str) -> list[int]:
    return [int(i) for i in tok(text, add_special_tokens=False)["input_ids"]]


def unknown_words(tok: Any, prompt: str) -> list[str]:
    """Whitespace-separated words of ``prompt`` that the tokenizer maps to its unknown token."""
    unk = getattr(tok, "unk_token_id", None)
    if unk is None:
        return []
    return [w for w in prompt.split() if unk in _ids(tok, w)]


def _tokenizer(loaded: LoadedModel) -> Any:
    tok = loaded.tokenizer
    if tok is None:
        raise WorkbenchError(f"model folder must hold a tokenizer to tokenize a prompt; got none in "
                             f"{loaded.model_id!r}. Pass token ids instead.")
    return tok


def _check_prompt(prompt: object) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkbenchError(f"prompt must be non-empty text; got {prompt!r}. Pass a prompt or token ids.")


def _with_bos(tok: Any, prompt: str, ids: list[int], allow_unk: bool) -> Tensor:
    """The ids of `prompt` with the BOS first, after the unknown-word rule of :func:`tokenize`."""
    unk = getattr(tok, "unk_token_id", None)
    # the words are looked up one by one only when the prompt holds the unknown token (naming them)
    unknown = (unknown_words(tok, prompt) or ["(a part of the prompt)"]) if unk is not None and unk in ids else []
    if unknown and not allow_unk:
        err = WorkbenchError(f"prompt words must be in the tokenizer's vocabulary; got {unknown[0]!r} "
                             f"({len(unknown)} unknown word(s)), which would be traced as the unknown "
                             "token. Check the spelling and case, or allow unknown words explicitly.")
        err.fields = ("allow_unk",)
        raise err
    if unknown:
        logger.warning("UNKNOWN WORDS read as the unknown token (allowed explicitly): %s. Graphs and activations show "
                       "the unknown token, not these words.", ", ".join(repr(w) for w in unknown[:10]))
    bos = bos_id(tok)
    special = (set(getattr(tok, "all_special_ids", None) or ()) - {unk}) if ids else set()
    inner = [i for k, i in enumerate(ids) if i in special and not (k == 0 and i == bos)]
    if inner:  # "<eos>" or "</s>" typed in a prompt is read as that control token
        logger.warning("SPECIAL TOKENS in the prompt text are read as control tokens: %s. Remove them, or pass "
                       "token ids, if they were meant as words.", ", ".join(repr(tok.decode([i]))
                                                                          for i in dict.fromkeys(inner)))
    if not ids or ids[0] != bos:  # always a BOS first (whatever the first word is), never two
        ids = [bos, *ids]
    return torch.tensor(ids, dtype=torch.long)


def tokenize(loaded: LoadedModel, prompt: str, *, allow_unk: bool = False) -> Tensor:
    """Prompt text -> (n_pos,) ids with the BOS prepended (as circuit-tracer's ensure_tokenized does).

    A word the tokenizer does not know (it would become the unknown token) is an error naming it,
    unless ``allow_unk``; then it is traced as the unknown token.
    """
    _check_prompt(prompt)
    tok = _tokenizer(loaded)
    return _with_bos(tok, prompt, _ids(tok, prompt), allow_unk)


def tokenize_many(loaded: LoadedModel, prompts: list[str], *, allow_unk: bool = False) -> list[Tensor]:
    """:func:`tokenize` of every prompt, in one batched call of the tokenizer."""
    for prompt in prompts:
        _check_prompt(prompt)
    tok = _tokenizer(loaded)
    batch = tok(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    return [_with_bos(tok, p, [int(i) for i in ids], allow_unk) for p, ids in zip(prompts, batch)]


def _one_prompt(shape: tuple[int, ...]) -> None:
    """Token ids are one prompt: (n_pos,), or (1, n_pos) as HF tokenizers return (squeezed by the caller)."""
    if len(shape) == 1 or (len(shape) == 2 and shape[0] == 1):
        return
    hint = "Wrap a single id in a list." if not shape else "Pass the prompts one at a time."
    raise WorkbenchError(f"token ids must be one prompt, of shape (n_pos,) or (1, n_pos); got shape {shape}. {hint}")


def _not_integer(kind: str, value: object, pos: int) -> WorkbenchError:
    return WorkbenchError(f"token ids must be integers; got {kind} {value!r} at position {pos}. Pass the "
                          "tokenizer's integer ids unchanged (no floats, no bools).")


def _ids_from_tensor(ids: Tensor) -> Tensor:
    _one_prompt(tuple(ids.shape))
    t = ids.reshape(-1)  # (n_pos,): one row, checked above
    if t.numel() and (t.dtype == torch.bool or t.is_floating_point() or t.is_complex()):
        odd = torch.nonzero(~torch.isfinite(t) | (t != t.real.round())).flatten() \
            if t.dtype != torch.bool else t[:0]  # the first fraction, NaN or inf, if any
        pos = int(odd[0]) if odd.numel() else 0
        raise _not_integer(f"a {str(t.dtype).removeprefix('torch.')} tensor with", t[pos].item(), pos)
    return t.to(torch.long)


def _ids_from_sequence(ids: object) -> Tensor:
    try:
        arr = np.array(ids, dtype=object)  # keeps each item's own type (no bool or float casting)
    except (TypeError, ValueError):
        raise WorkbenchError(f"token ids must be a sequence of integers; got {type(ids).__name__}. Pass a list "
                             "of ints or an integer tensor.") from None
    _one_prompt(tuple(arr.shape))
    items = arr.reshape(-1).tolist()  # (n_pos,)
    for pos, x in enumerate(items):
        if isinstance(x, Tensor) and x.dim() == 0 and not (x.dtype == torch.bool or x.is_floating_point()):
            continue  # a 0-d integer tensor, as list(tensor) gives
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise _not_integer(type(x).__name__, x, pos)
    return torch.tensor([int(x) for x in items], dtype=torch.long)


def check_token_ids(loaded: LoadedModel, ids: Tensor | Sequence[int]) -> Tensor:
    """Validate user token ids: one prompt of integers, non-empty, in the vocabulary, within the context.

    Accepted: a 1-D sequence or tensor of integers, or a (1, n_pos) one (as HF tokenizers return,
    squeezed to (n_pos,)). Refused, never converted: several prompts (2-D with more than one row),
    floats (even whole ones), bools and text. Returns a (n_pos,) long tensor.
    """
    if isinstance(ids, (str, bytes)):
        raise WorkbenchError(f"token ids must be integers; got text {ids[:40]!r}. Tokenize the prompt first "
                             "(tracer.models.tokenize).")
    t = _ids_from_tensor(ids) if isinstance(ids, Tensor) else _ids_from_sequence(ids)
    if t.numel() == 0:
        raise WorkbenchError("token ids must be non-empty; got []. Pass at least one id (e.g. the BOS).")
    vocab = int(loaded.W_E.shape[0])
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

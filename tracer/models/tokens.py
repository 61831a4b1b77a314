"""Prompts to token ids: BOS handling, unknown words, and checks against the model."""

import json
import logging
from pathlib import Path
from typing import Any

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
        raise WorkbenchError(f"prompt words must be in the tokenizer's vocabulary; got {unknown[0]!r} "
                             f"({len(unknown)} unknown word(s)), which would be traced as the unknown "
                             "token. Check the spelling and case, or allow unknown words explicitly.")
    if unknown:
        logger.warning("UNKNOWN WORDS traced as the unknown token (allowed explicitly): %s. The graph shows "
                       "the unknown token, not these words.", ", ".join(repr(w) for w in unknown[:10]))
    bos = bos_id(tok)
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


def check_token_ids(loaded: LoadedModel, ids: Tensor | list[int]) -> Tensor:
    """Validate user token ids: non-empty, in the vocabulary, within the context."""
    t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
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

"""What `workbench manifold` reads: a family's prompts with values, positions and answers.

Two sources give the same :class:`FitInputs`:

* a JSONL prompt file of records ``{"prompt", "value", "position"?, "answers"?, "split"?}`` with
  the value names given on the command line (``value``: one of them; ``position``: the token
  index of the variable, BOS = 0, negative from the end, needed for ``--position value``;
  ``answers``: the answer token when the variable takes each value, by default each value name as
  the next word of the prompt (:func:`continuation_token`: " Monday" after "... is" for a subword
  tokenizer that has both "Monday" and " Monday"); ``split: "heldout"`` marks prompts kept out of the fit,
  ``"train"`` or no split the fit's own, any other split is refused);
* a demo world's family (``--world DIR --family NAME``; :func:`workbench.manifold_world.world_inputs`):
  its arithmetic prompts, whose held-out combinations are kept out of the fit.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracer.activations import PromptRecord, read_prompts
from tracer.errors import WorkbenchError
from tracer.models import LoadedModel

POSITIONS = ("last", "value")


@dataclass(frozen=True, kw_only=True, eq=False)
class FitInputs:
    """Prompts of one variable, ready for :func:`workbench.manifold_points.collect_points` (positions='field')."""

    records: list[PromptRecord]
    """each with meta 'position' set to where the vectors are read"""
    names: list[str]
    """value names, in their order"""
    values: np.ndarray
    """(n,) value index per prompt (-1: unknown)"""
    answers: np.ndarray
    """(n, p) the answer token id when the variable takes value v'"""
    heldout: np.ndarray
    """(n,) bool: kept out of the fit"""
    features: dict[int, list[int]] | None = None
    """per transcoder layer, the family's features (a world's labels), if known"""


def check_names(names: list[str]) -> list[str]:
    """Value names: at least 3 (the period), no repeats."""
    if len(names) < 3:
        raise WorkbenchError(f"--values must name at least 3 values (the period must be >= 3); got {len(names)}: "
                             f"{names!r}.")
    if len(set(names)) != len(names):
        raise WorkbenchError(f"--values must not repeat a value; got {names!r}.")
    return names


def answer_token(loaded: LoadedModel, text: str) -> int:
    """The single token id of an answer (the model's next token)."""
    tok = loaded.tokenizer
    if tok is None:
        raise WorkbenchError(f"model folder must hold a tokenizer to read answers; got none in {loaded.model_id!r}.")
    ids = [int(i) for i in tok(text, add_special_tokens=False)["input_ids"]]
    unk = getattr(tok, "unk_token_id", None)
    if len(ids) != 1 or (unk is not None and ids[0] == unk):
        raise WorkbenchError(f"answer {text!r} must be one known token of the model's tokenizer; got ids {ids}. "
                             "Give answers as single tokens (with the leading space the tokenizer expects); "
                             "without a record's 'answers', the value names are the answers.")
    return ids[0]


def _plain_ids(tok: Any, text: str) -> list[int]:
    return [int(i) for i in tok(text, add_special_tokens=False)["input_ids"]]


def _added_ids(tok: Any, prompt: str, text: str) -> list[int] | None:
    """The ids that ``text`` (which starts with ``prompt``) adds to the prompt's own ids, or None when
    the prompt's ids are not a prefix of the text's (the tokenizer merges across the boundary)."""
    base, ids = _plain_ids(tok, prompt), _plain_ids(tok, text)
    return ids[len(base):] if ids[:len(base)] == base else None


def _separator(prompt: str) -> str:
    """What comes between a prompt and its answer word: a space after a prompt of a spaced language
    that does not already end in whitespace, else nothing (a prompt with no whitespace at all, as in
    Chinese or Japanese, is continued directly)."""
    return "" if prompt[-1:].isspace() or not any(c.isspace() for c in prompt) else " "


def continuation_token(loaded: LoadedModel, prompt: str, name: str) -> int | None:
    """The one token that continues ``prompt`` with the word ``name`` (after :func:`_separator`), or
    None when no single known token does. This is the token a model predicts for that answer: a
    byte-level BPE tokenizer has both "Monday" and " Monday", and only the second follows "... is"; a
    bare form is never used after a spaced prompt. A prompt ending in whitespace usually has none (its
    last token holds the space, which the word would have merged with)."""
    tok = loaded.tokenizer
    added = _added_ids(tok, prompt, prompt + _separator(prompt) + name)
    if added is not None and len(added) == 1 and added[0] != getattr(tok, "unk_token_id", None):
        return added[0]
    return None


def _why_not_one_token(tok: Any, prompt: str, name: str) -> str:
    form = _separator(prompt) + name
    added = _added_ids(tok, prompt, prompt + form)
    if added is None:
        return (f"the prompt's last token holds its trailing whitespace, which {form!r} would merge with: drop it"
                if prompt[-1:].isspace() else f"{form!r} re-tokenizes the end of the prompt")
    if getattr(tok, "unk_token_id", None) in added:
        return f"{form!r} is not in the tokenizer's vocabulary (the unknown token)"
    return f"{form!r} adds {len(added)} tokens {added} to the prompt's"


def default_answers(loaded: LoadedModel, prompt: str, names: list[str], where: str) -> list[int]:
    """Each value name's :func:`continuation_token` after ``prompt``, one distinct token per value."""
    if loaded.tokenizer is None:
        raise WorkbenchError(f"model folder must hold a tokenizer to read answers; got none in {loaded.model_id!r}.")
    ids = [continuation_token(loaded, prompt, n) for n in names]
    missing = [n for n, i in zip(names, ids) if i is None]
    if missing:
        why = _why_not_one_token(loaded.tokenizer, prompt, missing[0])
        raise WorkbenchError(f"{where}: value {missing[0]!r} must continue the prompt as one known token to be its "
                             f"default answer; got none: {why}. Give the record's 'answers' (one token per value, "
                             "with the leading space the tokenizer expects).")
    if len(set(ids)) != len(ids):
        raise WorkbenchError(f"{where}: the values' default answers must be distinct tokens; got {ids} for "
                             f"{names}. Give the record's 'answers'.")
    return [int(i) for i in ids if i is not None]


def _record(i: int, rec: PromptRecord) -> str:
    """'prompt 2 (prompt file line 5)': the record's index (from 0, as the activation collector names
    prompts) and where it is in its file."""
    return f"prompt {i}" + ("" if rec.line is None else f" (prompt file line {rec.line})")


def _value_of(rec: PromptRecord, names: list[str], i: int, required: bool) -> int:
    if "value" not in rec.meta:
        if required:
            raise WorkbenchError(f"{_record(i, rec)} must have a 'value'; got none in {rec.prompt!r}.")
        return -1
    v = str(rec.meta["value"])
    if v not in names:
        raise WorkbenchError(f"{_record(i, rec)}'s value must be one of the variable's values {names}; got {v!r}.")
    return names.index(v)


def _position_of(rec: PromptRecord, position: str, i: int) -> int:
    if position == "last":
        return -1
    pos = rec.meta.get("position")
    if isinstance(pos, bool) or not isinstance(pos, int):
        raise WorkbenchError(f"{_record(i, rec)} must have an integer 'position' (the variable's token index, "
                             f"BOS = 0) with --position value; got {pos!r}.")
    return pos


def prompt_inputs(loaded: LoadedModel, path: str | Path, names: list[str], position: str, *,
                  values_required: bool = True) -> FitInputs:
    """Records of a JSONL prompt file (see the module docstring)."""
    if position not in POSITIONS:
        raise WorkbenchError(f"--position must be one of {list(POSITIONS)}; got {position!r}.")
    names = check_names(names)
    records, values, answers, heldout = [], [], [], []
    for i, rec in enumerate(read_prompts(path)):
        values.append(_value_of(rec, names, i, values_required))
        pos = _position_of(rec, position, i)
        given = rec.meta.get("answers")
        if given is not None:
            if not isinstance(given, list) or len(given) != len(names):
                raise WorkbenchError(f"{_record(i, rec)}'s 'answers' must list {len(names)} answers (one per value); "
                                     f"got {given!r}.")
            answers.append([answer_token(loaded, str(a)) for a in given])
        elif position == "last":  # at the answer, a record without 'answers' is answered by the value names
            answers.append(default_answers(loaded, rec.prompt, names, _record(i, rec)))
        else:
            answers.append([-1] * len(names))  # unknown: the real-model checks refuse these records
        split = rec.meta.get("split")
        if split not in (None, "train", "heldout"):  # a typo ("held-out") put held-out prompts into the fit
            raise WorkbenchError(f"{_record(i, rec)}'s 'split' must be \"train\" or \"heldout\" (or absent: train); "
                                 f"got {split!r}.")
        heldout.append(split == "heldout")
        records.append(PromptRecord(prompt=rec.prompt, meta={**rec.meta, "position": pos}, line=rec.line))
    return FitInputs(records=records, names=names, values=np.array(values), answers=np.array(answers),
                     heldout=np.array(heldout, dtype=bool))

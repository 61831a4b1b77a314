"""Prompt files for corpus runs: plain text (one prompt per line) or JSONL records.

A JSONL record is an object with a ``prompt`` string; every other field is metadata carried
through to the activation store (e.g. a variable's ``value``, or a ``position`` to read vectors at).
Files are UTF-8 (a byte-order mark is dropped); lines end in LF or CRLF. Blank lines are skipped.
Errors name the file and line.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer.errors import WorkbenchError
from tracer.io import loads_json


@dataclass(frozen=True, kw_only=True)
class PromptRecord:
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)
    """every field of the record except ``prompt``"""
    line: int | None = None
    """the prompt file line it was read from (None: not read from a file); named by errors"""


def _jsonl(path: Path, lines: list[str]) -> list[PromptRecord]:
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = loads_json(line)
        except json.JSONDecodeError as err:
            raise WorkbenchError(f"prompt file line {n} must be a JSON object; got invalid JSON in "
                                 f"{str(path)!r} ({err.msg}).") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
            raise WorkbenchError(f"prompt file line {n} must be an object with a non-empty 'prompt' string; "
                                 f"got {line.strip()[:60]!r} in {str(path)!r}.")
        out.append(PromptRecord(prompt=rec["prompt"], meta={k: v for k, v in rec.items() if k != "prompt"}, line=n))
    return out


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """Prompts from a ``.jsonl`` file (records) or any other text file (one prompt per line)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise WorkbenchError(f"prompt file must exist; got {str(p)!r}. Check the path.") from None
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"prompt file must be UTF-8 text; got {str(p)!r} ({err.reason} at byte "
                             f"{err.start}).") from None
    except OSError as err:
        raise WorkbenchError(f"prompt file must be readable; got {str(p)!r} ({err.strerror}).") from None
    lines = text.replace("\r\n", "\n").split("\n")
    records = _jsonl(p, lines) if p.suffix == ".jsonl" else [PromptRecord(prompt=x, line=n)
                                                             for n, x in enumerate(lines, 1) if x.strip()]
    if not records:
        raise WorkbenchError(f"prompt file must hold at least one prompt; got none in {str(p)!r}.")
    return records

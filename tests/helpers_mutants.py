"""Hand-made mutants of the demo world's files, and a harness that runs the CLI in-process and checks
that a bad input was refused properly (exit 2, one line on stderr, no traceback, nothing written,
inputs unchanged).

Mutations work on copies: :func:`copy_world` copies the model, transcoders, labels and manifest of
``data/world`` into a temp folder; the ``*_tensor`` / ``*_header`` helpers rewrite one file there.
"""

import hashlib
import json
import logging
import os
import shutil
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from workbench.cli import main
from workbench.paths import world_dir

WORLD_PARTS = ("model", "plt", "clt", "labels_plt.jsonl", "labels_clt.jsonl", "manifest.json")


def copy_world(dest: Path, parts: Iterable[str] = WORLD_PARTS) -> Path:
    """A copy of (parts of) the shipped demo world under `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        src = world_dir() / part
        if src.is_dir():
            shutil.copytree(src, dest / part)
        else:
            shutil.copy2(src, dest / part)
    return dest


# ----------------------------------------------------------------------------- file mutations
def edit_tensors(path: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    """Load a safetensors file, let `edit` change the dict in place, save it back (metadata kept)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def read_raw(path: Path) -> tuple[dict[str, Any], bytes]:
    """(JSON header, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_raw(path: Path, header: object, data: bytes) -> None:
    """A safetensors file with an arbitrary JSON header (no validation: that is the point)."""
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


@dataclass(frozen=True)
class Replace:
    """Returned by an `edit_header` edit: use this value as the whole header."""

    header: object


def edit_header(path: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    """Rewrite the JSON header of a safetensors file: `edit` changes it in place, or returns
    :class:`Replace` with a whole new header."""
    header, data = read_raw(path)
    new = edit(header)
    write_raw(path, new.header if isinstance(new, Replace) else header, data)


def first_tensor(header: dict[str, Any]) -> dict[str, Any]:
    return next(v for k, v in sorted(header.items()) if k != "__metadata__")


# ----------------------------------------------------------------------------- the harness
def tree_digest(paths: Iterable[Path | str | None]) -> dict[str, str]:
    """{path: sha1} of every file under `paths` (files or folders; missing ones are skipped)."""
    out: dict[str, str] = {}
    for root in paths:
        if root is None or not os.path.lexists(root):
            continue
        root = Path(root)
        files = [root] if not root.is_dir() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if f.is_file():
                out[str(f)] = hashlib.sha1(f.read_bytes()).hexdigest()
            else:
                out[str(f)] = f"special:{os.stat(f).st_mode:o}"
    return out


def _out_state(path: Path) -> object:
    if not os.path.lexists(path):  # also False for a name the file system refuses
        return None
    st = os.lstat(path)
    if path.is_dir() and not path.is_symlink():
        return ("dir", sorted(str(p.relative_to(path)) for p in path.rglob("*")))
    if path.is_file():
        return ("file", hashlib.sha1(path.read_bytes()).hexdigest())
    return ("special", st.st_mode, st.st_rdev)


@dataclass
class Outcome:
    code: int
    err: str
    out: str
    lines: list[str] = field(default_factory=list)


def run_cli(capfd, argv: list[str]) -> Outcome:  # noqa: ANN001 - pytest's capfd
    """``workbench.cli.main(argv)`` with logging to the captured stderr, as in a fresh process."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors exit from inside main
        code = int(exit_.code or 0)
    finally:
        root.handlers, root.level = saved, level
    cap = capfd.readouterr()
    return Outcome(code, cap.err, cap.out, [ln for ln in cap.err.splitlines() if ln.strip()])


def assert_refused(capfd, argv: list[str], *, inputs: Iterable[Path | str | None], out: Path | None,  # noqa: ANN001
                   needle: str | None = None) -> Outcome:
    """Run `argv` and check the refusal contract: exit 2, exactly one line on stderr naming the
    command, no traceback, `out` in the state it had (absent stays absent), no temp files left
    next to it, and every input unchanged."""
    inputs = list(inputs)
    before = tree_digest(inputs)
    out_before = _out_state(out) if out is not None else None
    res = run_cli(capfd, argv)
    assert res.code == 2, f"{argv}: exit {res.code}\n{res.err[-2000:]}"
    assert "Traceback" not in res.err, res.err
    assert len(res.lines) == 1, f"{argv}: {len(res.lines)} stderr lines:\n{res.err[-2000:]}"
    command = " ".join(argv[:2]) if argv[0] in ("manifold", "world") else argv[0]  # errors name the action
    assert res.lines[0].startswith(f"workbench {command}: error: "), res.lines[0]
    if os.environ.get("MW_FUZZ_LOG"):  # collect the messages for review
        with open(os.environ["MW_FUZZ_LOG"], "a", encoding="utf-8") as fh:
            fh.write(res.lines[0] + "\n")
    if needle is not None:
        assert needle in res.lines[0], f"{needle!r} not in {res.lines[0]!r}"
    if out is not None:
        assert _out_state(out) == out_before, f"{argv}: output path {out} changed"
        folder = out if os.path.isdir(out) else out.parent
        if os.path.isdir(folder):
            assert not list(folder.glob(".mwtmp-*")), "temp files left behind"
    assert tree_digest(inputs) == before, f"{argv}: an input changed"
    return res


__all__ = ["Outcome", "Replace", "assert_refused", "copy_world", "edit_header", "edit_tensors", "first_tensor",
           "read_raw", "run_cli", "tree_digest", "write_raw"]


def make_unwritable(folder: Path, monkeypatch) -> Path:  # noqa: ANN001 - pytest's monkeypatch
    """An existing folder made read-only (0555) *and* reported unwritable by os.access: root bypasses
    permissions, so os.access is stubbed for this folder."""
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK
                        else real_access(p, mode, **kw))
    return folder


def edit_result_field(path: Path, field: str, value: object) -> None:
    """Set one field of the result body of an ``analyses.results`` file (as a hand edit would)."""
    doc = json.loads(path.read_text())
    doc["result"][field] = value
    path.write_text(json.dumps(doc))

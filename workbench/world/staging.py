"""Replace a world folder whole: write the new one beside it, swap it in only when complete.

:func:`staged_folder` yields an empty staging folder next to the target, named
``.<name>.build-<pid>-<host>`` (hidden, in the same parent, so the final rename stays on one file
system). When the block succeeds, the old folder's entries the caller keeps (``keep_old``) and
the block did not write are carried over (hard links where possible, else copies), the old
folder's permissions are given to the new one, and the two are swapped: the old folder is
renamed aside (``.<name>.old-<pid>-<host>``), the new one renamed in, the old one deleted.
SIGINT and SIGTERM wait while the swap runs. When the block fails or is interrupted the staging
folder is deleted and the old folder was never touched.

A killed process leaves only such hidden folders; :func:`remove_stale_stages` (run on entry)
deletes the staging folders of dead processes (of this host, or older than
:data:`tracer.io.STALE_SECONDS`) and puts back an old folder that a swap killed midway left
aside.
"""

import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tracer.errors import WorkbenchError
from tracer.io import STALE_SECONDS, host_tag, pid_alive

logger = logging.getLogger(__name__)

_STAGE_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>build|old)-(?P<pid>\d+)-(?P<host>[0-9a-f]{6})$")
_NAME_BYTES_MAX = 200
"""A target name longer than this (in bytes) is replaced by its digest in the staging names."""


def _short(name: str) -> str:
    """`name`, or its digest when too long to leave room for the staging suffix."""
    if len(os.fsencode(name)) <= _NAME_BYTES_MAX:
        return name
    return hashlib.sha1(os.fsencode(name)).hexdigest()[:16]


def stage_path(target: Path, kind: str, pid: int | None = None) -> Path:
    """The hidden sibling of `target` that a build (``kind="build"``) or a swap (``"old"``) uses."""
    return target.parent / f".{_short(target.name)}.{kind}-{os.getpid() if pid is None else pid}-{host_tag()}"


def _is_stale(path: Path, pid: int, host: str) -> bool:
    """Whether no live process owns `path`: its pid (on this host) is gone, or it is very old."""
    if pid == os.getpid() and host == host_tag():
        return False
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_SECONDS or (host == host_tag() and not pid_alive(pid))


def remove_stale_stages(target: Path) -> list[Path]:
    """Delete the staging folders of `target` that killed builds left; put back an old folder a
    killed swap left aside (when `target` is missing), else delete it. Returns what was cleaned."""
    cleaned: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return cleaned
    for entry in entries:
        m = _STAGE_RE.match(entry.name)
        if m is None or m["name"] != _short(target.name) or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if not _is_stale(path, int(m["pid"]), m["host"]):
            continue
        if m["kind"] == "old" and not os.path.lexists(target):
            os.rename(path, target)
            logger.warning("restored %s from %s (a swap was killed midway)", target, path.name)
        else:
            shutil.rmtree(path, ignore_errors=True)
        cleaned.append(path)
    return cleaned


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM are recorded instead of handled; the first one is
    sent again when it ends (so it interrupts right after). Outside the main thread: no effect."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: Any) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if pending:
            os.kill(os.getpid(), pending[0])


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def _carry_over(old: Path, stage: Path, keep_old: Callable[[str], bool]) -> None:
    """Bring the entries of `old` that `keep_old` accepts, and `stage` lacks, into `stage`."""
    for entry in sorted(os.scandir(old), key=lambda e: e.name):
        dst = stage / entry.name
        if not keep_old(entry.name) or os.path.lexists(dst):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry.path, str(dst))
    shutil.copymode(old, stage)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _swap_in(stage: Path, target: Path) -> None:
    """Make `stage` the folder `target` (the old one, if any, renamed aside and then deleted)."""
    aside = stage_path(target, "old")
    with deferred_signals():
        had_old = os.path.lexists(target)
        if had_old:
            os.rename(target, aside)
        try:
            os.rename(stage, target)
        except BaseException:
            if had_old:
                os.rename(aside, target)
            raise
        _fsync_dir(target.parent)
        if had_old:
            shutil.rmtree(aside, ignore_errors=True)


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing ancestors; return the ones created (outermost first)."""
    missing = [p for p in (folder, *folder.parents) if not os.path.lexists(p)][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike[str], *,
                  keep_old: Callable[[str], bool] = lambda name: True) -> Iterator[Path]:
    """Yield an empty staging folder that replaces the folder `target` (or becomes it) when the
    block succeeds; see the module docstring. `keep_old(name)`: whether an entry of the old folder
    that the block did not write is carried over. A symlink `target` is followed (the folder it
    names is replaced)."""
    real = Path(os.path.realpath(target))
    if os.path.lexists(real) and not real.is_dir():
        raise WorkbenchError(f"output folder must be a folder or a new path; got {str(target)!r}, which is not a "
                             "folder. Choose a folder path.")
    created = _make_parents(real.parent)
    remove_stale_stages(real)
    stage = stage_path(real, "build")
    shutil.rmtree(stage, ignore_errors=True)  # a leftover of this very process (a failed cleanup)
    done = False
    try:
        stage.mkdir()
        yield stage
        if real.is_dir():
            _carry_over(real, stage, keep_old)
        _swap_in(stage, real)
        done = True
    finally:
        if not done:
            with deferred_signals():
                shutil.rmtree(stage, ignore_errors=True)
                for folder in reversed(created):
                    with contextlib.suppress(OSError):
                        folder.rmdir()

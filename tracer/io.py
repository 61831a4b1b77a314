"""Safe file output: atomic writes, stale-temp cleanup, a file lock, and output/input path checks.

Writes (:func:`atomic_path`): a temp file in the target's folder named ``.mwtmp-<pid>-<host>-<random>.tmp``
(short and fixed-length, so it is never longer than the final name allows), written, fsync'd,
given the final permissions (the umask's for a new file, the old file's when one is replaced),
renamed onto the target, and the folder fsync'd. An interrupted write leaves either the old file
or the new one, never a part; a killed process leaves only a temp file of that pattern, which
:func:`remove_stale_temps` deletes on a later run (once its process is gone).

:func:`atomic_write_json` writes strict JSON (NaN and inf as null) the same way.

Shared index files that several processes update (``graph-metadata.json``) are read and written
under :func:`file_lock`.

:func:`check_output_path` refuses, before any computation, an output path that is a device,
FIFO, socket or folder, one of the run's inputs or inside an input folder, whose parent is not a
writable folder, or whose name is too long for the file system. :func:`require_readable` says
whether an input is missing or unreadable (the true cause, not "not found").
"""

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tracer.errors import WorkbenchError

TEMP_PREFIX = ".mwtmp-"
"""Every temp file this package writes starts with this."""
_TEMP_RE = re.compile(r"^\.mwtmp-(\d+)-([0-9a-f]{6})-[0-9a-z]{8}\.tmp$")
TEMP_NAME_MAX = len(f"{TEMP_PREFIX}{2 ** 32}-abcdef-01234567.tmp")
"""The longest temp name (pid up to 2**32)."""
STALE_SECONDS = 24 * 3600.0
"""A temp file of another host (or of a live-looking pid) older than this is stale."""
_UMASK_LOCK = threading.Lock()


def host_tag() -> str:
    """Six hex digits naming this host in temp names (a temp of another host is judged by age only)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def temp_name() -> str:
    """A fresh temp file name: ``.mwtmp-<pid>-<host>-<random>.tmp``."""
    rand = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(8))
    return f"{TEMP_PREFIX}{os.getpid()}-{host_tag()}-{rand}.tmp"


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _final_mode(target: Path) -> int:
    """The old file's permission bits when replacing a file, else what the umask gives a new file."""
    try:
        st = os.stat(target)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~current_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse_special(target: Path, name: str) -> None:
    """A file that exists and is not regular (a device, FIFO, socket, folder) is never replaced."""
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise WorkbenchError(f"{name} must be a regular file or a new path; got {str(target)!r}, "
                             f"{_file_kind(mode)}. Choose a file path.")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success make it `path` atomically, else delete it.

    The caller writes the temp file (by path). On leaving the block the file is fsync'd, given
    the final permissions, renamed onto `path` and the folder fsync'd. A target that exists and
    is not a regular file (a device, FIFO, socket or folder) is refused, never replaced.
    """
    target = Path(path)
    _refuse_special(target, "output path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a folder of the path should be
        raise WorkbenchError(f"output path must be inside a folder; got {str(target)!r}, where a part of "
                             f"{str(target.parent)!r} is a file. Choose another path.") from None
    tmp = target.parent / temp_name()
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    done = False
    try:
        try:
            yield tmp
        except OSError as err:  # a write error names no file (or the temp file): name the output instead
            if err.filename is None or err.filename in (str(tmp), tmp):
                raise OSError(err.errno, err.strerror or str(err), str(target)) from err
            raise
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _final_mode(target))
        _refuse_special(target, "output path")
        os.replace(tmp, target)
        done = True
        _fsync_dir(target.parent)
    finally:
        if not done:
            with contextlib.suppress(OSError):
                tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def loads_json(text: str) -> Any:
    """``json.loads`` for files a user gives: every fault is a :class:`json.JSONDecodeError` (a ``ValueError``)
    that the caller turns into its one-line error: bad syntax, nesting too deep for Python (a
    ``RecursionError`` otherwise), and strings holding a lone surrogate (``"\\ud800"`` is valid JSON but no
    text: it failed later, when written or tokenized)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise json.JSONDecodeError(f"a string holds a lone surrogate {err.object[err.start:err.end]!r}, which is "
                                   "not text", text, 0) from None
    return value


def json_safe(value: object) -> object:
    """NaN / inf -> None, recursively through dicts, lists and tuples (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike[str], doc: object, *, indent: int = 1) -> Path:
    """Write ``doc`` as strict JSON (NaN and inf become null, so every JSON parser reads it) atomically."""
    return atomic_write_text(path, json.dumps(json_safe(doc), indent=indent, allow_nan=False) + "\n")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid may be running (when unsure: yes)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None, max_age: float = STALE_SECONDS) -> bool:
    """Whether `path` is a temp file of ours that no live writer owns.

    Stale: its process (on this host) is gone, or it is older than `max_age` seconds.
    """
    m = _TEMP_RE.match(path.name)
    if m is None:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    if age > max_age:
        return True
    return m.group(2) == host_tag() and not pid_alive(int(m.group(1)))


def remove_stale_temps(folder: str | os.PathLike[str], max_age: float = STALE_SECONDS) -> list[Path]:
    """Delete the stale temp files (see :func:`is_stale_temp`) in `folder`; return them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
            p = Path(entry.path)
            if is_stale_temp(p, now, max_age):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock for updating `path` while the block runs.

    Use it around read-modify-write of a file other processes update too. The lock is an advisory
    ``flock`` on `path`'s folder (so it leaves no lock file behind; one lock per folder). Without
    ``fcntl`` (Windows) it does nothing.
    """
    folder = Path(path).parent
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ----------------------------------------------------------------------------- path checks
def require_readable(path: str | os.PathLike[str], what: str, *, folder: bool = False) -> Path:
    """`path` as a Path if it can be read; else a one-line error with the true cause.

    Distinguishes a path that does not exist, one that exists but cannot be read (permission),
    and a folder given for a file (or the reverse, with ``folder=True``).
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise WorkbenchError(f"{what} must exist; got {str(p)!r}, which does not exist. Check the path.") from None
    except PermissionError:
        raise WorkbenchError(f"{what} must be readable; got {str(p)!r}, which cannot be reached "
                             "(permission denied on a parent folder).") from None
    except OSError as err:
        raise WorkbenchError(f"{what} must be readable; got {str(p)!r} ({err.strerror}).") from None
    if folder and not stat.S_ISDIR(mode):
        raise WorkbenchError(f"{what} must be a folder; got {str(p)!r}, {_file_kind(mode)}.")
    if not folder and stat.S_ISDIR(mode):
        raise WorkbenchError(f"{what} must be a file; got {str(p)!r}, a folder.")
    if not os.access(p, (os.R_OK | os.X_OK) if folder else os.R_OK):
        raise WorkbenchError(f"{what} must be readable; got {str(p)!r}, which exists but cannot be read "
                             "(permission denied).")
    return p


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _existing_ancestor(path: Path) -> tuple[Path, list[str]]:
    """(the nearest ancestor that exists, the names below it that do not)."""
    missing: list[str] = []
    cur = path
    while not os.path.lexists(cur):
        if cur.parent == cur:
            break
        missing.append(cur.name)
        cur = cur.parent
    return cur, missing[::-1]


def _resolved(path: Path) -> Path:
    """The real path of `path`, which need not exist (its existing part is resolved)."""
    anc, missing = _existing_ancestor(path.absolute())
    return Path(os.path.realpath(anc), *missing)


def _check_names(path: Path, name: str) -> None:
    anc, missing = _existing_ancestor(path.absolute())
    limit = _name_max(anc if anc.is_dir() else anc.parent)
    for part in missing or [path.name]:
        longest = max(len(os.fsencode(part)), TEMP_NAME_MAX)
        if longest > limit:
            raise WorkbenchError(f"{name} must have names of at most {limit} bytes; got {part[:40]!r}... "
                                 f"({len(os.fsencode(part))} bytes). Use a shorter name.")


def _check_parent(path: Path, name: str) -> None:
    anc, missing = _existing_ancestor(path.absolute())
    folder = anc if missing else anc.parent
    if missing and path.absolute() == anc:  # pragma: no cover - root
        return
    try:
        mode = os.stat(folder).st_mode
    except OSError as err:
        raise WorkbenchError(f"{name} must be in a reachable folder; got {str(path)!r} "
                             f"({err.strerror}: {str(folder)!r}).") from None
    if not stat.S_ISDIR(mode):
        raise WorkbenchError(f"{name} must be in a folder; got {str(path)!r}, whose parent {str(folder)!r} "
                             f"is {_file_kind(mode)}.")
    refused = _refuses_files(folder)
    if refused is not None:
        raise WorkbenchError(f"{name} must be in a writable folder; got {str(path)!r}, but {str(folder)!r} "
                             f"is not writable ({refused}). Choose another folder.")


def _refuses_files(folder: Path) -> str | None:
    """Why a new file cannot be made in ``folder`` (None: it can): permissions, then a real probe (a temp file
    made and removed), which also catches what ``os.access`` passes (root, read-only mounts, /proc)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    probe = folder / temp_name()
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as err:
        return err.strerror or type(err).__name__
    os.close(fd)
    os.unlink(probe)
    return None


def _check_not_input(path: Path, inputs: Iterable[str | os.PathLike[str]], name: str) -> None:
    real = _resolved(path)
    try:
        out_stat: os.stat_result | None = os.stat(path)
    except OSError:
        out_stat = None
    for given in inputs:
        inp = Path(given)
        try:
            in_stat = os.stat(inp)
        except OSError:
            continue
        same = out_stat is not None and (out_stat.st_dev, out_stat.st_ino) == (in_stat.st_dev, in_stat.st_ino)
        inside = stat.S_ISDIR(in_stat.st_mode) and Path(os.path.realpath(inp)) in real.parents
        if same or inside:
            where = "is" if same else "is inside"
            raise WorkbenchError(f"{name} must not overwrite or go inside the run's inputs; got {str(path)!r}, "
                                 f"which {where} the input {str(inp)!r}. Choose another path.")


def check_output_path(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                      folder: bool = False, name: str = "output path") -> Path:
    """Refuse an output path before any computation; return it as a Path.

    A file output (``folder=False``) must be a regular file or a new path; a folder output must
    be a folder or a new path. Either must not be (or, for a file, lie inside) one of `inputs`
    (files or folders), must have a writable parent folder (the nearest existing ancestor, when
    folders will be created) and names the file system accepts (temp names included). `name`
    is how messages call the path (e.g. the CLI's flag).
    """
    p = Path(path)
    if not str(path):
        raise WorkbenchError(f"{name} must be a path; got ''.")
    if not folder and str(path).endswith(("/", os.sep)):  # Path() drops the slash: a file would take its name
        raise WorkbenchError(f"{name} must be a file path; got {str(path)!r}, a folder path. Add a file name.")
    _check_names(p, name)
    try:
        mode: int | None = os.stat(p).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:
        if err.errno == errno.ENOTDIR:
            _check_parent(p, name)  # a parent that is a file: say so
        raise WorkbenchError(f"{name} must be reachable; got {str(p)!r} ({err.strerror}).") from None
    if mode is not None and folder and not stat.S_ISDIR(mode):
        raise WorkbenchError(f"{name} must be a folder or a new path; got {str(p)!r}, "
                             f"{_file_kind(mode)}.")
    if mode is not None and not folder and not stat.S_ISREG(mode):
        raise WorkbenchError(f"{name} must be a regular file or a new path; got {str(p)!r}, "
                             f"{_file_kind(mode)}. Choose a file path.")
    _check_parent(p, name)
    refused = _refuses_files(p) if folder and mode is not None else None
    if refused is not None:
        raise WorkbenchError(f"{name} must be a writable folder; got {str(p)!r}, which is not writable ({refused}).")
    _check_not_input(p, inputs, name)
    return p


__all__ = ["STALE_SECONDS", "TEMP_PREFIX", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "check_output_path", "current_umask", "file_lock", "is_stale_temp", "remove_stale_temps",
           "require_readable", "temp_name"]

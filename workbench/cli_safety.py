"""Guards every CLI command shares: checks before any computation, and one-line errors.

* :func:`check_out` / :func:`check_out_files`: an output path is refused before any work when it
  is a device, FIFO, socket or folder, one of the run's inputs (or inside an input folder), in a
  folder that is not writable, or has a name too long for the file system; stale temp files of
  killed runs in its folder are removed (:mod:`tracer.io`).
* :func:`clear_outputs`: before a run writes several files into one folder, the index goes first, then
  the earlier run's files of the command's own names.
* :func:`need_input`: an input that is missing or unreadable says which.
* :func:`check_name`: every name that comes from an input file (a world's prompt names, a slug)
  and becomes part of an output path is validated before anything is written.
* :func:`parse_token_ids`: ``"1, 2,3"`` -> ``[1, 2, 3]``; ``"1,2 0,30"`` is an error, not ``[1, 20, 30]``.
* :func:`error_line` and :func:`terminate_on_sigterm`: how :func:`workbench.cli.main` turns bad
  input into one line on stderr and exit 2, and SIGTERM into a clean interrupt.
"""

import contextlib
import errno
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tracer.errors import WorkbenchError
from tracer.io import check_output_path, remove_stale_temps, require_readable

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""A name that may become part of a file name: no path separators, no leading dot, <= 100 chars."""
_INT64_MAX = 2**63 - 1


def check_out(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str] | None] = (),
              folder: bool = False, flag: str = "--out") -> Path:
    """Refuse a bad output path up front (see :func:`tracer.io.check_output_path`); clean stale temps."""
    p = check_output_path(path, inputs=[i for i in inputs if i], folder=folder, name=flag)
    remove_stale_temps(p if folder and p.is_dir() else p.parent)
    return p


def check_out_files(folder: str | os.PathLike[str], names: Iterable[str], *,
                    inputs: Iterable[str | os.PathLike[str] | None] = (), flag: str = "--out") -> list[Path]:
    """check_out on each file a folder output will hold (after :func:`check_out` on the folder)."""
    return [check_out(Path(folder) / name, inputs=inputs, flag=f"{flag} file") for name in names]


def clear_outputs(folder: Path, index: str, patterns: Iterable[str]) -> list[Path]:
    """Before a multi-file output is written into ``folder``: remove its ``index`` file first (an interrupted
    write then leaves no index that vouches for a mix of runs), then the earlier run's files matching
    ``patterns`` (globs of the command's own names), so no stale plot or per-layer file stays beside the new
    ones. Other files are left alone. Returns what was removed."""
    removed = []
    for path in [folder / index, *sorted({p for pattern in patterns for p in folder.glob(pattern)})]:
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed


def list_items(text: str, flag: str) -> list[str]:
    """The comma-separated entries of a list flag: none empty (``a,,b``), none repeated."""
    items = [x.strip() for x in str(text).split(",")]
    if not text.strip() or any(not x for x in items):
        raise WorkbenchError(f"{flag} must be comma-separated entries, none empty; got {text!r}.")
    repeated = next((x for i, x in enumerate(items) if x in items[:i]), None)
    if repeated is not None:
        raise WorkbenchError(f"{flag} must name each entry once; got {repeated!r} twice in {text!r}.")
    return items


def int_items(text: str, flag: str) -> list[int]:
    """:func:`list_items` as integers."""
    items = list_items(text, flag)
    try:
        return [int(x) for x in items]
    except ValueError:
        raise WorkbenchError(f"{flag} must be comma-separated integers; got {text!r}.") from None


def check_distinct(*flags_and_paths: tuple[str, str | os.PathLike[str] | None]) -> None:
    """Two outputs of one run must be different files (``--stats-json`` is not ``--out``)."""
    seen: dict[str, str] = {}
    for flag, path in flags_and_paths:
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise WorkbenchError(f"{flag} must differ from {seen[key]}; both are {str(path)!r}.")
        seen[key] = flag


def need_input(path: str | os.PathLike[str], flag: str, *, folder: bool = False) -> Path:
    """The input path, if it exists and can be read; else a one-line error saying which it is not."""
    return require_readable(path, flag, folder=folder)


def check_name(name: object, what: str) -> str:
    """A name from an input file that will name an output file: letters, digits, '.', '_', '-'."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise WorkbenchError(f"{what} must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or "
                             f"digit (no '/' or '..'); got {str(name)[:80]!r}. It names an output file.")
    return name


def parse_token_ids(text: str, flag: str = "--token-ids") -> list[int]:
    """Comma-separated token ids (spaces around commas allowed): ``"1, 5,9"`` -> ``[1, 5, 9]``."""
    parts = [part.strip() for part in text.split(",")]
    if parts and parts[-1] == "":
        parts.pop()  # one trailing comma
    if not parts or parts == [""]:
        raise WorkbenchError(f"{flag} must list at least one id; got {text!r}. Example: {flag} 1,523,87")
    for part in parts:
        if not part.isdigit() or not part.isascii():
            raise WorkbenchError(f"{flag} must be comma-separated non-negative integers; got {part!r} in "
                                 f"{text!r}. Example: {flag} 1,523,87")
        if int(part) > _INT64_MAX:
            raise WorkbenchError(f"{flag} ids must be below 2**63; got {part} in {text!r}.")
    return [int(part) for part in parts]


# ----------------------------------------------------------------------------- errors and signals
class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that atomic writes clean up as for Ctrl-C."""


REDELIVER_AFTER_S = 0.05
"""How long after a swallowed interrupt (see :func:`terminate_on_sigterm`) its signal is sent again."""


def _redeliver_swallowed(previous: Callable[[Any], object]) -> Callable[[Any], None]:
    """An unraisable-exception hook that sends an interrupt's signal again when Python swallowed it.

    A signal handler runs at whatever bytecode the main thread is on; when that is a ``__del__`` or
    a weakref callback of the garbage collector (matplotlib's and torch's objects have many), the
    KeyboardInterrupt / :class:`Terminated` it raises is reported as "Exception ignored in ..." and
    dropped, and the command would run on as if never interrupted. The signal is sent again shortly
    after, when the collector is done; other unraisable exceptions go to the previous hook."""

    def hook(unraisable: Any) -> None:
        exc_type = unraisable.exc_type
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            signum = signal.SIGTERM if issubclass(exc_type, Terminated) else signal.SIGINT
            timer = threading.Timer(REDELIVER_AFTER_S, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (main thread only), and a SIGTERM or
    SIGINT whose exception Python swallowed (raised inside a garbage-collector callback) is sent
    again until it interrupts the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_swallowed(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


def one_line(text: str) -> str:
    """`text` on one line (newlines and the spaces around them become one space)."""
    return re.sub(r"\s*\n\s*", " ", text).strip()


def flag_hint(err: WorkbenchError, dests: Iterable[str] | None = None) -> str:
    """' (flags: --max-feature-nodes, ...)' for the config fields an error offers as remedies; with
    ``dests`` (the command's parsed argument names), only those the command has as flags."""
    fields = list(getattr(err, "fields", ()))
    if dests is not None:
        known = list(dests)
        fields = [f for f in fields if any(d == f or d.endswith("_" + f) for d in known)]
    return f" (flags: {', '.join('--' + f.replace('_', '-') for f in fields)})" if fields else ""


def _os_error(err: OSError) -> str:
    where = f" {err.filename!r}" if err.filename else ""
    if isinstance(err, FileNotFoundError):
        return f"file not found:{where}. Check the path."
    if isinstance(err, PermissionError):
        return f"permission denied:{where}. Check the file's and its folder's permissions."
    if err.errno == errno.ENOSPC:
        return f"no space left on the device writing{where}. Free some space or write elsewhere."
    return f"{err.strerror or type(err).__name__}:{where}."


def error_line(err: BaseException, dests: Iterable[str] | None = None) -> str | None:
    """The one-line message for an error caused by input or the environment; None for a bug (``dests``:
    see :func:`flag_hint`)."""
    if isinstance(err, WorkbenchError):
        return one_line(str(err)) + flag_hint(err, dests)
    if isinstance(err, OSError):
        return _os_error(err)
    if isinstance(err, UnicodeDecodeError):
        return f"input must be UTF-8 text; got byte {err.object[err.start:err.start + 1]!r} at offset {err.start}."
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and re.search(
            r"out of memory|can't allocate memory|not enough memory", str(err), re.IGNORECASE)):
        return "out of memory: " + one_line(str(err))[:160] + ". Use a smaller input or a bigger machine."
    return None


__all__ = ["NAME_RE", "Terminated", "check_distinct", "check_name", "check_out", "check_out_files", "clear_outputs",
           "error_line", "flag_hint", "int_items", "list_items", "need_input", "one_line", "parse_token_ids",
           "terminate_on_sigterm"]


def path_arg(text: str) -> Path:
    """An argparse ``type`` for a path flag: refuses an empty value (``Path('')`` would be ``.``)."""
    if not text:
        import argparse

        raise argparse.ArgumentTypeError("must be a path; got ''")
    return Path(text)


__all__ += ["path_arg"]


def run_script(main: Callable[[], int], prog: str) -> int:
    """The entry of a ``python -m workbench...`` script (scorers, benchmarks): as for the CLI, bad input and
    the environment's errors are one line on stderr and exit 2, SIGTERM / SIGINT exit 143 / 130 (the
    script's ``finally`` blocks run); a scorer's own ``ValueError`` / ``TypeError`` in the project's
    "<name> must be ...; got ..." form counts as bad input, anything else is a bug and keeps its traceback."""
    try:
        with terminate_on_sigterm():
            return int(main() or 0)
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)  # noqa: T201 - the one line a script ends with
        return 143
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except Exception as err:  # noqa: BLE001 - classified below; bugs are re-raised
        line = error_line(err)
        if line is None and isinstance(err, (ValueError, TypeError)) and " must " in str(err):
            line = one_line(str(err))
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)  # noqa: T201
        return 2


__all__ += ["run_script"]

"""``--threads`` for commands that run small models: torch's CPU threads, 1 by default (on a small model
a second thread costs more than it gives, and on a loaded machine two threads made the demo ten times
slower)."""

import argparse
from typing import Any

THREADS_HELP = "torch CPU threads (default 1: fastest for small models; raise for large ones)"


OPTIONAL_THREADS_HELP = ("torch CPU threads (default: torch's own, all cores; on a small model or a loaded machine "
                         "1 can be many times faster)")


def add_threads_argument(parser: argparse.ArgumentParser, *, default: int | None = 1) -> None:
    """Add ``--threads`` to a subcommand's parser: 1 by default for commands that only ever run small models;
    ``default=None`` keeps torch's own count unless given (commands that may run a large model)."""
    parser.add_argument("--threads", type=int, default=default,
                        help=THREADS_HELP if default == 1 else OPTIONAL_THREADS_HELP)


def max_threads() -> int:
    """The most ``--threads`` a command accepts: 8 per core, and 64 in any case."""
    import os

    return max(64, 8 * (os.cpu_count() or 1))


def threaded(run: Any) -> Any:
    """Run a subcommand's action under ``torch_threads(args.threads)`` (as it is when ``args.threads`` is None)."""

    def wrapped(args: argparse.Namespace) -> int:
        from tracer.errors import WorkbenchError
        from tracer.threads import torch_threads

        if args.threads is None:
            return int(run(args))
        most = max_threads()
        if not 1 <= args.threads <= most:  # thousands of threads crash torch's, libgomp's and Rust's pools
            raise WorkbenchError(f"--threads must be an integer in [1, {most}] (the larger of 64 and 8 per core); "
                                 f"got {args.threads}.")
        with torch_threads(args.threads):
            return int(run(args))

    return wrapped

"""``--threads`` for commands that run small models: torch's CPU threads, 1 by default (on a small model
a second thread costs more than it gives, and on a loaded machine two threads made the demo ten times
slower)."""

import argparse
from typing import Any

THREADS_HELP = "torch CPU threads (default 1: fastest for small models; raise for large ones)"


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` (default 1) to a subcommand's parser."""
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)


def threaded(run: Any) -> Any:
    """Run a subcommand's action under ``torch_threads(args.threads)``."""

    def wrapped(args: argparse.Namespace) -> int:
        from tracer.errors import WorkbenchError
        from tracer.threads import torch_threads

        if args.threads < 1:
            raise WorkbenchError(f"--threads must be an integer >= 1; got {args.threads}.")
        with torch_threads(args.threads):
            return int(run(args))

    return wrapped

"""The `workbench` command line.

Each subcommand lives in its own module, which exposes ``register(subparsers)``: it adds an
argparse sub-parser and sets ``func`` to a callable ``(args) -> int``. Registration imports
nothing heavy, so ``workbench --help`` stays fast; torch and transformers are imported inside
the subcommand when it runs.

Errors: bad input raises :class:`tracer.errors.WorkbenchError` (or a subclass); the CLI prints
its one-line message and exits with status 2, without a traceback; so do OS errors (permission,
no space), undecodable text and running out of memory (:func:`workbench.cli_safety.error_line`).
Interrupts exit 130, SIGTERM 143; either way no output file is left half-written.
"""

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from typing import Any

from workbench.cli_parser import DefaultsFormatter, Parser, RawDefaultsFormatter

# subcommand name -> module that defines register(subparsers). One registry: the CLI's choices
# and its help come from here.
SUBCOMMANDS: dict[str, str] = {
    "demo": "workbench.demo",
    "trace": "workbench.cmd_graph",
    "prune": "workbench.cmd_graphtools",
    "export": "workbench.cmd_graphtools",
    "import-pt": "workbench.cmd_graphtools",
    "cluster": "workbench.cmd_cluster",
    "intervene": "workbench.cmd_intervene",
    "activations": "workbench.cmd_activations",
    "families": "workbench.cmd_families",
    "manifold": "workbench.cmd_manifold",
    "world": "workbench.world.cli",
    "bench": "workbench.bench.cli",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the command line, only the named subcommand's module is imported (all of
    them for help, errors or no subcommand), so that a run does not pay for the others."""
    parser = Parser(
        prog="workbench",
        description="Attribution graphs through transcoders, and feature-geometry analyses.",
    )
    from tracer import __version__

    parser.add_argument("--version", action="version", version=f"manifold-workbench {__version__}")
    # their own dests: a subcommand's --quiet default would overwrite a shared one ('workbench -q demo')
    parser.add_argument("--quiet", "-q", action="store_true", dest="global_quiet", help="no progress bars or info logs")
    parser.add_argument("--verbose", "-v", action="store_true", dest="global_verbose", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    named = next((a for a in (argv or []) if not a.startswith("-")), None)
    wanted = [SUBCOMMANDS[named]] if named in SUBCOMMANDS else list(SUBCOMMANDS.values())
    done: set[str] = set()
    for module_name in wanted:
        if module_name in done:
            continue
        done.add(module_name)
        module = importlib.import_module(module_name)
        module.register(sub)
    for command in _leaf_parsers(sub):  # -v after the command, as -q (each command adds its own --quiet)
        if "--verbose" not in command._option_string_actions:
            command.add_argument("--verbose", "-v", action="store_true", help="debug logging")
        raw = command.formatter_class in (argparse.RawDescriptionHelpFormatter, argparse.RawTextHelpFormatter)
        command.formatter_class = RawDefaultsFormatter if raw else DefaultsFormatter
    return parser


def _leaf_parsers(sub: "argparse._SubParsersAction[Any]") -> list[argparse.ArgumentParser]:
    """The parsers that run a command: each subcommand's, or its actions' (manifold fit, world build)."""
    out = []
    for command in dict.fromkeys(sub.choices.values()):  # aliases map to one parser
        inner = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        out += [leaf for action in inner for leaf in _leaf_parsers(action)] if inner else [command]
    return out


_CONSOLE = "workbench-console"
"""The name of the console handler :func:`_configure_logging` installs (none where the caller has handlers)."""


def _configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.set_name(_CONSOLE)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[console])  # a no-op where the root logger has handlers already
    warnings.showwarning = _warning_line


def _logs_above_bars() -> contextlib.AbstractContextManager[object]:
    """Log lines above the progress bars, not through a bar's line (tqdm's logging redirect), when the log
    goes to the console handler :func:`_configure_logging` installed on a live stderr. A program that calls
    :func:`main` with its own handlers (a log file) keeps them as they are."""
    if not any(h.get_name() == _CONSOLE for h in logging.getLogger().handlers):
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A library's ``warnings.warn`` as one log line (the message, not the source file and line)."""
    logging.getLogger("workbench").warning("%s", message)


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: this process's, ``sys.argv[1:]``).

    When `argv` is None (the process *is* this command) and the subcommand says there is nothing
    left to clean up (``args.fast_exit``), the process ends right after the command, without the
    interpreter's teardown of torch and of large mappings (about a second).
    """
    if sys.stderr is None:  # started with stderr closed (`2>&-`): progress bars and logs go nowhere, not to stdout
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - the process's stderr, kept open
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # --quiet / --verbose before or after the subcommand: either place works
    args.quiet = bool(getattr(args, "quiet", False)) or args.global_quiet
    args.verbose = bool(getattr(args, "verbose", False)) or args.global_verbose
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # recorded next to outputs
    code = _run(parser, args)
    if argv is None and getattr(args, "fast_exit", False):
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process now: flush what was written, then skip the interpreter's teardown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command is None:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        print(f"workbench: error: a command is required, one of {', '.join(sub.choices)}. See workbench --help.",
              file=sys.stderr)
        return 2
    _configure_logging(args.quiet, args.verbose)
    from workbench.cli_safety import Terminated, error_line, terminate_on_sigterm

    action = getattr(args, f"{args.command.replace('-', '_')}_action", None)  # manifold fit, world build
    name = f"{args.command} {action}" if action else args.command
    try:
        with terminate_on_sigterm(), _logs_above_bars():
            return int(args.func(args) or 0)
    except Terminated:
        print(f"workbench {name}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"workbench {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - bad input gets one line; a bug keeps its traceback
        line = error_line(err, dests=vars(args))
        if line is None:
            raise
        print(f"workbench {name}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

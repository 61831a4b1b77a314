"""The `workbench` command line.

Each subcommand lives in its own module, which exposes ``register(subparsers)``: it adds an
argparse sub-parser and sets ``func`` to a callable ``(args) -> int``. Registration imports
nothing heavy, so ``workbench --help`` stays fast; torch and transformers are imported inside
the subcommand when it runs.

Errors: bad input raises :class:`tracer.errors.WorkbenchError` (or a subclass); the CLI prints
its one-line message and exits with status 2, without a traceback. Interrupts exit 130.
"""

import argparse
import importlib
import logging
import sys

# subcommand name -> module that defines register(subparsers). One registry: the CLI's choices
# and its help come from here.
SUBCOMMANDS: dict[str, str] = {
    "demo": "workbench.demo",
    "trace": "workbench.cmd_graph",
    "prune": "workbench.cmd_graphtools",
    "export": "workbench.cmd_graphtools",
    "import-pt": "workbench.cmd_graphtools",
    "intervene": "workbench.cmd_intervene",
    "world": "workbench.world.cli",
    "bench": "workbench.bench.cli",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the command line, only the named subcommand's module is imported (all of
    them for help, errors or no subcommand), so that a run does not pay for the others."""
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Attribution graphs through transcoders, and feature-geometry analyses.",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
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
    return parser


def _configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: this process's, ``sys.argv[1:]``).

    When `argv` is None (the process *is* this command) and the subcommand says there is nothing
    left to clean up (``args.fast_exit``), the process ends right after the command, without the
    interpreter's teardown of torch and of large mappings (about a second).
    """
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    code = _run(parser, args)
    if argv is None and getattr(args, "fast_exit", False):
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process now: flush what was written, then skip the interpreter's teardown."""
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command is None:
        parser.print_help()
        return 2
    # subcommands may define their own --quiet; either place works
    quiet = bool(getattr(args, "quiet", False))
    _configure_logging(quiet, bool(getattr(args, "verbose", False)))
    from tracer.errors import WorkbenchError

    try:
        return int(args.func(args) or 0)
    except WorkbenchError as err:
        print(f"workbench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"workbench {args.command}: error: file not found: {err.filename or err}. "
              "Check the path.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

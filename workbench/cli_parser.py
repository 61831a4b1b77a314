"""The command line's argparse: one-line usage errors, options given once, every default in the help.

:class:`Parser` is the `workbench` command's parser class and :func:`script_parser` makes one for the
``python -m workbench...`` scripts (scoring, benchmarks), so that they answer bad input as the CLI does.
"""

import argparse
import re
import sys
from typing import Any, NoReturn

SINGLE_VALUE = (argparse._StoreAction, argparse._StoreConstAction, argparse.BooleanOptionalAction)
"""Options that hold one value (store, store_true / false / const, --x/--no-x): given once at most.
Appending, counting and custom actions (e.g. intervene's --set / --scale / --add) repeat freely."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other bad input, and an
    option given twice (``--out a --out b``, or ``--x --no-x``) is a usage error, not "the last wins"."""

    _argv: tuple[str, ...] = ()
    """a leaf parser's arguments, for :meth:`error`'s hint"""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._dash_hint(message)}. See {self.prog} --help.\n")

    def _dash_hint(self, message: str) -> str:
        """argparse reads a value that starts with '-' (``--set -1:2:3=0``) as an option, and says only "expected
        one argument": name the = form that passes it."""
        named = re.fullmatch(r"argument (\S+): expected one argument", message)
        if named is None:
            return ""
        options = named.group(1).split("/")  # "--quiet/-q": every spelling of the option
        for opt, value in zip(self._argv, self._argv[1:]):
            if opt in options and value.startswith("-") and value not in self._option_string_actions:
                return f" (a value that starts with '-' needs the = form: {opt}={value})"
        return ""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in self._actions)
        if leaf:  # a leaf parser: every option here is its own (a script's: the process's arguments)
            self._argv = tuple(sys.argv[1:] if args is None else args)
            self._refuse_repeats(list(self._argv))
        parsed, extras = super().parse_known_args(args, namespace)
        if leaf and extras:  # said by the command that does not know them, not by "workbench"
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _refuse_repeats(self, args: list[str]) -> None:
        seen: dict[str, tuple[str, object]] = {}  # dest -> (option as given, what it sets)
        for arg in args:
            if arg == "--":
                break
            action = self._option_string_actions.get(arg.split("=", 1)[0]) if arg.startswith("-") else None
            if action is None or not isinstance(action, SINGLE_VALUE) or action.dest == argparse.SUPPRESS:
                continue
            opt = arg.split("=", 1)[0]
            sets = (not opt.startswith("--no-") if isinstance(action, argparse.BooleanOptionalAction)
                    else action.const if action.nargs == 0 else None)
            if action.dest in seen and (action.nargs != 0 or seen[action.dest][1] != sets):
                first = seen[action.dest][0]
                what = "given twice" if first == opt else f"conflicts with {first}"
                self.error(f"argument {opt}: {what}; give it once")
            seen[action.dest] = (opt, sets)


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already states it (or there is none to
    state: None, a flag that is off, a required option)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (not action.option_strings or action.required or action.default in (None, False, argparse.SUPPRESS)
                or "default" in text.lower() or isinstance(action, argparse.BooleanOptionalAction)):
            return action.help
        return f"{text} (default: %(default)s)"


class RawDefaultsFormatter(argparse.RawDescriptionHelpFormatter, DefaultsFormatter):
    """:class:`DefaultsFormatter` that keeps the description's own line breaks."""


def script_parser(prog: str, description: str, *, raw: bool = False) -> Parser:
    """The parser of a ``python -m`` script (``prog``: how it is run), with the CLI's errors and help."""
    return Parser(prog=prog, description=description,
                  formatter_class=RawDefaultsFormatter if raw else DefaultsFormatter)

"""CLI flags from frozen dataclass configs: one source of defaults and help for API, CLI and recipes.

:func:`add_config_arguments` adds one ``--kebab-case`` flag per field (help = the field's
attribute docstring, default shown), booleans as ``--x/--no-x`` pairs, tuples of ints or strings as
comma-separated lists, ``X | None`` fields accepting ``none``; :func:`config_from_args` builds the
dataclass back from the parsed namespace (its ``__post_init__`` validates).
"""

import argparse
import ast
import contextlib
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_C = TypeVar("_C", bound="DataclassInstance")


def flag_name(field: str, prefix: str = "") -> str:
    """The command-line flag of a config field: ``max_feature_nodes`` -> ``--max-feature-nodes``."""
    return "--" + (prefix + field).replace("_", "-")


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal right after each field)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parts(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:  # noqa: TID251
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _int_tuple(text: str) -> tuple[int, ...]:
    """``"1, 2"`` -> (1, 2); ``""`` -> (); an empty item (``"1,,2"``, ``"1,"``) or a non-integer is an error."""
    parts = text.replace(" ", "").split(",")
    if parts == [""]:
        return ()
    try:
        if "" in parts:
            raise ValueError
        return tuple(int(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers; got {text!r}") from None


def _str_tuple(text: str) -> tuple[str, ...]:
    """``"frozen, free"`` -> ("frozen", "free"); ``""`` -> (); items stripped, empty items dropped."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _converter(tp: Any, optional: bool) -> Any:
    base: Callable[[str], Any] | None = {int: int, float: float, str: str}.get(tp)
    if typing.get_origin(tp) is tuple:
        base = _str_tuple if typing.get_args(tp)[:1] == (str,) else _int_tuple
    if base is None and typing.get_origin(tp) is typing.Literal:
        base = str
    if base is None:
        raise TypeError(f"config field type {tp!r} has no CLI form")
    if not optional:
        return base
    return lambda text: None if text.lower() == "none" else base(text)


def add_config_arguments(parser: "argparse.ArgumentParser | argparse._ArgumentGroup", cls: type, *,
                         exclude: tuple[str, ...] = (), prefix: str = "",
                         choices: Mapping[str, Sequence[str]] | None = None) -> None:
    """One flag per field of the dataclass ``cls`` (except ``exclude``), on a parser or an argument group; with a
    ``prefix``, a field named in the help (``min_share``) reads as its flag (``--role-min-share``). A ``Literal``
    field offers its values as choices; ``choices`` gives them for plain ``str`` fields (by field name)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = flag_name(f.name, prefix)
        tp, optional = _parts(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = plain_help(_flags_named(docs.get(f.name, ""), cls, prefix))
        if tp is bool:
            said = "default" in help_text.lower()  # "(default: recomputed, ...)" then "(default: False)" said it twice
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                dest=prefix + f.name, help=help_text if said else f"{help_text} (default: {default})")
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        allowed = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else (choices or {}).get(f.name)
        parser.add_argument(flag, type=_converter(tp, optional), default=default, dest=prefix + f.name,
                            choices=allowed, metavar=None if allowed else f.name.upper(),
                            help=_with_default(help_text, shown, optional))


def _flags_named(help_text: str, cls: type, prefix: str) -> str:
    """The field names of ``cls`` in ``help_text`` read as their flags (``min_share`` -> ``--min-share``, or with a
    ``prefix`` ``--role-min-share``: a prefixed flag's help would otherwise name a flag that does not exist). A
    name is a field's where it has an underscore or stands in double backquotes: a one-word field (``bins``) is
    also a plain word ("Histogram bins per axis")."""
    for f in dataclasses.fields(cls):
        flag = flag_name(f.name, prefix)
        help_text = help_text.replace(f"``{f.name}``", flag)
        if "_" in f.name:
            help_text = re.sub(rf"(?<![\w-]){f.name}\b", flag, help_text)
    return help_text


_ROLE = re.compile(r":(?:class|mod|func|meth|attr|data|obj):`(~?)([^`]+)`")


def plain_help(text: str) -> str:
    """A docstring's reST as plain help text: ``:class:`~a.B``` -> ``B``, ``:mod:`a.b``` -> ``a.b``, and no
    double backquotes."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return text.replace("``", "")


def _with_default(help_text: str, shown: object, optional: bool) -> str:
    """The field's doc and its default, unless the doc already states the default (``"Head width (default
    d_model // n_heads)."`` followed by "(default: none)" contradicted itself)."""
    if shown in ("", None) and optional and ("default" in help_text.lower() or "None:" in help_text):
        return help_text  # the doc says what the default (None) does
    return f"{help_text} (default: {shown if shown not in ('', None) else 'none'})"


def config_from_args(cls: type[_C], args: argparse.Namespace, *, prefix: str = "", **overrides: Any) -> _C:
    """The dataclass ``cls`` from parsed flags (fields not on the command line keep their defaults); a
    field's refusal names its flag (:func:`naming_flags`)."""
    values = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)
              if hasattr(args, prefix + f.name)}
    with naming_flags({name: flag_name(name, prefix) for name in values}):
        return cls(**{**values, **overrides})


@contextlib.contextmanager
def naming_flags(flags: dict[str, str]) -> Iterator[None]:
    """Inside, a config's refusal (``ValueError`` / ``TypeError``) whose message starts with one of the field
    names in ``flags`` is raised again as a :class:`~tracer.errors.WorkbenchError` that names the field's flag
    (``max_feature_nodes must be ...`` -> ``--max-feature-nodes must be ...``); other errors pass unchanged."""
    from tracer.errors import WorkbenchError

    try:
        yield
    except (ValueError, TypeError) as err:
        name = next((n for n in sorted(flags, key=len, reverse=True)
                     if str(err).startswith(n + " ") or str(err).startswith(n + "'")), None)
        if name is None:
            raise
        out = WorkbenchError(flags[name] + str(err)[len(name):])
        out.fields = tuple(f for f in getattr(err, "fields", ()) if f != name)  # named already
        raise out from None

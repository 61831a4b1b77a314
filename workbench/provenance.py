"""What made an output: every JSON a command writes carries ``run`` (the command line as given, every
option as parsed, defaults included, the version, and the versions of Python and of the libraries the
results depend on), so that a run can be told from another and repeated."""

import argparse
import os
from typing import Any

_INTERNAL = frozenset({"argv", "func", "handler", "fast_exit", "global_quiet", "global_verbose"})
_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "scipy", "scikit-learn")


def _plain(value: Any) -> Any:
    """An option's value as JSON: paths as strings, tuples as lists; anything else by its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def run_record(args: argparse.Namespace) -> dict[str, Any]:
    """``{"argv", "options", "cwd", "version"}`` of a parsed command line (``args.argv``: set by
    :func:`workbench.cli.main`); relative paths in argv and options are relative to ``cwd``."""
    from workbench import __version__

    options = {k: _plain(v) for k, v in sorted(vars(args).items())
               if k not in _INTERNAL and not k.startswith("_") and not callable(v)}
    return {"argv": list(getattr(args, "argv", [])), "options": options, "cwd": os.getcwd(), "version": __version__,
            "versions": library_versions()}


def library_versions() -> dict[str, str | None]:
    """Python's and the installed versions of the libraries results depend on (None: not installed);
    read from the package metadata, so nothing is imported."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out

"""`workbench intervene`: feature interventions on the real model (placeholder registration)."""

import argparse


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser("intervene", help="set / scale / add transcoder features in the real model")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tracer.errors import WorkbenchError

    raise WorkbenchError("intervene must be implemented; got a placeholder. Coming soon.")

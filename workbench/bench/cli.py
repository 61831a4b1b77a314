"""`workbench bench`: synthetic benchmark models, our engine vs circuit-tracer (work in progress)."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmark against circuit-tracer on synthetic models")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from tracer.errors import WorkbenchError

    raise WorkbenchError("bench is not implemented yet; it is being written.")

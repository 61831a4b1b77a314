"""The flags that place the model, one definition for every command that runs it: ``--device`` everywhere,
``--dtype`` where the command's results are the model's own numbers (trace, intervene, activations; the analyses
read graphs traced at float32 and keep the model there, so that it reproduces them)."""

import argparse
from typing import Any

DEVICE_HELP = "cpu, cuda or cuda:N (default cpu)"
DTYPE_HELP = "float32 (default), float64, bfloat16 or float16"


def add_model_placement(parser: argparse.ArgumentParser, *, dtype: bool = False, used: str = "") -> None:
    """Add ``--device`` (and, with ``dtype``, ``--dtype``) to a subcommand's parser; ``used`` says when the
    model runs, where it may not ("with --model")."""
    when = f" {used}" if used else ""
    parser.add_argument("--device", default="cpu", help=f"the model's device{when}: {DEVICE_HELP}")
    if dtype:
        parser.add_argument("--dtype", default="float32", help=DTYPE_HELP)


def model_placement(args: argparse.Namespace) -> tuple[Any, Any]:
    """(torch dtype, torch device) of ``--dtype`` (float32 where the command has none) and ``--device``, checked:
    a bad or absent device is one line before anything is loaded."""
    from tracer.models import parse_device, parse_dtype

    return parse_dtype(getattr(args, "dtype", "float32")), parse_device(args.device)

"""`workbench world build`: regenerate the embedded demo world from a seed.

Registration imports nothing heavy; torch and the training code load when the action runs.
"""

import argparse
from pathlib import Path

from tracer.errors import WorkbenchError


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `world` sub-command (action: `build`)."""
    world = subparsers.add_parser("world", help="build the embedded demo world (language, model, transcoders)")
    actions = world.add_subparsers(dest="world_action", metavar="ACTION")
    build = actions.add_parser("build", help="regenerate the whole demo world from a seed")
    build.add_argument("--out", required=True, type=Path, help="output folder (created; files replaced)")
    build.add_argument("--seed", type=int, default=0, help="seed for the corpus, model and transcoders")
    build.add_argument("--tiny", action="store_true", help="tiny, fast version of the same pipeline (CI)")
    build.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    build.set_defaults(func=_run_build)
    world.set_defaults(func=_no_action)


def _no_action(args: argparse.Namespace) -> int:
    raise WorkbenchError("workbench world needs an action; got none. Try `workbench world build --out DIR`.")


def _run_build(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise WorkbenchError(f"--seed must be >= 0; got {args.seed!r}. Pass a non-negative integer.")
    from workbench.cli_safety import check_out

    out = check_out(args.out, folder=True)
    from workbench.world.build import build_world

    build_world(out, seed=args.seed, tiny=args.tiny, progress=not args.quiet)
    return 0

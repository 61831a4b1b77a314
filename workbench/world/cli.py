"""`workbench world build`: regenerate the embedded demo world from a seed.

Registration imports nothing heavy; torch and the training code load when the action runs.
"""

import argparse
from pathlib import Path

from tracer.errors import WorkbenchError
from workbench.cli_safety import path_arg


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `world` sub-command (actions: `build`, `truth`)."""
    world = subparsers.add_parser("world", help="build the embedded demo world (language, model, transcoders)",
                                  description="Build the embedded demo world (language, model, transcoders), or "
                                              "re-run its per-feature truth.")
    actions = world.add_subparsers(dest="world_action", metavar="ACTION")
    build = actions.add_parser("build", help="regenerate the whole demo world from a seed",
                               description="Regenerate the whole demo world from a seed.")
    build.add_argument("--out", required=True, type=path_arg,
                       help="output folder: a new one, or a world to replace whole (only once the build is complete; "
                            "files the build does not write, like README.md, are kept)")
    build.add_argument("--seed", type=int, default=0,
                       help="seed for the corpus, model and transcoders (0 to 2**63 - 1)")
    build.add_argument("--tiny", action="store_true", help="tiny, fast version of the same pipeline (CI)")
    build.add_argument("--smoothing", type=float, default=None, metavar="S",
                       help="circular label smoothing: the target mass put on each calendar neighbour of a "
                            "cyclic answer (TrainConfig.smoothing; default: the config's). 0 builds a control "
                            "world whose answer-side circles are not imposed by the loss")
    build.add_argument("--heldout-frac", type=float, default=None, metavar="F",
                       help="share of each cyclic family's arithmetic combinations (offsets >= 2) held out of "
                            "training (WorldBuildConfig.heldout_frac; default: the config's, 0.1): more unseen "
                            "combinations for the held-out prompt sets, fewer to learn from")
    build.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    build.set_defaults(func=_run_build)
    truth = actions.add_parser(
        "truth", help="recompute the per-feature truth of a built world (feature_truth_*.jsonl; fixes labels)",
        description="Recompute feature_truth_{plt,clt}.jsonl of a built world from its model and transcoders "
                    "(the build's truth phase alone), rewrite the labels the truth contradicts, and record the "
                    "truth in manifest.json.")
    truth.add_argument("--world", required=True, type=path_arg, help="a built world folder (with manifest.json)")
    truth.add_argument("--n-sentences", type=int, default=None,
                       help="fresh generator sentences of the truth corpus (default: TruthConfig's)")
    truth.add_argument("--quiet", "-q", action="store_true", help="no info logs")
    truth.set_defaults(func=_run_truth)
    world.set_defaults(func=_no_action)


def _no_action(args: argparse.Namespace) -> int:
    raise WorkbenchError("workbench world needs an action; got none. Try `workbench world build --out DIR`.")


def _run_build(args: argparse.Namespace) -> int:
    if not 0 <= args.seed <= 2**63 - 1:
        raise WorkbenchError(f"--seed must be an integer in [0, 2**63 - 1]; got {args.seed!r}. Pass a whole "
                             "number from 0 to 9223372036854775807.")
    import dataclasses

    from workbench.cli_safety import check_out

    out = check_out(args.out, folder=True)

    from workbench.world.build import build_world, default_config

    config = default_config(tiny=args.tiny)
    if args.smoothing is not None:
        if not 0 <= args.smoothing < 0.5:
            raise WorkbenchError(f"--smoothing must be in [0, 0.5) (mass on each of two neighbours); got "
                                 f"{args.smoothing!r}.")
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, smoothing=args.smoothing))
    if args.heldout_frac is not None:
        if not 0 < args.heldout_frac <= 0.5:
            raise WorkbenchError(f"--heldout-frac must be in (0, 0.5] (a share of the combinations); got "
                                 f"{args.heldout_frac!r}. Use e.g. 0.3.")
        config = dataclasses.replace(config, heldout_frac=args.heldout_frac)
    build_world(out, seed=args.seed, tiny=args.tiny, progress=not args.quiet, config=config)
    return 0


def _run_truth(args: argparse.Namespace) -> int:
    if not (Path(args.world) / "manifest.json").is_file():
        from tracer.folders import folder_hint

        hint = folder_hint(Path(args.world), "world")
        raise WorkbenchError(f"--world must be a built world folder with manifest.json; got {str(args.world)!r}. "
                             f"Build one with `workbench world build --out DIR`.{hint}")
    if args.n_sentences is not None and args.n_sentences < 1:
        raise WorkbenchError(f"--n-sentences must be >= 1; got {args.n_sentences!r}.")
    from workbench.cli_safety import check_out

    check_out(args.world, folder=True, flag="--world")  # rewritten whole: beside it, then swapped in
    import json
    import sys

    import torch

    from workbench.world.build import rebuild_truth
    from workbench.world.truth import TruthConfig

    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = TruthConfig() if args.n_sentences is None else TruthConfig(n_sentences=args.n_sentences)
    summary = rebuild_truth(args.world, cfg=cfg)
    print(json.dumps(summary, indent=1), file=sys.stdout)  # noqa: T201 - the command's output
    return 0

"""Family ARI of FeatureFamilies on the demo world: tune on a tuning set, score a held-out set.

Run (JSON to --out; 5 min 50 s on 2 cores with the tiny world built, which it builds first if missing)::

    python -m workbench.bench.families_world --tiny-world /tmp/tiny --out families_world.json

Protocol (:mod:`workbench.families_eval`): the estimator gets decoder rows plus an unlabelled
activation sample (3,000 fresh generator sentences) with its token ids and the model's unembedding
(token-class evidence); hyper-parameters are chosen on the grid (co-activation first, then token
classes on its best point, each scored over four word orders) by the mean family ARI over the
tuning set (the tiny world's PLT and CLT, built with ``workbench world build --tiny --seed 0`` if
missing, and the shipped world's PLT); the chosen
point is then scored on the shipped world's CLT, which tuning never saw, with the activation
sample (co-activation and token classes: the ``"coactivation"`` entries) and decoder-only, next to
a random baseline; ``token_order_spread`` gives every set's ARI over eight word orders (``random_state``).
"""

import json
import logging
import sys
from pathlib import Path
from typing import Any

from tracer.errors import WorkbenchError
from tracer.io import atomic_write_json
from workbench.cli_parser import script_parser

logger = logging.getLogger(__name__)


def run(world: Path, tiny_world: Path, *, n_sentences: int = 3000,
        params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole protocol (``params``: skip tuning and score these); returns the JSON-ready report."""
    import torch

    from workbench.families_eval import order_spread, score, task_profile_reference, tune, world_sample
    from workbench.world.truth import load_truth

    torch.set_num_threads(1)
    if not (tiny_world / "feature_truth_plt.jsonl").is_file():
        from workbench.world.build import build_world

        build_world(tiny_world, seed=0, tiny=True)
    sets = {}
    for tag, wdir, name in (("tiny_plt", tiny_world, "plt"), ("tiny_clt", tiny_world, "clt"),
                            ("world_plt", world, "plt"), ("world_clt", world, "clt")):
        truth = load_truth(wdir / f"feature_truth_{name}.jsonl")
        sets[tag] = (world_sample(wdir, name, n_sentences=n_sentences), truth)
    tuning = {k: v for k, v in sets.items() if k != "world_clt"}
    best, grid = (params, []) if params is not None else tune(tuning)
    report: dict[str, Any] = {"protocol": __doc__, "n_sentences": n_sentences, "chosen": best,
                              "tuning_grid": grid, "scores": {}}
    for tag, (sample, truth) in sets.items():
        report["scores"][tag] = {"held_out": tag == "world_clt",
                                 "coactivation": score(sample, truth, best),
                                 "decoder_only": score(sample, truth, best, use_activations=False),
                                 "token_order_spread": order_spread(sample, truth, best)
                                 if best.get("token_families", True) else None,
                                 "task_profile_reference": task_profile_reference(sample, truth)}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("python -m workbench.bench.families_world", __doc__ or "", raw=True)
    parser.add_argument("--world", type=Path, default=None, help="the world to score (default: the shipped one)")
    parser.add_argument("--tiny-world", type=Path, required=True, help="tiny world folder (built if missing)")
    parser.add_argument("--n-sentences", type=int, default=3000)
    parser.add_argument("--params", default=None, help="JSON parameters to score without tuning")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from workbench.cli_safety import check_out, need_input
    from workbench.paths import world_dir

    world = args.world or world_dir()
    need_input(world / "manifest.json", "--world manifest.json")
    check_out(args.out, inputs=[world, args.tiny_world])  # before the tiny world is built
    if args.n_sentences < 1:
        raise WorkbenchError(f"--n-sentences must be >= 1; got {args.n_sentences}.")
    try:
        params = None if args.params is None else json.loads(args.params)
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"--params must be a JSON object of FeatureFamilies parameters; got {args.params!r} "
                             f"({err.msg}).") from None
    if params is not None and not isinstance(params, dict):
        raise WorkbenchError(f"--params must be a JSON object; got {args.params!r}.")
    report = run(world, args.tiny_world, n_sentences=args.n_sentences, params=params)
    atomic_write_json(args.out, report)
    for tag, s in report["scores"].items():
        spread = s["token_order_spread"]
        orders = "no token classes" if spread is None else f"over {len(spread['seeds'])} word orders " + (
            "the same" if spread["min"] == spread["max"] else f"{spread['min']:.3f}-{spread['max']:.3f}")
        logger.info("%s held_out=%s ARI family %.3f (%s; decoder only %.3f, random %.3f, task-profile reference "
                    "%.3f)", tag, s["held_out"], s["coactivation"]["ari_family"]["mean"], orders,
                    s["decoder_only"]["ari_family"]["mean"], s["coactivation"]["random_ari_family"],
                    s["task_profile_reference"]["mean"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.bench.families_world"))

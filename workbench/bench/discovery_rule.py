"""How discovery's ranking rule was chosen: planted families only, no world labels.

For each seed, one planted layer (:mod:`workbench.bench.planted_families`: rings -- clean, with a
k = 2 harmonic, with heavy weak background firing -- against categorical families of 3 / 4 / 5 /
10 values, arcs of 180 / 270 / 300 degrees, mixtures of lines, blobs and lines) goes through
:class:`~analyses.manifolds.discovery.ManifoldDiscovery` at each ``strong_fraction``; four
candidate scores are compared:

* ``raw``: Engels' original mean (1 - M)·S over the raw reconstruction cloud's PC pairs;
* ``engels_dir``: the same on the strong-row direction cloud;
* ``loop``: the loop quality of the direction cloud's best pair;
* ``loop_irr``: loop quality x min(1, (1 - M)·S of that pair / 0.96) (the ranking without ripser);
* ``h1``: persistent H1 of the direction cloud (longest bar / bounding-box diagonal; ripser);
* ``ring``: ``loop_irr`` x min(1, H1 / 0.46) (what discovery ranks by where ripser is installed).

A rule succeeds on a seed when every ring scores above every other family; the margin is the
worst ring's score minus the best other family's. ``python -m workbench.bench.discovery_rule
--out rule.json`` (a few minutes; ``--fast`` uses 600 annealing steps instead of the calibrated 3000).
"""

import time
from pathlib import Path
from typing import Any

import numpy as np

from analyses.manifolds.configs import IrreducibilityConfig
from analyses.manifolds.discovery import DiscoveryResult, ManifoldDiscovery
from tracer.io import atomic_write_json
from workbench.bench.planted_families import FamilySpec, PlantedLayer, default_specs, planted_families
from workbench.cli_parser import script_parser

RULES = {"raw": "raw_score", "engels_dir": "engels_score", "loop": "loop_quality", "loop_irr": "loop_score",
         "h1": "h1_persistence", "ring": "score"}


def tuning_specs() -> dict[str, FamilySpec]:
    """default_specs() plus the hardest non-rings: a triangle of categories, a 300-degree arc, a
    4-value categorical family with background firing."""
    specs = default_specs()
    specs["categorical3"] = FamilySpec(kind="categorical", n_features=6, values=3)
    specs["arc300"] = FamilySpec(kind="arc", n_features=12, values=12, span=300 / 180 * np.pi)
    specs["categorical4_bg"] = FamilySpec(kind="categorical", n_features=8, values=4, background=0.5)
    return specs


def margins(result: DiscoveryResult, layer: PlantedLayer) -> dict[str, dict[str, Any]]:
    """Per rule: worst ring minus best other family, and that family."""
    out = {}
    for rule, attr in RULES.items():
        if attr == "h1_persistence" and not result.persistence:
            continue
        score = {f.name: float(getattr(f, attr)) for f in result.families}
        rings = [score[n] for n in layer.cyclic]
        others = {n: s for n, s in score.items() if n not in layer.cyclic}
        top = max(others, key=lambda n: others[n])
        out[rule] = {"margin": min(rings) - others[top], "best_other": top, "scores": score}
    return out


def run(seeds: list[int], fractions: list[float], irreducibility: IrreducibilityConfig,
        metric_points: int) -> dict[str, Any]:
    per: dict[str, dict[str, list[Any]]] = {}
    for seed in seeds:
        layer = planted_families(tuning_specs(), seed=seed)
        for frac in fractions:
            est = ManifoldDiscovery(strong_fraction=frac, raw_cloud_metrics=True, irreducibility=irreducibility,
                                    metric_points=metric_points).fit(layer.A, layer.W, layer.families)
            for rule, m in margins(est.result_, layer).items():
                per.setdefault(f"{frac}", {}).setdefault(rule, []).append({"seed": seed, **m})
    summary = {frac: {rule: {"seeds_ok": sum(r["margin"] > 0 for r in rows), "n_seeds": len(rows),
                             "min_margin": min(r["margin"] for r in rows)}
                      for rule, rows in rules.items()} for frac, rules in per.items()}
    return {"summary": summary, "runs": per}


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = script_parser("python -m workbench.bench.discovery_rule", (__doc__ or "").split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON report")
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6", help="comma-separated seeds")
    ap.add_argument("--fractions", default="0,0.25,0.5", help="strong_fraction values")
    ap.add_argument("--metric-points", type=int, default=1000, help="points for M and S")
    ap.add_argument("--fast", action="store_true", help="600 annealing steps for M (default: calibrated 3000)")
    args = ap.parse_args(argv)
    from workbench.cli_safety import check_out

    check_out(args.out)  # before any work
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    irr = IrreducibilityConfig(n_steps=600) if args.fast else IrreducibilityConfig()
    report = run([int(s) for s in args.seeds.split(",")], [float(f) for f in args.fractions.split(",")], irr,
                 args.metric_points)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["settings"] = {"fast": args.fast, "metric_points": args.metric_points}
    atomic_write_json(args.out, report)
    for frac, rules in report["summary"].items():
        print(frac, {r: (v["seeds_ok"], round(v["min_margin"], 3)) for r, v in rules.items()})  # noqa: T201
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.bench.discovery_rule"))

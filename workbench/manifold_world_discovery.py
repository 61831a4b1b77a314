"""Unsupervised manifold discovery on a demo world, scored against its truth (issue 11, points 2 and 7).

Activations of the world's PLT features over a fresh sample of its corpus (every position),
collected through :mod:`tracer.activations`, then
:class:`~analyses.manifolds.discovery.ManifoldDiscovery` per layer on the candidate families.
Families: TRUTH families (``--families truth``, the default: the features the world's per-feature truth,
``feature_truth_plt.jsonl``, puts in a family, split by side -- ``day/output``, ``city/input``, ...), LABEL
families (``--families labels``: the same from the heuristic labels, which the truth corrects; the default
before 2026-12-04) or a FeatureFamilies JSON (``--families FILE``, families named by their label). Families of
``--min-size`` or more members are scored. Discovery never sees the truth or the labels; they are used only to
name the families and to score the ranking: every cyclic family (day, month, hue) must rank above every
non-cyclic one. ``python -m workbench.manifold_world_discovery --out DIR`` writes
``world_discovery.json`` (with a per-family ``scorecard`` for :mod:`workbench.manifold_world`).
"""

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses.manifolds.discovery import ManifoldDiscovery
from tracer.errors import WorkbenchError
from tracer.io import atomic_write_json
from workbench.cli_parser import script_parser
from workbench.manifold_discover_run import (
    corpus_store,
    discover_layer,
    families_by_side,
    families_from_json,
    families_from_labels,
    layer_inputs,
)

logger = logging.getLogger(__name__)

CYCLIC = ("day", "month", "hue")


def family_kind(name: str) -> str:
    """'day/output' or 'day (7)#3' -> 'day'."""
    return name.split("/")[0].split(" ")[0].split("#")[0]


def score_ranking(ranking: list[str], scores: dict[str, float]) -> dict[str, Any]:
    """Do all cyclic families rank above all non-cyclic ones? And the best of each cyclic family?"""
    scored = [n for n in ranking if np.isfinite(scores[n])]
    cyclic = [n for n in scored if family_kind(n) in CYCLIC]
    other = [n for n in scored if family_kind(n) not in CYCLIC]
    best_other = min((scored.index(n) for n in other), default=len(scored))
    best_of = {fam: min((scored.index(n) for n in cyclic if family_kind(n) == fam), default=None) for fam in CYCLIC}
    return {"cyclic_above_all_other": all(scored.index(n) < best_other for n in cyclic),
            "n_cyclic": len(cyclic), "n_other": len(other),
            "cyclic_below_an_other": [n for n in cyclic if scored.index(n) > best_other],
            "best_other": other[0] if other else None,
            "best_of_each_above_all_other": {f: (i is not None and i < best_other) for f, i in best_of.items()}}


def world_corpus(world: Path, manifest: dict[str, Any], n_sentences: int) -> list[str]:
    """A seeded sample of the world's training language (its own stream: not the training sentences)."""
    from workbench.world import generator
    from workbench.world.evaluate import manifest_spec

    spec = manifest_spec(manifest)
    return [" ".join(s.words) for s in generator.sample_corpus(spec, n_sentences, seed=0, stream="manifolds")]


def scorecard(report: dict[str, Any]) -> dict[str, Any]:
    """Per cyclic family and layer: its families' ranks; whether all of them, and whether its best one,
    rank above every non-cyclic family."""
    card: dict[str, Any] = {fam: {} for fam in CYCLIC}
    for layer, rep in report["feature_layers"].items():
        ranking = rep["ranking"]
        first_other = min((i + 1 for i, n in enumerate(ranking) if family_kind(n) not in CYCLIC),
                          default=len(ranking) + 1)  # 1-based rank of the best non-cyclic family
        for fam in CYCLIC:
            mine = {n: i + 1 for i, n in enumerate(ranking) if family_kind(n) == fam}
            if mine:
                card[fam][layer] = {"families": mine, "n_ranked": len(ranking), "best_other": rep["best_other"],
                                    "all_above_every_other": max(mine.values()) < first_other,
                                    "best_above_every_other": min(mine.values()) < first_other}
    return card


def families_from_truth(path: Path, min_size: int) -> dict[int, dict[str, list[int]]]:
    """TRUTH families: per layer, the features a per-feature truth file puts in a family, named
    ``family/side`` (input and output sides), of ``min_size`` or more features."""
    from workbench.world.truth import load_truth

    return families_by_side(((t.layer, t.feature, t.family, t.side) for t in load_truth(path).values()), min_size)


def world_families(world: Path, families: str, min_size: int, tcs: Any) -> dict[int, dict[str, list[int]]]:
    """The scored families of ``--families``: 'truth', 'labels' or a FeatureFamilies JSON file."""
    from workbench.cli_safety import need_input

    if families == "truth":
        fams = families_from_truth(need_input(world / "feature_truth_plt.jsonl", "--world feature_truth_plt.jsonl"),
                                   min_size)
        bad = next(((layer, f) for layer, by in fams.items() for fs in by.values() for f in fs
                    if not (0 <= layer < tcs.n_layers and 0 <= f < tcs.d_transcoder)), None)
        if bad is not None:
            raise WorkbenchError(f"--world feature_truth_plt.jsonl must describe its PLT transcoders; got feature "
                                 f"{bad[1]} of layer {bad[0]}. Rebuild the truth with `workbench world truth`.")
        return fams
    if families == "labels":
        return families_from_labels(world / "labels_plt.jsonl", min_size, tcs)
    return families_from_json(Path(families), tcs.n_layers, min_size, tcs.d_transcoder)


def run_discovery(world: Path, out: Path, *, families: str = "truth", n_sentences: int = 2000, min_size: int = 5,
                  layers: list[int] | None = None, raw_cloud_metrics: bool = False) -> dict[str, Any]:
    """Discovery on every layer's families; writes and returns world_discovery.json's content."""
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    world = world.resolve()
    manifest = json.loads((world / "manifest.json").read_text())
    loaded = load_model(world / "model", backend="auto")
    tcs = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    fams = world_families(world, families, min_size, tcs)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    layers = sorted(fams) if layers is None else layers
    t0 = time.perf_counter()
    store = corpus_store(loaded, tcs, world_corpus(world, manifest, n_sentences), out / "activations", layers)
    report: dict[str, Any] = {"world": str(world), "families_from": families, "n_sentences": n_sentences,
                              "n_rows": store.n_rows, "seconds_activations": round(time.perf_counter() - t0, 1),
                              "feature_layers": {}}
    for layer in layers:
        est = ManifoldDiscovery(raw_cloud_metrics=raw_cloud_metrics)
        rep, _ = discover_layer(*layer_inputs(store, tcs, layer), layer, fams.get(layer, {}), est)
        rep.update(score_ranking(rep["ranking"], {n: f["score"] for n, f in rep["families"].items()}))
        report["feature_layers"][str(layer)] = rep
        logger.info("discovery layer %d (%.1f s): cyclic above all others: %s", layer, rep["seconds"],
                    rep["cyclic_above_all_other"])
    report["scorecard"] = scorecard(report)
    atomic_write_json(out / "world_discovery.json", report)
    return report


def format_ranking(report: dict[str, Any]) -> str:
    lines = []
    for layer, rep in report["feature_layers"].items():
        lines.append(f"layer {layer} ({rep['seconds']} s): cyclic above all others: {rep['cyclic_above_all_other']}")
        for name in rep["ranking"]:
            f = rep["families"][name]
            lines.append(f"  {name:18s} n={f['n_members']:3d} pts={f['n_points']:5d} strong={f['n_strong']:5d} "
                         f"ring={f['score']:.3f} loop={f['loop_quality']:.2f} irr={f['loop_irreducibility']:.2f} "
                         f"engels_dir={f['engels_score']:.2f} raw={f['raw_score']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from workbench.paths import world_dir

    ap = script_parser("python -m workbench.manifold_world_discovery", (__doc__ or "").split("\n")[0])
    ap.add_argument("--world", type=Path, default=None, help="world folder (default: the shipped data/world)")
    ap.add_argument("--out", type=Path, required=True, help="folder for world_discovery.json")
    ap.add_argument("--families", default="truth",
                    help="'truth' (the world's per-feature truth, the default), 'labels' (the heuristic labels) or a "
                         "FeatureFamilies JSON")
    ap.add_argument("--n-sentences", type=int, default=2000, help="corpus sentences (seeded sample)")
    ap.add_argument("--min-size", type=int, default=5, help="smallest family scored")
    ap.add_argument("--feature-layers", default=None, help="comma-separated PLT layers (default: all)")
    ap.add_argument("--raw-cloud-metrics", action="store_true", help="also compute Engels' raw-cloud score")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from workbench.cli_safety import check_out

    world = args.world or world_dir()
    check_out(args.out, inputs=[world, args.families], folder=True)  # never into the world it reads
    report = run_discovery(world, args.out, families=args.families, n_sentences=args.n_sentences,
                           min_size=args.min_size, raw_cloud_metrics=args.raw_cloud_metrics,
                           layers=(None if args.feature_layers is None
                                   else [int(x) for x in args.feature_layers.split(",")]))
    print(format_ranking(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.manifold_world_discovery"))

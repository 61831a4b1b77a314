"""Plots, the per-family scorecard against issue 11's targets, and a printed table for
:mod:`workbench.manifold_world`."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from analyses.manifolds.display import (
    DecoderMapDisplay,
    FrequencyR2Display,
    ManifoldCircleDisplay,
    TuningCurvesDisplay,
)
from analyses.results import save_result

TARGETS = {"r2": 0.9, "angle_rmse": 0.35, "fitted_success": 0.9, "random_success": 0.1, "steering_success": 0.8,
           "value_coverage": 1.0}
"""Issue 11 point 7 (never loosened)."""


def plots(out: Path, family: str, data: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """Circle and frequency plots of each position's headline fit, tuning curves per layer."""
    fam, pts, splits = data["fam"], data["pts"], data["splits"]
    written = []
    for position, key in report["headline"].items():
        if key is None:
            continue
        fit = splits[f"residual/{key}"]["model_heldout"].fits[0]
        X = pts.residual(int(fit.layer), fam.positions[position])
        stem = out / f"{family}_{position}_L{fit.layer}"
        written.append(str(ManifoldCircleDisplay.from_fit(fit, X, fam.values(position)).savefig(f"{stem}_circle.png")))
        written.append(str(FrequencyR2Display.from_fit(fit).savefig(f"{stem}_frequency.png")))
        save_result(fit, out / f"{family}_{position}_fit.json")
    for name, (tiling, fit) in data["tilings"].items():
        disp = TuningCurvesDisplay.from_tiling(tiling, fit, title=f"{family}: {name} features over the "
                                               f"L{fit.layer} {fit.position} circle")
        written.append(str(disp.savefig(out / f"{family}_{name.replace('/', '_')}_tuning.png")))
    return written


def decoder_map(out: Path, world: Path, W: np.ndarray, layer: int, tilings: dict[str, dict[str, Any]],
                method: str) -> list[str]:
    """The layer's decoder directions, coloured by label family and by preferred angle (output features)."""
    families: dict[str, list[int]] = {}
    for line in (world / "labels_plt.jsonl").read_text().split("\n"):
        if line.strip() and (rec := json.loads(line))["layer"] == layer and rec.get("family"):
            families.setdefault(rec["family"], []).append(int(rec["feature"]))
    preferred: dict[int, float] = {}
    for fam_tilings in tilings.values():
        if (found := fam_tilings.get(f"output/plt{layer}")) is not None:
            tiling = found[0]
            preferred.update({f: float(a) for f, a, ok in zip(tiling.features, tiling.preferred, tiling.live) if ok})
    disp = DecoderMapDisplay.from_decoders(W, families, preferred, method=method,
                                           title=f"PLT layer {layer} decoders ({method})")
    return [str(disp.plot(color_by=c).savefig(out / f"decoder_map_L{layer}_{c}.png")) for c in ("family", "value")]


def _figure(value: float, ci: list[float] | None, target: float, higher: bool) -> dict[str, Any]:
    met = value >= target if higher else value <= target
    return {"value": value, "ci": ci, "target": (">= " if higher else "<= ") + str(target), "met": bool(met)}


def _fit_figures(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"frequency": row["frequency"], "order_matches": row["order_matches"],
                           "k1_and_order": bool(row["frequency"] == 1 and row["order_matches"])}
    for split in ("fit_heldout", "model_heldout"):
        s = row[split]
        out[split] = {"n": s["n"], "r2": _figure(s["r2"], s["r2_ci"], TARGETS["r2"], True),
                      "angle_rmse": _figure(s["angle_rmse"], s["angle_rmse_ci"], TARGETS["angle_rmse"], False),
                      "folds_k1_and_order": float(np.mean([f == 1 and o for f, o in
                                                           zip(s["frequencies"], s["order_matches"])]))}
    return out


def _causal_figures(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"layer": row["layer"]}
    for split in ("fit_heldout", "model_heldout"):
        s = row[split]
        out[split] = {"n_prompts": s["n_prompts"], "n_substitutions": s["n_substitutions"],
                      "n_steering": s["n_steering"], "mediates": s["mediates"],
                      "full_success": s["full_success"], "full_success_ci": s["full_success_ci"],
                      **{k: _figure(s[k], s[f"{k}_ci"], TARGETS[k], k != "random_success")
                         for k in ("fitted_success", "random_success", "steering_success")}}
    return out


def scorecard(rep: dict[str, Any], discovery: dict[str, Any] | None = None) -> dict[str, Any]:
    """Issue 11 point 7 for one family: every figure with its interval, target and whether it is met."""
    card: dict[str, Any] = {"residual": {}, "reconstruction": {}, "causal": {}, "coverage": {}}
    for kind, head in (("residual", rep["headline"]), ("reconstruction", rep["headline_reconstruction"])):
        for position, key in head.items():
            if key is not None:
                card[kind][position] = {"key": key, **_fit_figures(rep[kind][key])}
    for position, row in rep.get("causal", {}).get("headline", {}).items():
        card["causal"][position] = _causal_figures(row)
    for key, t in rep["tiling"].items():
        if t["value_coverage"] is not None:
            card["coverage"][key] = {**_figure(t["value_coverage"], None, TARGETS["value_coverage"], True),
                                     "n_features": t["n_features"], "peak_coverage": t["peak_coverage"],
                                     "fit_layer": t["fit_layer"]}
    if discovery is not None:
        card["discovery"] = discovery
    return card


def format_table(report: dict[str, Any]) -> str:
    """A compact table of the fits (headline rows marked *) and the real-model checks."""
    lines = ["family kind  key          k ord  m  R2fit  fit-held-out R2 [95%] RMSE      model-held-out R2 [95%] RMSE"]
    for fam, rep in report.items():
        if not isinstance(rep, dict) or "residual" not in rep:
            continue
        heads = set(rep["headline"].values()) | set(rep["headline_reconstruction"].values())
        for kind in ("residual", "reconstruction"):
            for key, row in rep[kind].items():
                if "error" in row:
                    lines.append(f"{fam:6s} {kind[:5]:5s} {key:12s} -- {row['error'][:60]}")
                    continue
                a, b = row["fit_heldout"], row["model_heldout"]
                lines.append(f"{fam:6s} {kind[:5]:5s} {key:11s}{'*' if key in heads else ' '} {row['frequency']:2d} "
                      f"{'y' if row['order_matches'] else 'n'} {row['n_components']:2d}  {row['r2']:.3f}  "
                      f"{a['r2']:.3f} [{a['r2_ci'][0]:.2f},{a['r2_ci'][1]:.2f}] {a['angle_rmse']:.3f}     "
                      f"{b['r2']:.3f} [{b['r2_ci'][0]:.2f},{b['r2_ci'][1]:.2f}] {b['angle_rmse']:.3f}")
        for section in ("headline", "sweep"):
            for key, row in rep.get("causal", {}).get(section, {}).items():
                for split in ("fit_heldout", "model_heldout") if section == "headline" else (None,):
                    s = row[split] if split else row
                    lines.append(f"{fam:6s} causal {section} {key} {split or 'fit_heldout'} n={s['n_prompts']}: "
                          f"fitted {s['fitted_success']:.3f} random {s['random_success']:.3f} "
                          f"full {s['full_success']:.3f} steer {s['steering_success']:.3f}")
    return "\n".join(lines)

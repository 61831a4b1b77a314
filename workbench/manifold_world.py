"""Manifold fits on the demo world, scored against its truth (issue 11, phase 1 measurement).

For each cyclic family (day, month, hue) and its arithmetic prompts ("Two days after Friday is"):

* residual-stream vectors at every residual layer L = 0..n_layers (0 = embedding output, k = output
  of block k-1, no final norm) at the answer position (the last token) and at the family word's
  position (the start value);
* the family's PLT reconstruction ``Σ a_f W_dec[f]`` over the family's features of layer l (those
  whose world label names the family), which enters the residual at layer l + 1.

A :class:`~analyses.manifolds.fit.ManifoldFit` circle is fitted on the train split (values: the
answer at the last position, the start value at the word) and scored on the held-out split:
per-point R² in the subspace, class-mean R², angle RMSE and value accuracy, with 95% bootstrap
intervals over held-out prompts. Tiling: the family's layer-l features over the angle of the
layer l + 1 residual fit, all prompts. ``python -m workbench.manifold_world --out DIR`` writes
``world_manifolds.json`` and plots.
"""

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses.manifolds.display import FrequencyR2Display, ManifoldCircleDisplay, TuningCurvesDisplay
from analyses.manifolds.fit import ManifoldFit, ManifoldFitResult
from analyses.manifolds.tiling import compute_tiling
from analyses.results import save_result
from tracer.models import LoadedModel, load_model, tokenize
from tracer.models.forward import run_with_cache
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import load_transcoders

logger = logging.getLogger(__name__)

FAMILIES = ("day", "month", "hue")
POSITIONS = ("last", "value")


@dataclass(frozen=True, kw_only=True)
class FamilyPoints:
    """Everything measured on one family's arithmetic prompts."""

    family: str
    names: list[str]
    answer: np.ndarray
    """(n,) answer value index"""
    start: np.ndarray
    """(n,) start value index"""
    heldout: np.ndarray
    """(n,) bool"""
    resid: dict[str, np.ndarray]
    """position -> (n, n_layers + 1, d_model)"""
    recon: dict[str, np.ndarray]
    """position -> (n, n_layers, d_model) family reconstruction of PLT layer l"""
    acts: dict[str, np.ndarray]
    """position -> (n, n_layers, d_transcoder) PLT activations"""
    features: list[list[int]]
    """per PLT layer, the family's features"""


def family_features(labels_path: Path, family: str, n_layers: int,
                    side: str | None = None) -> list[list[int]]:
    """Per layer, the features whose world label names ``family`` (on ``side``, or any side)."""
    out: list[list[int]] = [[] for _ in range(n_layers)]
    for line in labels_path.read_text().split("\n"):
        if line.strip():
            rec = json.loads(line)
            if rec.get("family") == family and (side is None or rec.get("side") == side):
                out[int(rec["layer"])].append(int(rec["feature"]))
    return [sorted(f) for f in out]


def residual_layers(cache: Any) -> torch.Tensor:
    """(n_layers + 1, n_pos, d_model): residual layer 0 (embedding output) .. n_layers (before the final norm)."""
    last = cache.resid_mid[-1] + cache.block_mlp_out[-1]  # (n_pos, d_model) output of the last block
    return torch.cat([cache.resid_pre, last[None]])


def collect(loaded: LoadedModel, tcs: Transcoders, prompts: list[dict[str, Any]], family: str, names: list[str],
            features: list[list[int]]) -> FamilyPoints:
    """Run every prompt once and keep the vectors at the answer and family-word positions."""
    resid: dict[str, list[np.ndarray]] = {p: [] for p in POSITIONS}
    recon: dict[str, list[np.ndarray]] = {p: [] for p in POSITIONS}
    acts: dict[str, list[np.ndarray]] = {p: [] for p in POSITIONS}
    W = [torch.from_numpy(w).float() for w in decoder_matrices(tcs)]  # per layer (d_tc, d_model)
    for rec in prompts:
        tokens = tokenize(loaded, rec["prompt"])
        cache = run_with_cache(loaded, tokens)  # TODO(lead): replace with tracer.activations
        words = rec["prompt"].split()
        pos = {"last": len(tokens) - 1, "value": 1 + words.index(names[int(rec["start"])])}
        R = residual_layers(cache)  # (L+1, n_pos, d)
        for key, p in pos.items():
            resid[key].append(R[:, p].numpy())
            a = torch.stack([tcs.layers[i].encode(cache.mlp_input[i, p]) for i in range(tcs.n_layers)])  # (L, d_tc)
            acts[key].append(a.numpy())
            recon[key].append(torch.stack([a[i, features[i]] @ W[i][features[i]]
                                           for i in range(tcs.n_layers)]).numpy())  # (L, d)
    return FamilyPoints(
        family=family, names=names, answer=np.array([names.index(r["answer"]) for r in prompts]),
        start=np.array([int(r["start"]) for r in prompts]),
        heldout=np.array([r["split"] == "heldout" for r in prompts]),
        resid={k: np.stack(v) for k, v in resid.items()}, recon={k: np.stack(v) for k, v in recon.items()},
        acts={k: np.stack(v) for k, v in acts.items()}, features=features)


def bootstrap_ci(values: np.ndarray) -> list[float]:
    """95% percentile interval of per-resample statistics ``values`` (n_boot,)."""
    return [float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))]


def resamples(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n) bootstrap index sets over n held-out points (seeded)."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def heldout_scores(fit: ManifoldFitResult, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Per-point R², class-mean R², angle RMSE and value accuracy on held-out points, with 95% bootstrap
    intervals (1000 resamples of the held-out prompts)."""
    u_hat, u = fit.transform(X), fit.value_coordinate(y)
    err2 = np.angle(np.exp(1j * (u_hat - u))) ** 2  # (n,)
    correct = (fit.coordinate_to_value(u_hat) == y).astype(float)
    Z = fit.project(X)  # (n, m)
    res2 = ((Z - fit.project(fit.curve(u))) ** 2).sum(1)  # (n,) squared distance to the curve at the truth
    idx = resamples(len(y))  # (B, n)
    Zb = Z[idx]  # (B, n, m)
    ss_tot = ((Zb - Zb.mean(1, keepdims=True)) ** 2).sum((1, 2))  # (B,)
    r2_b = 1 - res2[idx].sum(1) / np.where(ss_tot > 0, ss_tot, np.nan)
    return {"n": len(y), "r2": fit.score(X, y), "r2_ci": bootstrap_ci(r2_b),
            "class_mean_r2": fit.class_mean_r2(X, y),
            "angle_rmse": float(np.sqrt(err2.mean())), "angle_rmse_ci": bootstrap_ci(np.sqrt(err2[idx].mean(1))),
            "accuracy": float(correct.mean()), "accuracy_ci": bootstrap_ci(correct[idx].mean(1))}


def fit_one(pts: FamilyPoints, X: np.ndarray, values: np.ndarray, *, layer: int, position: str,
            source: str) -> tuple[ManifoldFitResult, dict[str, Any]]:
    """Fit on the train split, score on the held-out split."""
    tr, te = ~pts.heldout, pts.heldout
    fit = ManifoldFit(period=len(pts.names)).fit(X[tr], values[tr], value_names=pts.names, layer=layer,
                                                 position=position, source=source).result_
    row = {k: v for k, v in fit.summary().items() if k not in ("angles", "explained_variance_ratio")}
    row["top2_variance"] = float(fit.explained_variance_ratio[:2].sum())
    row["heldout"] = heldout_scores(fit, X[te], values[te])
    return fit, row


def fit_family(pts: FamilyPoints) -> tuple[dict[str, Any], dict[str, ManifoldFitResult]]:
    """Residual fits at every layer and position, reconstruction fits at every PLT layer."""
    rows: dict[str, Any] = {"residual": {}, "reconstruction": {}}
    fits: dict[str, ManifoldFitResult] = {}

    def attempt(kind: str, key: str, X: np.ndarray, values: np.ndarray, **meta: Any) -> None:
        try:
            fits[f"{kind}/{key}"], rows[kind][key] = fit_one(pts, X, values, **meta)
        except ValueError as err:  # nothing varies with the value here (a constant token, silent features)
            rows[kind][key] = {"error": str(err)}

    for position in POSITIONS:
        values = pts.answer if position == "last" else pts.start
        for L in range(pts.resid[position].shape[1]):
            attempt("residual", f"{position}/L{L}", pts.resid[position][:, L], values, layer=L, position=position,
                    source="residual")
        for layer in range(pts.recon[position].shape[1]):
            if len(pts.features[layer]) >= 3:
                attempt("reconstruction", f"{position}/plt{layer}", pts.recon[position][:, layer], values,
                        layer=layer + 1, position=position,
                        source=f"plt{layer} reconstruction ({len(pts.features[layer])} features)")
    return rows, fits


def tiling_rows(pts: FamilyPoints, fits: dict[str, ManifoldFitResult], W_dec: list[np.ndarray],
                sides: dict[str, list[list[int]]]) -> dict[str, Any]:
    """Tuning of the family's features over a residual fit's angle, all prompts.

    Output-side features of PLT layer l (what the block writes) at the answer position, over the
    angle of the residual fit at layer l + 1; input-side features (what the block reads) at the
    family word, over the angle of the residual fit at layer l (layer l + 1 where l has none)."""
    out: dict[str, Any] = {}
    for side, position, values in (("output", "last", pts.answer), ("input", "value", pts.start)):
        for layer, feats in enumerate(sides[side]):
            shift = 1 if side == "output" else 0
            key = next((f"residual/{position}/L{layer + s}" for s in (shift, 1)
                        if f"residual/{position}/L{layer + s}" in fits), None)
            if len(feats) < 3 or key is None:
                continue
            fit = fits[key]
            u = fit.transform(pts.resid[position][:, fit.layer])  # (n,) angle of every prompt
            A = pts.acts[position][:, layer][:, feats]  # (n, n_family)
            out[f"{side}/plt{layer}"] = (compute_tiling(u, A, W_dec[layer][feats], features=feats, values=values,
                                                        period=len(pts.names)), fit)
    return out


def best_key(rows: dict[str, Any], prefix: str) -> str:
    """The row under ``prefix`` with the highest held-out per-point R²."""
    keys = [k for k in rows if k.startswith(prefix) and "heldout" in rows[k]]
    return max(keys, key=lambda k: rows[k]["heldout"]["r2"])


def plots(out: Path, family: str, pts: FamilyPoints, rows: dict[str, Any], fits: dict[str, ManifoldFitResult],
          tilings: dict[str, Any]) -> list[str]:
    """Circle and frequency plots of the best residual fit per position, tuning curves per layer."""
    written = []
    for position in POSITIONS:
        key = best_key(rows["residual"], position + "/")
        fit = fits[f"residual/{key}"]
        L = int(key.split("/L")[1])
        values = pts.answer if position == "last" else pts.start
        X = pts.resid[position][:, L]
        written.append(str(ManifoldCircleDisplay.from_fit(fit, X, values).savefig(
            out / f"{family}_{position}_L{L}_circle.png")))
        written.append(str(FrequencyR2Display.from_fit(fit).savefig(out / f"{family}_{position}_L{L}_frequency.png")))
    for name, (tiling, fit) in tilings.items():
        disp = TuningCurvesDisplay.from_tiling(tiling, fit, title=f"{family}: {name} features over the "
                                               f"L{fit.layer} {fit.position} circle")
        written.append(str(disp.savefig(out / f"{family}_{name.replace('/', '_')}_tuning.png")))
    return written


def decoder_matrices(tcs: Transcoders) -> list[np.ndarray]:
    """Per PLT layer, W_dec (d_transcoder, d_model) as float64 numpy."""
    return [tcs.layers[i].decoder_rows(torch.arange(tcs.layers[i].d_transcoder), torch.float32).double().numpy()
            for i in range(tcs.n_layers)]


def run_family(loaded: LoadedModel, tcs: Transcoders, world: Path, manifest: dict[str, Any], family: str,
               out: Path | None, W_dec: list[np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = list(manifest["families"][family]["values"])
    prompts = manifest["prompt_sets"][f"{family}_arith"]
    labels = world / "labels_plt.jsonl"
    features = family_features(labels, family, tcs.n_layers)
    sides = {side: family_features(labels, family, tcs.n_layers, side) for side in ("input", "output")}
    t0 = time.perf_counter()
    pts = collect(loaded, tcs, prompts, family, names, features)
    t1 = time.perf_counter()
    rows, fits = fit_family(pts)
    tilings = tiling_rows(pts, fits, W_dec, sides)
    t2 = time.perf_counter()
    report = {"n_train": int((~pts.heldout).sum()), "n_heldout": int(pts.heldout.sum()),
              "n_features": [len(f) for f in features], **rows,
              "tiling": {k: {**t.summary(), "fit_layer": f.layer} for k, (t, f) in tilings.items()},
              "seconds": {"collect": round(t1 - t0, 2), "fit_and_tiling": round(t2 - t1, 2)}}
    if out is not None:
        report["plots"] = plots(out, family, pts, rows, fits, tilings)
        for position in POSITIONS:
            key = best_key(rows["residual"], position + "/")
            save_result(fits[f"residual/{key}"], out / f"{family}_{position}_fit.json")
    return report, tilings


def decoder_map(out: Path, world: Path, W: np.ndarray, layer: int, tilings: dict[str, dict[str, Any]],
                method: str) -> list[str]:
    """The layer's decoder directions, coloured by label family and by preferred angle (output features)."""
    from analyses.manifolds.display import DecoderMapDisplay

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


def main(argv: list[str] | None = None) -> int:
    from workbench.paths import world_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, default=None, help="world folder (default: the shipped data/world)")
    ap.add_argument("--out", type=Path, required=True, help="folder for world_manifolds.json and plots")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    ap.add_argument("--map-layer", type=int, default=1, help="PLT layer of the decoder map")
    ap.add_argument("--map-method", default="umap", choices=("umap", "pca"), help="decoder map embedding")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    world = args.world or world_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((world / "manifest.json").read_text())
    loaded = load_model(world / "model")
    tcs = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    W_dec = decoder_matrices(tcs)
    report: dict[str, Any] = {}
    tilings: dict[str, dict[str, Any]] = {}
    for fam in args.families.split(","):
        report[fam], tilings[fam] = run_family(loaded, tcs, world, manifest, fam, args.out, W_dec)
    t0 = time.perf_counter()
    report["decoder_map"] = {"plots": decoder_map(args.out, world, W_dec[args.map_layer], args.map_layer, tilings,
                                                  args.map_method), "seconds": round(time.perf_counter() - t0, 1)}
    (args.out / "world_manifolds.json").write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    print("family kind  key          k order  m  top2  R2fit R2k   heldout R2 [95%]      cm-R2  RMSE rad [95%]     acc")
    for fam, rep in report.items():
        if fam == "decoder_map":
            continue
        for kind in ("residual", "reconstruction"):
            for key, row in rep[kind].items():
                if "error" in row:
                    print(f"{fam:6s} {kind[:5]:5s} {key:12s} -- {row['error'][:60]}")
                    continue
                h = row["heldout"]
                print(f"{fam:6s} {kind[:5]:5s} {key:12s} {row['frequency']:2d} {str(row['order_matches']):5s} "
                      f"{row['n_components']:2d} {row['top2_variance']:.2f} {row['r2']:.3f} "
                      f"{row['r2_fundamental']:.3f}  "
                      f"{h['r2']:.3f} [{h['r2_ci'][0]:.2f},{h['r2_ci'][1]:.2f}]  {h['class_mean_r2']:.3f}  "
                      f"{h['angle_rmse']:.3f} [{h['angle_rmse_ci'][0]:.2f},{h['angle_rmse_ci'][1]:.2f}]  "
                      f"{h['accuracy']:.2f}")
        for key, t in rep["tiling"].items():
            print(f"{fam:6s} tiling {key}: {t}")


if __name__ == "__main__":
    raise SystemExit(main())

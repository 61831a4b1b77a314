"""Manifold fits on the demo world, scored against its truth (issue 11, point 7).

For each cyclic family (day, month, hue) and its arithmetic prompts ("Two days after Friday is"),
collected once through :mod:`tracer.activations` (:mod:`workbench.manifold_points`):

* residual-stream vectors at every residual layer L = 0..n_layers (0 = embedding output, k =
  output of block k-1, no final norm) at the answer position (``last``; the variable is the
  answer) and at the family word (``value``; the variable is the start value);
* the family's PLT reconstruction ``Σ a_f W_dec[f]`` over the features of layer l that the world's
  per-feature truth puts in the family (``--family-source labels``: whose label names it; output
  side at the answer, input side at the family word; layers with at least 5 such features); it
  enters the residual at layer l + 1.

Every source gets a :class:`~analyses.manifolds.fit.ManifoldFit` circle, scored two ways
(:mod:`workbench.manifold_scoring`): **fit-held-out** (5-fold cross-fitting over all prompts) and
**model-held-out** (fit on the model's training prompts, score the combinations it never saw).
The headline layer of a position is the one whose model-train fit has the largest between-class
share of variance (a fit-data criterion; no held-out figure picks it). There, class-mean
substitution (fitted / random / full) and steering along the curve run on the real model; a
sweep repeats them on a sample at every layer. Tiling: the family's layer-l features over the
angle of a residual fit, all prompts.

``python -m workbench.manifold_world --out DIR --run-discovery`` writes ``world_manifolds.json``
(every figure with 95% intervals, the discovery ranking per layer, and a ``scorecard`` per family
against the issue's targets) and plots; ``--discovery FILE`` merges an existing discovery run
(:mod:`workbench.manifold_world_discovery`) instead.
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

from analyses.manifolds.fit import ManifoldFitResult
from analyses.manifolds.tiling import TilingResult, compute_tiling
from tracer.activations import PromptRecord
from tracer.errors import WorkbenchError
from tracer.folders import folder_hint
from tracer.io import atomic_write_json, loads_json
from tracer.models import LoadedModel
from tracer.transcoders.base import Transcoders
from workbench.cli_parser import script_parser
from workbench.manifold_inputs import POSITIONS, FitInputs, default_answers
from workbench.manifold_points import PointSet, collect_points, prompt_records
from workbench.manifold_scoring import (
    FitSpec,
    SplitFits,
    cases_for,
    crossfit,
    layer_rank,
    model_heldout,
    real_model_scores,
)

logger = logging.getLogger(__name__)

FAMILIES = ("day", "month", "hue")
SIDE = {"last": "output", "value": "input"}
"""the feature side whose reconstruction is fitted at each position (what the block writes at the
answer; what it reads at the family word)"""
MIN_FAMILY = 5
"""fewest family features of a layer for a reconstruction fit (the issue's family-size floor)"""


FAMILY_SOURCES = ("truth", "labels")
"""Where a family's features come from: the world's per-feature truth or its labels."""
FAMILY_SOURCE = "truth"
"""The default of :data:`FAMILY_SOURCES` for the scoring command, ``manifold fit --world`` and the demo."""


@dataclass(frozen=True, kw_only=True)
class WorldScoreConfig:
    """How the demo world's manifolds are scored (the one source of the scoring command's defaults)."""

    folds: int = 5
    """Folds of the fit-held-out cross-fitting."""
    causal_targets: int = 1
    """Target values v' per fit-held-out prompt for substitution and steering (a seeded sample; the
    model-held-out prompts get every v')."""
    causal_prompts: int = 0
    """Fit-held-out prompts run on the real model per family and position (0: all; else a seeded sample)."""
    sweep_prompts: int = 48
    """Prompts per layer in the substitution / steering sweep over every layer (0: no sweep)."""
    seed: int = 0
    """Seed of the folds, samples and random subspaces."""
    family_source: str = FAMILY_SOURCE
    """Which per-feature file names a family's features (its reconstructions and tilings): 'truth'
    (feature_truth_plt.jsonl, the world's per-feature truth) or 'labels' (labels_plt.jsonl, heuristic)."""

    def __post_init__(self) -> None:
        from analyses.base import check_choice, check_number

        check_choice("family_source", self.family_source, FAMILY_SOURCES)

        check_number("folds", self.folds, lo=2, integer=True)
        check_number("causal_targets", self.causal_targets, lo=1, integer=True)
        for name in ("causal_prompts", "sweep_prompts", "seed"):
            check_number(name, getattr(self, name), lo=0, integer=True)


@dataclass(frozen=True, kw_only=True, eq=False)
class WorldFamily:
    """One family's arithmetic prompts and what the manifest says about them."""

    family: str
    names: list[str]
    answer: np.ndarray
    """(n,) answer value"""
    start: np.ndarray
    """(n,) start value"""
    heldout: np.ndarray
    """(n,) bool: a combination the model never trained on"""
    positions: dict[str, np.ndarray]
    """'last' / 'value' -> (n,) token index per prompt"""
    answers: dict[str, np.ndarray]
    """position -> (n, p) token id the prompt should answer when the variable there is v'"""
    features: dict[str, list[list[int]]]
    """'any' / 'input' / 'output' -> per PLT layer, the family's features (from the truth or the labels)"""

    def values(self, position: str) -> np.ndarray:
        return self.answer if position == "last" else self.start


def family_features(labels_path: Path, family: str, n_layers: int,
                    side: str | None = None) -> list[list[int]]:
    """Per layer, the features whose record in ``labels_path`` (world labels, or the per-feature truth: both
    carry ``family`` and ``side``) names ``family`` (on ``side``, or any side); none without the file."""
    out: list[list[int]] = [[] for _ in range(n_layers)]
    if not labels_path.is_file():
        logger.warning("no file %s: the family's features are unknown", labels_path)
        return out
    for n, line in enumerate(labels_path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = loads_json(line)
            if rec.get("family") == family and (side is None or rec.get("side") == side):
                out[int(rec["layer"])].append(int(rec["feature"]))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise WorkbenchError(f"--world {labels_path.name} must be JSON lines with an integer layer and feature; "
                                 f"got line {n} "
                                 f"of {str(labels_path)!r} ({type(err).__name__}: {str(err)[:80]}). Rebuild the world "
                                 "or fix the file.") from None
    return [sorted(f) for f in out]


def world_family(loaded: LoadedModel, world: Path, manifest: dict[str, Any], family: str,
                 n_layers: int, kind: str = "plt",
                 source: str = FAMILY_SOURCE) -> tuple[WorldFamily, list[dict[str, Any]]]:
    """The family's prompts (manifest rows) and truth; its features from the labels (``source="labels"``) or
    the per-feature truth (``"truth"``) of the ``kind`` ("plt" | "clt") transcoders."""
    names = list(manifest["families"][family]["values"])
    rows = manifest["prompt_sets"][f"{family}_arith"]
    check_word_tokens(loaded, [r["prompt"] for r in rows])
    p = len(names)
    # (p,) each name as the next word of the prompts (the world's answers follow "... is")
    ids = np.array(default_answers(loaded, rows[0]["prompt"], names, f"--world's {family} prompts"))
    start = np.array([int(r["start"]) for r in rows])
    sign = np.array([1 if r["direction"] == "after" else -1 for r in rows])
    offset = np.array([int(r["offset"]) for r in rows])
    shifted = (np.arange(p)[None, :] + (sign * offset)[:, None]) % p  # (n, p) answer value per start v'
    labels = (world / f"feature_truth_{kind}.jsonl" if source == "truth"
              else world / manifest.get("files", {}).get(f"labels_{kind}", f"labels_{kind}.jsonl"))
    if source == "truth" and not labels.is_file():
        raise WorkbenchError(f"--world must hold its per-feature truth to name a family's features; got no "
                             f"{str(labels)!r}. Run `workbench world truth --world {world}`, or score with "
                             "--family-source labels.")
    fam = WorldFamily(
        family=family, names=names, answer=np.array([names.index(r["answer"]) for r in rows]), start=start,
        heldout=np.array([r["split"] == "heldout" for r in rows]),
        positions={"last": np.full(len(rows), -1),
                   "value": np.array([1 + r["prompt"].split().index(names[int(r["start"])]) for r in rows])},
        answers={"last": np.tile(ids, (len(rows), 1)), "value": ids[shifted]},
        features={"any": family_features(labels, family, n_layers),
                  **{s: family_features(labels, family, n_layers, s) for s in ("input", "output")}})
    return fam, rows


def check_word_tokens(loaded: LoadedModel, prompts: list[str]) -> None:
    """A world's positions and answers count words: refuse a model whose tokenizer splits the world's
    words into subwords (another model than the world's), instead of reading the wrong tokens."""
    tok = loaded.tokenizer
    if tok is None or not prompts:
        return
    for i, prompt in enumerate(prompts):
        ids, n_words = tok(prompt, add_special_tokens=False)["input_ids"], len(prompt.split())
        if len(ids) != n_words:
            raise WorkbenchError(f"--world's prompts must be one token per word for the model (the world's positions "
                                 f"and answers count words); got {len(ids)} tokens for the {n_words} words of "
                                 f"{prompts[i]!r}. Use the world's own model, or give --prompts records with "
                                 "positions and answers for this model.")


def world_inputs(loaded: LoadedModel, world: Path, family: str, position: str, n_layers: int,
                 kind: str = "plt") -> FitInputs:
    """A demo world family's arithmetic prompts at the answer ('last') or the family word ('value'),
    with the family's features of the ``kind`` ("plt" | "clt") transcoders (named by the world's per-feature
    truth, :data:`FAMILY_SOURCE`)."""
    manifest_path = world / "manifest.json"
    try:
        manifest: dict[str, Any] = loads_json(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"--world must hold a readable manifest.json; got {str(manifest_path)!r} "
                             f"({type(err).__name__}).{folder_hint(world, 'world')}") from None
    if family not in manifest.get("families", {}):
        raise WorkbenchError(f"--family must be one of {sorted(manifest.get('families', {}))}; got {family!r}.")
    if position not in POSITIONS:
        raise WorkbenchError(f"--position must be one of {list(POSITIONS)}; got {position!r}.")
    fam, rows = world_family(loaded, world, manifest, family, n_layers, kind)
    pos = fam.positions[position]
    records = [PromptRecord(prompt=r["prompt"], meta={**{k: v for k, v in r.items() if k != "prompt"},
                                                      "position": int(p)}) for r, p in zip(rows, pos)]
    feats = {layer: f for layer, f in enumerate(fam.features[SIDE[position]])}
    return FitInputs(records=records, names=fam.names, values=fam.values(position), answers=fam.answers[position],
                     heldout=fam.heldout, features=feats)


# ----------------------------------------------------------------------------- fits
def score_source(spec: FitSpec, X: np.ndarray, fam: WorldFamily, position: str,
                 cfg: WorldScoreConfig) -> tuple[dict[str, Any], dict[str, SplitFits]]:
    """Model-train fit summary, fit-held-out and model-held-out scores of one point source."""
    y = fam.values(position)
    held = model_heldout(spec, X, y, fam.heldout)
    cross = crossfit(spec, X, y, cfg.folds, cfg.seed)
    fit = held.fits[0]
    row = {k: v for k, v in fit.summary().items() if k not in ("explained_variance_ratio",)}
    row["top2_variance"] = float(fit.explained_variance_ratio[:2].sum())
    row["fit_heldout"], row["model_heldout"] = cross.scores, held.scores
    return row, {"fit_heldout": cross, "model_heldout": held}


def fit_family(pts: PointSet, tcs: Transcoders, fam: WorldFamily,
               cfg: WorldScoreConfig) -> tuple[dict[str, Any], dict[str, dict[str, SplitFits]]]:
    """Residual fits at every layer and position, reconstruction fits at every PLT layer."""
    rows: dict[str, Any] = {"residual": {}, "reconstruction": {}}
    splits: dict[str, dict[str, SplitFits]] = {}
    p = len(fam.names)

    def attempt(kind: str, key: str, X: np.ndarray, spec: FitSpec, position: str) -> None:
        try:
            rows[kind][key], splits[f"{kind}/{key}"] = score_source(spec, X, fam, position, cfg)
        except ValueError as err:  # nothing varies with the value here (a constant token, silent features)
            rows[kind][key] = {"error": str(err)}

    for position in POSITIONS:
        pos = fam.positions[position]
        for L in range(tcs.n_layers + 1):
            spec = FitSpec(period=p, names=fam.names, layer=L, position=position, source="residual")
            attempt("residual", f"{position}/L{L}", pts.residual(L, pos), spec, position)
        for layer, feats in enumerate(fam.features[SIDE[position]]):
            if len(feats) >= MIN_FAMILY:
                spec = FitSpec(period=p, names=fam.names, layer=layer + 1, position=position,
                               source=f"plt{layer} reconstruction ({len(feats)} features)")
                attempt("reconstruction", f"{position}/plt{layer}", pts.reconstruction(tcs, layer, feats, pos),
                        spec, position)
    return rows, splits


def headline_key(rows: dict[str, Any], position: str) -> str | None:
    """The source at ``position`` whose model-train fit has the largest between-class share (fit data only)."""
    keys = [k for k, r in rows.items() if k.startswith(position + "/") and "error" not in r]
    return max(keys, key=lambda k: layer_rank(rows[k]["between_class_fraction"],
                                              int(k.split("L")[-1].split("plt")[-1])), default=None)


# ----------------------------------------------------------------------------- real model
def causal_rows(loaded: LoadedModel, tcs: Transcoders, pts: PointSet, fam: WorldFamily, tokens: list[list[int]],
                splits: dict[str, dict[str, SplitFits]], headline: dict[str, str | None],
                cfg: WorldScoreConfig) -> dict[str, Any]:
    """Substitution and steering at each position's headline layer (both hold-outs) and the layer sweep."""
    out: dict[str, Any] = {"headline": {}, "sweep": {}}
    rng = np.random.default_rng(cfg.seed)
    n = len(tokens)
    for position in POSITIONS:
        pos, y = fam.positions[position], fam.values(position)
        key = headline[position]
        if key is not None:
            L = int(key.split("/L")[1])
            X = pts.residual(L, pos)
            sample = np.ones(n, bool) if not cfg.causal_prompts else _sample(n, cfg.causal_prompts, rng)
            cross = cases_for(tokens, pos, y, fam.answers[position], X, cfg.causal_targets, cfg.seed)
            every = cases_for(tokens, pos, y, fam.answers[position], X, None, cfg.seed)
            sp = splits[f"residual/{key}"]
            out["headline"][position] = {
                "layer": L, "fit_heldout": real_model_scores(loaded, tcs, sp["fit_heldout"], cross, use=sample),
                "model_heldout": real_model_scores(loaded, tcs, sp["model_heldout"], every)}
        if cfg.sweep_prompts:
            sample = _sample(n, cfg.sweep_prompts, rng)
            for full_key, sp in splits.items():
                kind, where, layer_s = full_key.split("/")
                if kind == "residual" and where == position:
                    X = pts.residual(int(layer_s[1:]), pos)
                    cases = cases_for(tokens, pos, y, fam.answers[position], X, 1, cfg.seed)
                    out["sweep"][f"{where}/{layer_s}"] = real_model_scores(loaded, tcs, sp["fit_heldout"], cases,
                                                                           use=sample)
    return out


def _sample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[rng.choice(n, min(k, n), replace=False)] = True
    return mask


# ----------------------------------------------------------------------------- tiling
def tiling_rows(pts: PointSet, tcs: Transcoders, fam: WorldFamily,
                splits: dict[str, dict[str, SplitFits]]) -> dict[str, tuple[TilingResult, ManifoldFitResult]]:
    """Tuning of the family's features over a residual fit's angle (model-train fit), all prompts.

    Output-side features of PLT layer l (what the block writes) at the answer position, over the
    angle of the residual fit at layer l + 1; input-side features (what the block reads) at the
    family word, over the angle of the residual fit at layer l (layer l + 1 where l has none)."""
    out: dict[str, tuple[TilingResult, ManifoldFitResult]] = {}
    W = [tcs.layers[i] for i in range(tcs.n_layers)]
    for side, position in (("output", "last"), ("input", "value")):
        pos, y = fam.positions[position], fam.values(position)
        for layer, feats in enumerate(fam.features[side]):
            shift = 1 if side == "output" else 0
            key = next((f"residual/{position}/L{layer + s}" for s in (shift, 1)
                        if f"residual/{position}/L{layer + s}" in splits), None)
            if len(feats) < 3 or key is None:
                continue
            fit = splits[key]["model_heldout"].fits[0]
            u = fit.transform(pts.residual(int(fit.layer or 0), pos))  # (n,) angle of every prompt
            A = pts.activations(layer, pos)[:, feats]  # (n, n_family)
            W_dec = W[layer].decoder_rows(torch.tensor(feats), torch.float32).double().numpy()  # (n_family, d_model)
            out[f"{side}/plt{layer}"] = (compute_tiling(u, A, W_dec, features=feats, values=y,
                                                        period=len(fam.names)), fit)
    return out


# ----------------------------------------------------------------------------- one family
def model_accuracy(manifest: dict[str, Any], family: str) -> dict[str, float | None]:
    """The world model's top-1 accuracy on the family's arithmetic prompts it trained on and on those it never saw
    (the build's evaluation, from the manifest; None where it is not recorded): what the model-held-out figures
    measure a representation of."""
    acc = (((manifest.get("metrics") or {}).get("model") or {}).get("accuracy") or {}).get(f"{family}_arith") or {}
    return {split: (float(acc[split]) if isinstance(acc.get(split), (int, float)) else None)
            for split in ("train", "heldout")}


def run_family(loaded: LoadedModel, tcs: Transcoders, world: Path, manifest: dict[str, Any], family: str,
               out: Path, cfg: WorldScoreConfig, *, causal: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything measured on one family; returns the report and the tilings / fits for plots."""
    fam, rows = world_family(loaded, world, manifest, family, tcs.n_layers, tcs.kind, cfg.family_source)
    t0 = time.perf_counter()
    pts = collect_points(loaded, tcs, prompt_records(rows), out / "activations" / family,
                         residual_layers=range(tcs.n_layers + 1))
    tokens = [list(r["tokens"]) for r in pts.records]
    t1 = time.perf_counter()
    fits, splits = fit_family(pts, tcs, fam, cfg)
    headline = {p: headline_key(fits["residual"], p) for p in POSITIONS}
    headline_rec = {p: headline_key(fits["reconstruction"], p) for p in POSITIONS}
    tilings = tiling_rows(pts, tcs, fam, splits)
    t2 = time.perf_counter()
    report: dict[str, Any] = {
        "n_prompts": len(rows), "n_model_train": int((~fam.heldout).sum()), "n_model_heldout": int(fam.heldout.sum()),
        "model_accuracy": model_accuracy(manifest, family),
        "n_features": [len(f) for f in fam.features["any"]], **fits, "headline": headline,
        "headline_reconstruction": headline_rec,
        "tiling": {k: {**t.summary(), "fit_layer": f.layer} for k, (t, f) in tilings.items()}}
    if causal:
        report["causal"] = causal_rows(loaded, tcs, pts, fam, tokens, splits, headline, cfg)
    report["seconds"] = {"collect": round(t1 - t0, 2), "fit_and_tiling": round(t2 - t1, 2),
                         "causal": round(time.perf_counter() - t2, 2)}
    return report, {"fam": fam, "pts": pts, "splits": splits, "tilings": tilings}


def _parser() -> argparse.ArgumentParser:
    from workbench.config_cli import add_config_arguments

    ap = script_parser("python -m workbench.manifold_world", (__doc__ or "").split("\n")[0])
    ap.add_argument("--world", type=Path, default=None, help="world folder (default: the shipped data/world)")
    ap.add_argument("--out", type=Path, required=True, help="folder for world_manifolds.json and plots")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    ap.add_argument("--no-causal", action="store_true", help="skip the real-model substitution and steering")
    disc_src = ap.add_mutually_exclusive_group()
    disc_src.add_argument("--discovery", type=Path, default=None,
                          help="world_discovery.json of workbench.manifold_world_discovery, merged into the scorecards")
    disc_src.add_argument("--run-discovery", action="store_true",
                          help="run the discovery ranking too (the truth's families; under a minute) and merge it")
    ap.add_argument("--map-layer", type=int, default=1, help="PLT layer of the decoder map")
    ap.add_argument("--map-method", default="umap", choices=("umap", "pca", "none"), help="decoder map embedding")
    add_config_arguments(ap, WorldScoreConfig)
    return ap


def read_discovery(path: Path) -> dict[str, Any]:
    """A `workbench manifold discover` discovery.json (what the report takes from it: families_from and
    feature_layers), or a one-line error."""
    from tracer.io import loads_json

    try:
        doc = loads_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise WorkbenchError(f"--discovery must be a readable discovery.json; got {str(path)!r} ({err}).") from None
    if not isinstance(doc, dict) or not {"families_from", "feature_layers"} <= set(doc):
        raise WorkbenchError(f"--discovery must be a discovery.json of `workbench manifold discover` (with "
                             f"families_from and feature_layers); got {str(path)!r}.")
    return doc


def main(argv: list[str] | None = None) -> int:
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.config_cli import config_from_args
    from workbench.manifold_world_report import decoder_map, format_table, plots, scorecard
    from workbench.paths import world_dir

    args = _parser().parse_args(argv)
    cfg = config_from_args(WorldScoreConfig, args)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    world = (args.world or world_dir()).resolve()
    from workbench.cli_safety import check_out, need_input

    need_input(world / "manifest.json", "--world manifest.json")
    check_out(args.out, inputs=[world, args.discovery], folder=True)  # never into the world it reads
    manifest = json.loads((world / "manifest.json").read_text())
    names = [f.strip() for f in args.families.split(",") if f.strip()]  # "day, month" and "day," name real families
    unknown = [f for f in names if f not in manifest.get("families", {})] or ([] if names else [args.families])
    if unknown:
        raise WorkbenchError(f"--families must be families of the world ({', '.join(manifest.get('families', {}))}); "
                             f"got {unknown[0]!r}.")
    disc = read_discovery(args.discovery) if args.discovery else None  # before any work, as --map-layer
    loaded = load_model(world / "model", backend="auto")
    tcs = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    if not 0 <= args.map_layer < tcs.n_layers:  # it failed after every fit (and -1 read the last layer)
        raise WorkbenchError(f"--map-layer must be a PLT layer in [0, {tcs.n_layers - 1}]; got {args.map_layer}.")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.run_discovery:
        from workbench.manifold_world_discovery import format_ranking, run_discovery

        disc = run_discovery(world, args.out / "discovery")
        print(format_ranking(disc), flush=True)
    report: dict[str, Any] = {"world": str(world), "config": vars(cfg), "families": {},
                              "discovery": None if disc is None else {k: disc[k]
                                                                       for k in ("families_from", "feature_layers")}}
    tilings: dict[str, dict[str, Any]] = {}
    for fam in names:
        rep, data = run_family(loaded, tcs, world, manifest, fam, args.out, cfg, causal=not args.no_causal)
        rep["plots"] = plots(args.out, fam, data, rep)
        report["families"][fam] = rep
        tilings[fam] = data["tilings"]
        print(format_table({fam: rep}), flush=True)
    report["scorecard"] = {fam: scorecard(rep, None if disc is None else disc.get("scorecard", {}).get(fam))
                           for fam, rep in report["families"].items()}
    if args.map_method != "none":
        W = tcs.layers[args.map_layer].decoder_rows(torch.arange(tcs.layers[args.map_layer].d_transcoder),
                                                    torch.float32).double().numpy()
        report["decoder_map"] = decoder_map(args.out, world, W, args.map_layer, tilings, args.map_method)
    atomic_write_json(args.out / "world_manifolds.json", report)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.manifold_world"))

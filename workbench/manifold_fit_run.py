"""The work behind `workbench manifold fit` and `workbench manifold steer` (see :mod:`workbench.cmd_manifold`)."""

import json
import logging
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses.manifolds.causal import steer_check
from analyses.manifolds.display import FrequencyR2Display, ManifoldCircleDisplay, TuningCurvesDisplay
from analyses.manifolds.fit import ManifoldFitConfig, ManifoldFitResult, check_frequency
from analyses.manifolds.tiling import TilingResult, compute_tiling
from analyses.results import load_result, save_result
from tracer.errors import WorkbenchError
from tracer.io import loads_json
from tracer.models import LoadedModel
from tracer.transcoders.base import Transcoders
from workbench.cli_safety import clear_outputs
from workbench.manifold_inputs import FitInputs
from workbench.manifold_points import PointSet, collect_points
from workbench.manifold_scoring import (
    FitSpec,
    cases_for,
    crossfit,
    grouped_rate,
    layer_rank,
    make_fit,
    model_heldout,
    point_scores,
    real_model_scores,
    summarize,
)

logger = logging.getLogger(__name__)

FIT_FILE = "fit.json"
FIT_INDEX = "manifold.json"
FIT_OUTPUTS = (FIT_FILE, "fit.safetensors", *(f"{name}.{ext}" for name in ("circle", "frequency", "tuning")
                                               for ext in ("png", "svg")))
"""What `manifold fit` writes into --out besides its index (and its reusable activations/ folder), removed
before a new fit writes its own."""


def _points(loaded: LoadedModel, tcs: Transcoders, inputs: FitInputs, layers: tuple[int, ...],
            folder: Path) -> PointSet:
    return collect_points(loaded, tcs, inputs.records, folder, residual_layers=layers, positions="field")


def scan_layers(pts: PointSet, inputs: FitInputs, positions: np.ndarray, layers: range,
                fit_cfg: ManifoldFitConfig, position: str) -> tuple[int, list[dict[str, Any]]]:
    """Fit every residual layer on the fit prompts only (not the held-out ones) and pick the one where the
    variable is represented (:func:`workbench.manifold_scoring.layer_rank`); the per-layer rows."""
    train = ~inputs.heldout
    rows: list[dict[str, Any]] = []
    for layer in layers:
        spec = FitSpec(period=len(inputs.names), names=inputs.names, layer=layer, position=position,
                       source="residual", config=fit_cfg)
        try:
            fit = make_fit(spec, pts.residual(layer, positions)[train], inputs.values[train])
        except ValueError as err:  # nothing varies with the value there (e.g. a constant token)
            rows.append({"layer": layer, "error": str(err).splitlines()[0]})
            continue
        rows.append({"layer": layer, "between_class_fraction": fit.between_class_fraction, "r2": fit.r2,
                     "frequency": fit.frequency, "order_matches": fit.order_matches_values(),
                     "n_components": fit.n_components})
    scored = [r for r in rows if "error" not in r]
    if not scored:
        raise WorkbenchError(f"--layer auto found no residual layer where the values can be fitted; got errors at "
                             f"every layer (first: {rows[0]['error']}).")
    best = max(scored, key=lambda r: layer_rank(r["between_class_fraction"], r["layer"]))
    logger.info("layer scan: L%d has the largest between-class share (%.3f)", best["layer"],
                best["between_class_fraction"])
    return int(best["layer"]), rows


def tiled_features(pts: PointSet, inputs: FitInputs, layer: int, positions: np.ndarray, rate: float,
                   given: list[int] | None) -> list[int]:
    """The features to tile: given, the world family's, or those firing on >= ``rate`` of the points."""
    width = pts.store.d_transcoder(layer)
    if given is not None:
        bad = [f for f in given if not 0 <= f < width]
        if bad:
            raise WorkbenchError(f"--features must be in [0, {width}) for transcoder layer {layer}; got {bad[0]}.")
        return sorted(set(given))
    if inputs.features is not None and len(inputs.features.get(layer, [])) >= 3:
        return inputs.features[layer]
    A = pts.activations(layer, positions)  # (n, d_transcoder)
    firing = np.asarray((A > 0).mean(0)).ravel()  # (d_transcoder,)
    return [int(f) for f in np.flatnonzero(firing >= rate)]


def tiling_of(pts: PointSet, tcs: Transcoders, fit: ManifoldFitResult, X: np.ndarray, inputs: FitInputs,
              positions: np.ndarray, layer: int, feats: list[int]) -> TilingResult | None:
    """Tuning of ``feats`` of transcoder ``layer`` over the fit's coordinate, all prompts with a value."""
    known = inputs.values >= 0
    if len(feats) < 2 or not known.any():
        return None
    A = pts.activations(layer, positions)[np.flatnonzero(known)][:, feats]  # (n_known, n_f)
    W = tcs.layers[layer].decoder_rows(torch.tensor(feats), torch.float32)  # (n_f, d) | (n_f, n_out, d)
    W = W[:, 0] if W.dim() == 3 else W
    return compute_tiling(fit.transform(X[known]), A, W.double().numpy(), features=feats,
                          values=inputs.values[known], period=fit.period, closed=fit.shape == "circle")


def _causal(loaded: LoadedModel, tcs: Transcoders, spec: FitSpec, X: np.ndarray, y: np.ndarray,
            inputs: FitInputs, positions: np.ndarray, cfg: Any) -> dict[str, Any]:
    """Class-mean substitution on prompts the fit did not see (held-out records, else cross-fitting); a check
    that cannot run keeps the report's keys, as null, with the reason under ``skipped``."""
    def skipped(why: str) -> dict[str, Any]:
        return {"skipped": why, "fitted_success": None, "random_success": None}

    if cfg.causal_prompts == 0:
        return skipped("causal_prompts is 0")
    if np.any(inputs.answers < 0):
        return skipped("records at --position value need 'answers' (the answer for each value)")
    counts = np.bincount(y, minlength=spec.period)
    if inputs.heldout.any():
        splits, how = model_heldout(spec, X, y, inputs.heldout), "held-out records"
    elif counts.min() >= 2:
        splits, how = crossfit(spec, X, y, min(cfg.folds, int(counts.min())), cfg.seed), "cross-fitted"
    else:
        return skipped("a value has fewer than 2 points: no held-out prompts to check (give at least 2 per value, "
                       "or --min-points-per-value 2 to require it)")
    scored = np.flatnonzero(splits.group >= 0)
    use = np.zeros(len(y), bool)
    use[np.random.default_rng(cfg.seed).permutation(scored)[:cfg.causal_prompts]] = True
    tokens = [list(r.meta.get("tokens", [])) or [] for r in inputs.records]
    cases = cases_for(tokens, positions, y, inputs.answers, X, cfg.causal_targets, cfg.seed)
    report = real_model_scores(loaded, tcs, splits, cases, use=use, seed=cfg.seed,
                               freeze_attention=cfg.freeze_attention, steering=False)
    return {"how": how, **report, "answer_tokens": answer_texts(loaded, inputs)}


def answer_texts(loaded: LoadedModel, inputs: FitInputs) -> dict[str, list[str]] | None:
    """Per value, the distinct answer tokens its records are checked against, as text (" Monday")."""
    tok = loaded.tokenizer
    if tok is None:
        return None
    return {name: sorted({tok.decode([int(a)]) for a in inputs.answers[:, v]}) for v, name in enumerate(inputs.names)}


def fit_and_check(loaded: LoadedModel, tcs: Transcoders, inputs: FitInputs, layer: int | None, position: str,
                  out: Path, fit_cfg: ManifoldFitConfig, cfg: Any, features: list[int] | None, *,
                  activations: Path | None = None) -> dict[str, Any]:
    """Fit, tiling, causal check and plots; returns manifold.json's content. ``layer`` None scans every
    residual layer first (:func:`scan_layers`; the rows go in ``layer_scan``). The activation run is kept
    in ``activations`` (default ``out/activations``, reused by a later run on the same prompts). Nothing
    else is written until the work has succeeded, so a failed run leaves an earlier fit in ``out`` whole;
    then an older ``manifold.json`` is removed before the new files are written, so that an interrupted
    write never leaves an index that points at another run's fit."""
    layers = tuple(range(loaded.n_layers + 1)) if layer is None else (layer,)
    check_fit_inputs(inputs, fit_cfg)  # before any model work, so that a bad input writes nothing
    pts = _points(loaded, tcs, inputs, layers, out / "activations" if activations is None else activations)
    inputs = _with_tokens(inputs, pts)
    positions = np.array([int(r.meta["position"]) for r in inputs.records])
    if position == "value":
        warn_value_tokens(loaded, inputs, positions)
    scan = None
    if layer is None:
        layer, scan = scan_layers(pts, inputs, positions, range(loaded.n_layers + 1), fit_cfg, position)
    X = pts.residual(layer, positions)  # (n, d_model)
    y = inputs.values
    spec = FitSpec(period=len(inputs.names), names=inputs.names, layer=layer, position=position, source="residual",
                   config=fit_cfg)
    train = ~inputs.heldout
    fit = make_fit(spec, X[train], y[train])
    feature_layer = cfg.feature_layer if cfg.feature_layer is not None else max(layer - 1, 0)
    if feature_layer >= tcs.n_layers:
        raise WorkbenchError(f"--feature-layer must be in [0, {tcs.n_layers - 1}]; got {feature_layer}.")
    feats = tiled_features(pts, inputs, feature_layer, positions, cfg.min_feature_rate, features)
    tiling = tiling_of(pts, tcs, fit, X, inputs, positions, feature_layer, feats)
    report = {**fit.summary(), "values": inputs.names, "fit_file": FIT_FILE, "n_prompts": len(y),
              "n_fit": int(train.sum()), "tiling": None if tiling is None else
              {**tiling.summary(), "feature_layer": feature_layer, "features": feats}}
    if scan is not None:
        report["layer_scan"] = scan
    if inputs.heldout.any():
        report["heldout"] = summarize(point_scores(fit, X[inputs.heldout], y[inputs.heldout]))
    report["causal"] = _causal(loaded, tcs, spec, X, y, inputs, positions, cfg)
    clear_outputs(out, FIT_INDEX, FIT_OUTPUTS)  # the index first, then the earlier fit and its plots (none stale)
    save_result(fit, out / FIT_FILE)  # the results once all the work has succeeded; manifold.json last (the caller)
    report["plots"] = _plots(out, fit, X, y, tiling)
    return report


def warn_value_tokens(loaded: LoadedModel, inputs: FitInputs, positions: np.ndarray) -> None:
    """Warn when records' token at their 'position' is not inside an occurrence of their value's word
    (a position off by one, or pointing at another word, fits the wrong token silently). Any token of
    a value split into subwords passes, and so does the space token before it; "Th" of "Three" does
    not pass for "Thursday"."""
    tok = loaded.tokenizer
    if tok is None:
        return
    off = []
    for i, (rec, v) in enumerate(zip(inputs.records, inputs.values)):
        if v < 0:
            continue
        ids = [int(t) for t in rec.meta["tokens"]]
        pos = int(positions[i]) % len(ids)
        if not token_in_word(tok, ids, pos, inputs.names[v]):
            off.append((i, _word_at(tok, ids, pos), inputs.names[v]))
    if off:
        i, word, name = off[0]
        logger.warning("%d of %d prompt records have a token other than their value's word at 'position' (prompt "
                       "%d: a token of %r for %r); check the positions (BOS = 0)", len(off), len(inputs.records), i,
                       word, name)


def _word_at(tok: Any, ids: list[int], pos: int) -> str:
    """The whitespace-delimited word of the decoded text that holds token ``pos`` (for messages)."""
    text = tok.decode(ids)
    start, end = _token_chars(tok, ids, pos, text)
    seg = text[start:end]
    left = end if not seg.strip() else start + len(seg) - len(seg.lstrip())  # a space token: the word after it
    floor = len(tok.decode(ids[:1])) if pos > 0 else 0  # never the BOS's text
    while left > floor and not text[left - 1].isspace():
        left -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[left:end].strip()


def _token_chars(tok: Any, ids: list[int], pos: int, text: str) -> tuple[int, int]:
    """Characters [start, end) of ``text`` (the decoded ``ids``) that token ``pos`` adds. A token holding
    part of a multi-byte character decodes to U+FFFD alone, so the span widens to the nearest token
    boundaries whose decoded prefix is a prefix of the text: the whole character."""
    def clean(k: int) -> int | None:
        prefix = tok.decode(ids[:k])
        return len(prefix) if text.startswith(prefix) else None

    a, start = pos, clean(pos)
    while start is None and a > 1:
        a -= 1
        start = clean(a)
    b, end = pos + 1, clean(pos + 1)
    while end is None and b < len(ids) - 1:
        b += 1
        end = clean(b)
    return (0 if start is None else start), (len(text) if end is None else end)


def _spaced_letter(ch: str) -> bool:
    """A letter or digit of a script written with spaces between words (Latin, Greek, Cyrillic)."""
    return ch.isalnum() and (ch.isascii() or unicodedata.name(ch, "").startswith(("LATIN", "GREEK", "CYRILLIC")))


def word_pattern(word: str) -> "re.Pattern[str]":
    """``word`` as a whole word: where its first (last) character is a letter of a spaced script, no
    letter may touch it on that side ("red" is not in "Fred"); ideographs need no boundary."""
    lead = r"(?<!\w)" if word and _spaced_letter(word[0]) else ""
    trail = r"(?!\w)" if word and _spaced_letter(word[-1]) else ""
    return re.compile(lead + re.escape(word) + trail)


def token_in_word(tok: Any, ids: list[int], pos: int, word: str) -> bool:
    """Whether token ``pos`` of ``ids`` lies inside an occurrence of the whole word ``word`` in their
    decoded text, or is whitespace just before one."""
    text = tok.decode(ids)
    start, end = _token_chars(tok, ids, pos, text)
    seg = text[start:end]
    found = list(word_pattern(word).finditer(text))
    if not seg.strip():  # a bare space token, as byte-level BPE makes before some words
        return any(start >= len(text[:m.start()].rstrip()) and end <= m.start() for m in found)
    first, last = start + len(seg) - len(seg.lstrip()), end - (len(seg) - len(seg.rstrip()))
    return any(m.start() <= first and last <= m.end() for m in found)


def check_fit_inputs(inputs: FitInputs, fit_cfg: ManifoldFitConfig) -> None:
    """What the fit would refuse after the activations are collected, refused before: records without a
    value, a value with fewer fit records than ``min_points_per_value``, a frequency the period cannot hold."""
    if not (inputs.values >= 0).all():
        raise WorkbenchError("every prompt record must have a 'value' to be fitted; some have none.")
    p = len(inputs.names)
    counts = np.bincount(inputs.values[~inputs.heldout], minlength=p)  # (p,) fit records per value
    need = max(fit_cfg.min_points_per_value, 1)
    short = [(inputs.names[v], int(counts[v])) for v in range(p) if counts[v] < need]
    if short:
        raise WorkbenchError(f"every value needs at least {need} fit record(s); got {short[0][1]} for {short[0][0]!r}"
                             f"{f' and {len(short) - 1} more short value(s)' if len(short) > 1 else ''}. Add prompts "
                             "or lower --min-points-per-value.")
    try:
        check_frequency(fit_cfg.frequency, p, fit_cfg.shape)
    except ValueError:
        raise WorkbenchError(f"--frequency must be <= {p // 2} (half the {p} values) and, for a circle, coprime with "
                             f"{p}; got {fit_cfg.frequency}.") from None


def _with_tokens(inputs: FitInputs, pts: PointSet) -> FitInputs:
    """The records with their token ids (as collected) in the metadata."""
    from dataclasses import replace

    from tracer.activations import PromptRecord

    recs = [PromptRecord(prompt=r.prompt, meta={**r.meta, "tokens": s["tokens"]}, line=r.line)
            for r, s in zip(inputs.records, pts.records)]
    return replace(inputs, records=recs)


def _plots(out: Path, fit: ManifoldFitResult, X: np.ndarray, y: np.ndarray, tiling: TilingResult | None) -> list[str]:
    written = []
    for ext in ("png", "svg"):
        written.append(str(ManifoldCircleDisplay.from_fit(fit, X, y).savefig(out / f"circle.{ext}")))
        written.append(str(FrequencyR2Display.from_fit(fit).savefig(out / f"frequency.{ext}")))
        if tiling is not None:
            written.append(str(TuningCurvesDisplay.from_tiling(tiling, fit).savefig(out / f"tuning.{ext}")))
    return [Path(w).name for w in written]


# ----------------------------------------------------------------------------- steer
def load_fit(path: Path) -> tuple[dict[str, Any], ManifoldFitResult]:
    """manifold.json and the fit it points to."""
    hint = f"--fit must be a manifold.json written by `workbench manifold fit`; got {str(path)!r}"
    try:
        info = loads_json(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"{hint} ({err}).") from None
    if not isinstance(info, dict) or not isinstance(info.get("fit_file"), str):
        what = "a fit result (pass the manifold.json next to it)" if isinstance(info, dict) and "result" in info \
            else "JSON without a 'fit_file'"
        raise WorkbenchError(f"{hint}, which is {what}.")
    for key in ("model", "transcoders"):  # read when --model / --transcoders are not given
        if key in info and not (isinstance(info[key], str) and info[key]):
            raise WorkbenchError(f"{hint}, whose {key!r} is {info[key]!r}, not a folder path. Pass --{key} or fit "
                                 "again.")
    try:
        fit = load_result(Path(path).parent / info["fit_file"], ManifoldFitResult)
    except (OSError, ValueError, TypeError) as err:
        raise WorkbenchError(f"{hint} ({err}).") from None
    return info, fit


def steer_inputs(loaded: LoadedModel, tcs: Transcoders, fit: ManifoldFitResult, inputs: FitInputs, *,
                 freeze_attention: bool, heldout_only: bool) -> dict[str, Any]:
    """Steer every prompt (a world: its held-out ones) to every other value's angle; success = the answer."""
    layer = int(fit.layer or 0)
    with tempfile.TemporaryDirectory(prefix="manifold-steer-") as tmp:
        pts = _points(loaded, tcs, inputs, (layer,), Path(tmp) / "activations")
        positions = np.array([int(r.meta["position"]) for r in inputs.records])
        X = pts.residual(layer, positions)
        tokens = [list(r["tokens"]) for r in pts.records]
        if fit.position == "value":
            warn_value_tokens(loaded, _with_tokens(inputs, pts), positions)
    keep = inputs.heldout if heldout_only else np.ones(len(X), bool)
    if not keep.any():
        raise WorkbenchError("prompts to steer must be non-empty; got none (no held-out prompts).")
    if np.any(inputs.answers[keep] < 0):
        raise WorkbenchError("prompt records at --position value must carry 'answers' (one per value) to steer.")
    current = np.where(inputs.values >= 0, inputs.values, fit.predict_value(X))  # unknown: the fitted value
    idx = np.flatnonzero(keep)
    cases = cases_for([tokens[i] for i in idx], positions[idx], current[idx], inputs.answers[idx], X[idx], None)
    res = steer_check(loaded, tcs, fit, cases, freeze_attention=freeze_attention)
    rate, ci = grouped_rate(res.outcomes, res.case_index, len(cases))
    return {"success_rate": rate, "success_rate_ci": ci, "n": res.n, "n_prompts": len(cases), "layer": layer,
            "position": fit.position, "prompts": "world held-out arithmetic prompts" if heldout_only else "given",
            "answer_tokens": answer_texts(loaded, inputs)}

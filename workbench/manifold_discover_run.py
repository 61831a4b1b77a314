"""The work behind `workbench manifold discover`: corpus activations through :mod:`tracer.activations`,
families from a JSON file or a world's labels, :class:`~analyses.manifolds.discovery.ManifoldDiscovery`
per layer."""

import argparse
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses.manifolds.discovery import DiscoveryResult, ManifoldDiscovery, ripser_available
from tracer.activations import ActivationConfig, ActivationStore, read_prompts
from tracer.errors import WorkbenchError
from tracer.io import loads_json
from tracer.models import LoadedModel
from tracer.transcoders.base import Transcoders
from workbench.cli_safety import clear_outputs, int_items
from workbench.manifold_points import cached_run

logger = logging.getLogger(__name__)

Families = dict[int, dict[str, list[int]]]
"""layer -> family name -> feature indices"""


DISCOVERY_INDEX = "discovery.json"
DISCOVERY_FILES = tuple(f"{stem}_feature_layer*.{ext}" for stem, exts in (
    ("discovery", ("json", "safetensors")), ("ranking", ("png", "svg")), ("top_family", ("png", "svg")))
    for ext in exts)
"""What a discover run writes besides its index (globs), removed before a new run writes its own."""


def families_from_json(path: Path, n_layers: int, min_size: int, d_transcoder: int | None = None,
                       transcoders_source: str | None = None) -> Families:
    """``workbench families`` output (``{"families": [...], ...}``), a bare list ``[{"layer": int,
    "features": [...], "label"?: str}]`` (FeatureFamilies.to_json_families) or ``{name: {"layer",
    "features"}}``; single-layer families of >= ``min_size`` features (features in [0, d_transcoder)). With
    ``transcoders_source``, a document that records other transcoders is refused."""
    try:
        raw = loads_json(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"--families must be a readable JSON file; got {str(path)!r} ({err}).") from None
    if isinstance(raw, dict) and isinstance(raw.get("families"), list):  # the `workbench families` document
        if transcoders_source is not None:
            from workbench.cmd_cluster import families_transcoders

            families_transcoders(raw, transcoders_source, str(path))
        raw = raw["families"]
    items = raw.items() if isinstance(raw, dict) else ((None, r) for r in raw) if isinstance(raw, list) else None
    if items is None:
        raise WorkbenchError(f"--families must hold a list or an object of families; got {type(raw).__name__}.")
    out: Families = {}
    for i, (name, fam) in enumerate(items):
        layer = fam.get("layer") if isinstance(fam, dict) else None
        feats_raw = fam.get("features") if isinstance(fam, dict) else None
        if isinstance(layer, bool) or not isinstance(layer, int) or not isinstance(feats_raw, list):
            raise WorkbenchError(f"--families entry {i} must be an object with an integer 'layer' and a 'features' "
                                 f"list (single-layer families); got {str(fam)[:80]!r}.")
        if not 0 <= layer < n_layers:
            raise WorkbenchError(f"--families entry {i}'s layer must be in [0, {n_layers - 1}]; got {layer}.")
        top = d_transcoder if d_transcoder is not None else float("inf")
        bad = [f for f in feats_raw if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < top]
        if bad:
            raise WorkbenchError(f"--families entry {i}'s features must be feature indices of layer {layer} "
                                 f"(integers in [0, {top})); got {bad[0]!r}.")
        feats = sorted(set(feats_raw))
        if len(feats) >= min_size:
            label = name or fam.get("label") or "family"
            out.setdefault(layer, {})[f"{label}#{i}" if name is None else str(name)] = feats
    return out


def families_from_labels(path: Path, min_size: int, tcs: Transcoders | None = None) -> Families:
    """LABEL families (the world's truth, not discovered): features grouped by label family and side. With
    ``tcs``, labels of another transcoder set (their ``scan``, or a layer beyond the set's) are refused."""
    from tracer.labels import check_labels_match, load_labels

    labels = load_labels(path)
    if tcs is not None:
        check_labels_match(labels, n_layers=tcs.n_layers, scan=tcs.scan, source=str(path),
                           owner="--transcoders")
    return families_by_side(((lab.layer, lab.feature, lab.extra.get("family"), lab.extra.get("side"))
                             for lab in labels.values()), min_size)


def families_by_side(rows: Iterable[tuple[int, int, Any, Any]], min_size: int) -> Families:
    """Per layer, the features of each (family, side) among ``rows`` of (layer, feature, family, side), named
    ``family/side`` (input and output sides only), of ``min_size`` or more features, sorted."""
    out: Families = {}
    for layer, feature, family, side in rows:
        if family and side in ("input", "output"):
            out.setdefault(layer, {}).setdefault(f"{family}/{side}", []).append(feature)
    return {layer: {k: sorted(v) for k, v in sorted(fams.items()) if len(v) >= min_size}
            for layer, fams in sorted(out.items())}


def decoder_matrix(tcs: Transcoders, layer: int) -> np.ndarray:
    """(d_transcoder, d_model) decoder rows of a layer (a CLT: the slice into its own layer), float64."""
    tl = tcs.layers[layer]
    W = tl.decoder_rows(torch.arange(tl.d_transcoder), torch.float32)  # (d_tc, d) | (d_tc, n_out, d)
    return (W[:, 0] if W.dim() == 3 else W).double().numpy()


def layer_inputs(store: ActivationStore, tcs: Transcoders, layer: int) -> tuple[Any, np.ndarray]:
    """What discovery reads for one layer: activations (n_rows, d_transcoder) and decoder rows."""
    return store.layer_matrix(layer), decoder_matrix(tcs, layer)


def discover_layer(A: Any, W: np.ndarray, layer: int, families: dict[str, list[int]],
                   est: ManifoldDiscovery, verbose: bool = False) -> tuple[dict[str, Any], DiscoveryResult]:
    """Discovery on one layer's families (``A``, ``W``: :func:`layer_inputs`); the JSON rows and the result."""
    t0 = time.perf_counter()
    est.fit(A, W, families, feature_layer=layer, verbose=verbose)
    seconds = time.perf_counter() - t0
    rows = {f.name: f.summary() for f in est.result_.families}
    return ({"ranking": est.ranking_, "persistence": est.result_.persistence, "families": rows,
             "seconds": round(seconds, 1)}, est.result_)


def parse_layers(text: str, n_layers: int) -> set[int]:
    """``--feature-layers "1,2"`` -> {1, 2}: transcoder layers in [0, n_layers)."""
    layers = set(int_items(text, "--feature-layers"))  # "1,,2" and "1,1" are refused, not read as 1,2 / 1
    if any(not 0 <= x < n_layers for x in layers):
        raise WorkbenchError(f"--feature-layers must be comma-separated transcoder layers in [0, {n_layers - 1}]; got "
                             f"{text!r}.")
    return layers


def corpus_store(loaded: LoadedModel, tcs: Transcoders, prompts: Any, out: Path, layers: list[int],
                 verbose: bool = False, allow_unk: bool = False) -> ActivationStore:
    """Sparse activations of ``layers`` over the corpus (every position), collected once into ``out``."""
    cfg = ActivationConfig(feature_layers=tuple(layers))
    return cached_run(loaded, tcs, prompts, out, cfg, verbose=verbose,  # replaced when prompts or layers change
                      allow_unk=allow_unk)


def families_from_corpus(loaded: LoadedModel, tcs: Transcoders, store: ActivationStore, layers: list[int],
                         min_size: int, verbose: bool = False) -> Families:
    """Families found without labels, as ``workbench families --model --prompts`` finds them with its defaults
    (decoder neighbours, co-activation and token classes over the corpus ``store``); single-layer families of
    >= ``min_size`` features, named by their label where one is made (token classes) and numbered."""
    from analyses.families import decoder_matrix
    from analyses.families.config import FamiliesConfig
    from workbench.cmd_families import fit_families, name_token_families, store_sample, token_inputs

    X, layer, feature = decoder_matrix(tcs, layers)  # (rows, d), each layer's features in turn, as the store's
    A, _, tokens, next_tokens, _ = store_sample(store, layers)
    est = fit_families(FamiliesConfig(), X, layer, feature, A, token_inputs(loaded, tokens, next_tokens), None,
                       verbose)
    found = est.result_.to_json_families()
    name_token_families(found, loaded)
    out: Families = {}
    for i, fam in enumerate(found):
        if isinstance(fam["layer"], int) and len(fam["features"]) >= min_size:
            out.setdefault(fam["layer"], {})[f"{fam['label'] or 'family'}#{i}"] = sorted(fam["features"])
    return out


def _families_and_corpus(loaded: LoadedModel, tcs: Transcoders, args: argparse.Namespace,
                         layers: set[int] | None) -> tuple[Families, ActivationStore, str]:
    """(families per layer, the corpus run over their layers, where the families came from): from --families,
    from --labels, or, with neither, found on the corpus itself."""
    found = args.families is None and args.labels is None
    if found:
        fams: Families = {}
    else:
        fams = (families_from_json(args.families, tcs.n_layers, args.min_size, tcs.d_transcoder, tcs.source)
                if args.families is not None else families_from_labels(args.labels, args.min_size, tcs))
        fams = {layer: f for layer, f in fams.items() if f and (layers is None or layer in layers)}
        _need_families(fams, args.min_size, layers)
    prompts = read_prompts(args.prompts)  # before anything is made: a bad corpus leaves no --out behind
    wanted = sorted(layers if layers is not None else range(tcs.n_layers)) if found else sorted(fams)
    store = corpus_store(loaded, tcs, prompts, args.out / "activations", wanted, verbose=not args.quiet,
                         allow_unk=args.allow_unk)
    if not found:
        return fams, store, "labels (truth)" if args.labels is not None else str(args.families)
    fams = {layer: f for layer, f in families_from_corpus(loaded, tcs, store, wanted, args.min_size,
                                                          not args.quiet).items() if f}
    _need_families(fams, args.min_size, layers)
    return fams, store, "found on the corpus (workbench families defaults, no labels)"


def _need_families(fams: Families, min_size: int, layers: set[int] | None) -> None:
    if not fams:
        where = "" if layers is None else f" at --feature-layers {','.join(map(str, sorted(layers)))}"
        raise WorkbenchError(f"families must include at least one of >= {min_size} features{where}; got none. "
                             "Lower --min-size or choose other layers.")


def discover(loaded: LoadedModel, tcs: Transcoders, args: argparse.Namespace) -> dict[str, Any]:
    """`workbench manifold discover`: families per layer, ranked."""
    from analyses.manifolds.configs import DiscoveryConfig, IrreducibilityConfig
    from analyses.results import save_result
    from workbench.config_cli import config_from_args

    cfg = config_from_args(DiscoveryConfig, args,
                           irreducibility=config_from_args(IrreducibilityConfig, args, prefix="irr_"))
    if cfg.persistence == "ripser" and not ripser_available():
        raise WorkbenchError("--persistence ripser needs ripser; install it with `pip install ripser` "
                             "(the topology extra) or use --persistence auto.")
    layers = None if args.feature_layers is None else parse_layers(args.feature_layers, tcs.n_layers)
    fams, store, source = _families_and_corpus(loaded, tcs, args, layers)
    report: dict[str, Any] = {"families_from": source, "n_prompts": store.n_prompts, "n_rows": store.n_rows,
                              "feature_layers": {}}
    done = []
    for layer, families in fams.items():  # every layer's work first: a failed or interrupted run writes nothing
        est = ManifoldDiscovery.from_config(cfg)
        A, W = layer_inputs(store, tcs, layer)
        rep, result = discover_layer(A, W, layer, families, est, verbose=not args.quiet)
        done.append((layer, rep, result, discovery_displays(result, A, W, cfg.activation_threshold)))
    found = [f for _, _, result, _ in done for f in result.families]
    if not any(f.scored for f in found):  # a ranking of NaNs would replace an earlier good one
        raise WorkbenchError(f"discovery must score at least one family; got none of {len(found)} (e.g. "
                             f"{found[0].name!r}: {found[0].unscored_reason}). Lower --min-points or give a larger "
                             "corpus (--prompts).")
    clear_outputs(args.out, DISCOVERY_INDEX, DISCOVERY_FILES)  # the caller writes the index last
    for layer, rep, result, (ranking, cloud) in done:
        save_result(result, args.out / f"discovery_feature_layer{layer}.json")
        rep["plots"] = discovery_plots(args.out, layer, ranking, cloud)
        report["feature_layers"][str(layer)] = rep
    return report


def discovery_plots(out: Path, layer: int, ranking: Any, cloud: Any) -> list[str]:
    """PNG and SVG of the layer's ranking and of its top-ranked family's direction cloud; the file names."""
    written = []
    for ext in ("png", "svg"):
        written.append(ranking.savefig(out / f"ranking_feature_layer{layer}.{ext}"))
        if cloud is not None:
            written.append(cloud.savefig(out / f"top_family_feature_layer{layer}.{ext}"))
    return [p.name for p in written]


def discovery_displays(result: DiscoveryResult, A: Any, W: np.ndarray, activation_threshold: float) -> tuple[Any, Any]:
    """The layer's ranking display and its top-ranked scored family's cloud display (None without one)."""
    from analyses.manifolds.display import DiscoveryRankingDisplay, FamilyCloudDisplay

    top = next((f for f in result.families if f.scored), None)
    cloud = None
    if top is not None and result.feature_layer is not None:
        cloud = FamilyCloudDisplay.from_family(top, A, W, activation_threshold=activation_threshold)
    return DiscoveryRankingDisplay.from_result(result), cloud

"""`workbench manifold fit | steer | discover`: fit, steer along and discover feature manifolds.

* ``fit`` -- residual-stream vectors of a variable's prompts at one residual layer (0 = embedding
  output, n_layers = the last block's output before the final norm) and position; a
  :class:`~analyses.manifolds.fit.ManifoldFit` curve, the tiling of a feature set over its
  coordinate, and class-mean substitution on the real model (fitted vs random subspace vs full
  patching) on prompts the fit did not see (records marked held out, else cross-fitting).
  Writes ``manifold.json``, ``fit.json`` (+ safetensors: the whole fit) and PNG/SVG plots.
* ``steer`` -- moves each prompt's vector to other values' angles on a fitted curve and reports
  how often the answer follows (``steer.json``: ``success_rate``, ``n``).
* ``discover`` -- unsupervised discovery on feature families (found on the corpus without labels, as
  ``workbench families`` finds them; or given: ``--families`` JSON or a world's label families ``--labels``):
  the families ranked by ring evidence, per layer.

Bad input (a value not in --values, fewer than 3 values, too few points per value, a layer out
of range, ...) is one line on stderr and exit 2.
"""

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer.io import atomic_write_json
from workbench.cli_model import add_model_placement, model_placement
from workbench.cli_safety import int_items, list_items
from workbench.cli_threads import add_threads_argument, threaded
from workbench.provenance import run_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ManifoldRunConfig:
    """The tiling and real-model checks of `workbench manifold fit` and `steer`."""

    causal_prompts: int = 32
    """Prompts whose class-mean substitution runs on the real model (a seeded sample; 0: no check)."""
    causal_targets: int = 2
    """Target values v' per prompt (a seeded sample)."""
    folds: int = 5
    """Cross-fitting folds of the causal check when no record is marked split='heldout'."""
    freeze_attention: bool = False
    """Replay the clean attention patterns (default: recomputed, the change propagates)."""
    feature_layer: int | None = None
    """Transcoder layer whose features are tiled (default: the one writing into the fit's layer, L - 1)."""
    min_feature_rate: float = 0.05
    """Without --features or a world family's features (its per-feature truth, 3 or more in that layer): tile the
    features of that layer firing on this share of the points."""
    seed: int = 0
    """Seed of the samples, folds and random subspaces."""

    def __post_init__(self) -> None:
        from analyses.base import check_number

        check_number("causal_prompts", self.causal_prompts, lo=0, integer=True)
        check_number("causal_targets", self.causal_targets, lo=1, integer=True)
        check_number("folds", self.folds, lo=2, integer=True)
        if self.feature_layer is not None:
            check_number("feature_layer", self.feature_layer, lo=0, integer=True)
        check_number("min_feature_rate", self.min_feature_rate, lo=0, hi=1)
        check_number("seed", self.seed, lo=0, integer=True)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from analyses.manifolds.configs import DiscoveryConfig, IrreducibilityConfig, ManifoldFitConfig
    from workbench.cli_safety import path_arg
    from workbench.config_cli import add_config_arguments

    p = sub.add_parser("manifold", help="fit, steer along and discover feature manifolds",
                       description=(__doc__ or "").split("\n\n")[0])
    actions = p.add_subparsers(dest="manifold_action", metavar="ACTION")
    fit = actions.add_parser("fit", help="fit a variable's curve at one layer and position, with checks",
                             description="Fit a variable's curve at one layer and position, with checks.")
    _add_model(fit)
    _add_source(fit, values=True)
    fit.add_argument("--layer", required=True,
                     help="residual layer (0 = embedding output, n_layers = the last block's output), or 'auto': "
                          "fit every layer on the fit prompts and keep the one with the largest between-class share")
    fit.add_argument("--position", default="last", choices=("last", "value"),
                     help="the last token, or each record's 'position' (a world: the family word)")
    fit.add_argument("--features", default=None, help="comma-separated features of --feature-layer to tile")
    fit.add_argument("--out", type=path_arg, required=True, help="output folder")
    add_config_arguments(fit, ManifoldFitConfig, exclude=("period",))
    add_config_arguments(fit, ManifoldRunConfig)
    fit.set_defaults(func=run_fit)
    steer = actions.add_parser("steer", help="steer prompts along a fitted curve on the real model",
                             description="Steer prompts along a fitted curve on the real model.")
    steer.add_argument("--fit", type=path_arg, required=True, help="manifold.json written by `manifold fit`")
    steer.add_argument("--model", default=None, help="model folder (default: the fit's)")
    steer.add_argument("--transcoders", default=None, help="transcoder folder (default: the fit's)")
    _add_source(steer, values=False)
    steer.add_argument("--out", type=path_arg, required=True, help="steer.json to write")
    steer.add_argument("--freeze-attention", action=argparse.BooleanOptionalAction, default=False,
                       help="replay the clean attention patterns (default: no)")
    steer.set_defaults(func=run_steer)
    disc = actions.add_parser("discover", help="rank feature families by ring (manifold) evidence",
                             description="Rank feature families by ring (manifold) evidence.")
    _add_model(disc)
    disc.add_argument("--prompts", required=True, help="corpus: .jsonl records or plain text lines")
    disc.add_argument("--allow-unk", action="store_true",
                      help="read words the tokenizer does not know as its unknown token (default: refuse)")
    fams = disc.add_mutually_exclusive_group()
    fams.add_argument("--families", type=path_arg,
                      help="`workbench families` output, or a JSON list of {layer, features, label?} (default, "
                           "without --labels: families found on --prompts as `workbench families` finds them)")
    fams.add_argument("--labels", type=path_arg, help="a world's labels JSONL: label families family/side")
    disc.add_argument("--min-size", type=int, default=5, help="smallest family scored (default 5)")
    disc.add_argument("--feature-layers", default=None,
                      help="comma-separated transcoder layers of the families (default: every family's)")
    disc.add_argument("--out", type=path_arg, required=True, help="output folder")
    add_config_arguments(disc, DiscoveryConfig, exclude=("irreducibility",))
    add_config_arguments(disc, IrreducibilityConfig, prefix="irr_")
    disc.set_defaults(func=run_discover)
    for action in (fit, steer, disc):
        add_model_placement(action)
        add_threads_argument(action)
        action.add_argument("--quiet", "-q", action="store_true",
                            help="no progress bars or info logs" if action is disc else "no info logs")
        action.set_defaults(func=threaded(action.get_default("func")))
    p.set_defaults(func=_no_action)




def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="local Hugging Face model folder")
    p.add_argument("--transcoders", required=True, help="transcoder folder (circuit-tracer formats)")


def _add_source(p: argparse.ArgumentParser, *, values: bool) -> None:
    p.add_argument("--prompts", default=None, help="JSONL records {prompt, value, position?, answers?, split?}")
    if values:
        p.add_argument("--values", default=None, help="comma-separated value names in their order (with --prompts)")
    p.add_argument("--world", type=Path, default=None, help="a demo world folder (instead of --prompts)")
    p.add_argument("--family", default=None, help="the world's family (day, month, hue)")


def _no_action(args: argparse.Namespace) -> int:
    from tracer.errors import WorkbenchError

    raise WorkbenchError("workbench manifold needs an action; got none. Try `workbench manifold fit --help`.")


def _analysis_errors() -> Any:
    """A context manager mapping the analyses' ValueError / TypeError to WorkbenchError (exit 2)."""
    import contextlib

    from tracer.errors import WorkbenchError

    @contextlib.contextmanager
    def mapped() -> Any:
        try:
            yield
        except WorkbenchError:
            raise  # already one line, with the fields its flag hint names
        except (ValueError, TypeError) as err:
            raise WorkbenchError(str(err).splitlines()[0]) from None

    return mapped()


def _load(model: str, transcoders: str, device: Any) -> tuple[Any, Any]:
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    loaded = load_model(model, backend="auto", device=device)
    return loaded, load_transcoders(transcoders, dtype=loaded.dtype, n_layers=loaded.n_layers,
                                    d_model=loaded.d_model)


def _inputs(args: argparse.Namespace, loaded: Any, position: str, kind: str) -> Any:
    from tracer.errors import WorkbenchError
    from workbench.manifold_inputs import prompt_inputs
    from workbench.manifold_world import world_inputs

    if (args.prompts is None) == (args.world is None):
        raise WorkbenchError("exactly one of --prompts or --world (with --family) must be given; got "
                             f"{'both' if args.prompts else 'neither'}.")
    if args.world is not None:
        if not args.family:
            raise WorkbenchError("--family must be given with --world; got none. Example: --family day.")
        if getattr(args, "values", None) is not None:  # it was ignored: the world's family names its values
            raise WorkbenchError(f"--values is for --prompts; got --values {args.values!r} with --world, whose family "
                                 "names its own values. Drop --values.")
        return world_inputs(loaded, Path(args.world), args.family, position, loaded.n_layers, kind)
    names = getattr(args, "values", None)
    if names is None:
        raise WorkbenchError("--values must be given with --prompts; got none. Example: --values Mon,Tue,Wed.")
    return prompt_inputs(loaded, args.prompts, list_items(names, "--values"), position)


def _layer_arg(text: str) -> int:
    from tracer.errors import WorkbenchError

    try:
        return int(text)
    except ValueError:
        raise WorkbenchError(f"--layer must be an integer residual layer or 'auto'; got {text!r}.") from None


def check_layer(layer: int, n_layers: int, name: str = "--layer", hint: str = "") -> int:
    from tracer.errors import WorkbenchError

    if not 0 <= layer <= n_layers:
        raise WorkbenchError(f"{name} must be in [0, {n_layers}] (residual layers: 0 = embedding output, "
                             f"{n_layers} = the last block's output); got {layer}.{hint}")
    return layer


def run_fit(args: argparse.Namespace) -> int:
    from analyses.manifolds.configs import ManifoldFitConfig
    from workbench.config_cli import config_from_args
    from workbench.manifold_fit_run import FIT_INDEX, FIT_OUTPUTS, fit_and_check

    t0 = time.perf_counter()
    _, device = model_placement(args)  # a bad --device is one line before anything is written
    with _analysis_errors():
        fit_cfg = config_from_args(ManifoldFitConfig, args, period=None)
        run_cfg = config_from_args(ManifoldRunConfig, args)
    _check_out_folder(args, (FIT_INDEX, *FIT_OUTPUTS), [args.prompts, args.world])
    layer = None if args.layer == "auto" else _layer_arg(args.layer)
    features = None if args.features is None else int_items(args.features, "--features")
    loaded, tcs = _load(args.model, args.transcoders, device)
    layer = None if layer is None else check_layer(layer, loaded.n_layers)
    check_feature_args(tcs, layer, run_cfg.feature_layer, features)
    inputs = _inputs(args, loaded, args.position, tcs.kind)
    target = args.out.resolve()  # 'a/new/../x' would make 'a/new' on the way: create the resolved path only
    made = [p for p in (target, *target.parents) if not p.exists()]  # the folders mkdir creates, deepest first
    target.mkdir(parents=True, exist_ok=True)
    try:
        with _analysis_errors():
            report = fit_and_check(loaded, tcs, inputs, layer, args.position, args.out, fit_cfg, run_cfg, features)
    except BaseException:
        for folder in made:  # a refused prompt leaves no empty --out (or parents of it) behind
            if any(folder.iterdir()):
                break
            folder.rmdir()
        raise
    report.update({"model": str(Path(args.model).resolve()), "transcoders": str(Path(args.transcoders).resolve()),
                   "seconds": round(time.perf_counter() - t0, 2), "run": run_record(args)})
    atomic_write_json(args.out / FIT_INDEX, report)
    logger.info("wrote %s (k=%d, R²=%.3f)", args.out / FIT_INDEX, report["frequency"], report["r2"])
    return 0


def _check_out_folder(args: argparse.Namespace, names: tuple[str, ...], inputs: list[Any]) -> None:
    """--out (a folder) and the files it will hold, refused up front when they are inputs, inside an
    input folder, or not writable."""
    from workbench.cli_safety import check_out, check_out_files

    given = [args.model, args.transcoders, *inputs]
    check_out(args.out, inputs=given, folder=True)
    check_out_files(args.out, names, inputs=given)


def check_feature_args(tcs: Any, layer: int | None, feature_layer: int | None, features: list[int] | None) -> None:
    """--feature-layer and --features checked against the transcoders before any work (``layer`` None:
    chosen later by the scan, so --features is checked against every layer the scan may pick)."""
    from tracer.errors import WorkbenchError

    if feature_layer is not None and feature_layer >= tcs.n_layers:
        raise WorkbenchError(f"--feature-layer must be in [0, {tcs.n_layers - 1}]; got {feature_layer}.")
    if features is None:
        return
    if feature_layer is not None:
        candidates = [feature_layer]
    else:
        candidates = [max(layer - 1, 0)] if layer is not None else list(range(tcs.n_layers))
    width = min(tcs.layers[c].d_transcoder for c in candidates)
    bad = [f for f in features if not 0 <= f < width]
    if bad:
        where = f"transcoder layer {candidates[0]}" if len(candidates) == 1 else "every transcoder layer"
        raise WorkbenchError(f"--features must be in [0, {width}) for {where}; got {bad[0]}.")


def run_steer(args: argparse.Namespace) -> int:
    from workbench.cli_safety import check_out
    from workbench.manifold_fit_run import load_fit, steer_inputs

    t0 = time.perf_counter()
    _, device = model_placement(args)
    info, fit = load_fit(args.fit)
    fit_file = Path(args.fit).parent / str(info["fit_file"])
    check_out(args.out, inputs=[args.fit, fit_file, fit_file.with_suffix(".safetensors"), args.model, args.transcoders,
                                args.prompts, args.world])
    if fit.layer is None:
        from tracer.errors import WorkbenchError

        raise WorkbenchError(f"--fit must hold a fit of one residual layer; got layer None in {args.fit!r}. "
                             "Refit with `workbench manifold fit --layer L`.")
    loaded, tcs = _load(args.model or info["model"], args.transcoders or info["transcoders"], device)
    fit_model = info.get("model")  # a hand-made manifold.json may not record it (then --model is required)
    if args.model and fit_model is not None and str(Path(args.model).resolve()) != str(fit_model):
        logger.warning("--model %s is not the model the fit was made on (%s): its subspace and class means are "
                       "applied to this model as they are", args.model, fit_model)
    check_layer(int(fit.layer), loaded.n_layers, "the fit's layer", " Pass the model it was fitted on (--model).")
    if fit.centre.shape[0] != loaded.d_model:
        from tracer.errors import WorkbenchError

        raise WorkbenchError(f"--fit must be fitted on this model's residual stream (d_model {loaded.d_model}); got "
                             f"a fit in {fit.centre.shape[0]} dimensions in {args.fit!r}. Pass the model it was "
                             "fitted on (--model) or fit again.")
    inputs = _inputs_for_steer(args, loaded, fit, tcs.kind)
    with _analysis_errors():
        report = steer_inputs(loaded, tcs, fit, inputs, freeze_attention=args.freeze_attention,
                              heldout_only=args.world is not None)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report.update({"model": str(Path(args.model or info["model"]).resolve()),
                   "fit_model": None if fit_model is None else str(fit_model),
                   "transcoders": str(Path(args.transcoders or info["transcoders"]).resolve())})  # kind of --world
    report["run"] = run_record(args)
    atomic_write_json(args.out, report)
    logger.info("wrote %s: steering success %.3f (n=%d)", args.out, report["success_rate"], report["n"])
    return 0


def _inputs_for_steer(args: argparse.Namespace, loaded: Any, fit: Any, kind: str) -> Any:
    from workbench.manifold_inputs import prompt_inputs

    position = str(fit.position)
    if args.prompts is not None and args.world is None:
        return prompt_inputs(loaded, args.prompts, list(fit.value_names), position, values_required=False)
    inputs = _inputs(args, loaded, position, kind)
    if list(inputs.names) != list(fit.value_names):
        from tracer.errors import WorkbenchError

        theirs, fitted = ", ".join(inputs.names[:3]), ", ".join(fit.value_names[:3])
        raise WorkbenchError(f"--family must be the fitted variable; got {args.family!r}, whose values ({theirs}, "
                             f"...) are not the fit's ({fitted}, ...). Pass the family the fit was made on.")
    return inputs


def run_discover(args: argparse.Namespace) -> int:
    from workbench.manifold_discover_run import DISCOVERY_INDEX, discover

    t0 = time.perf_counter()
    _, device = model_placement(args)
    _check_out_folder(args, (DISCOVERY_INDEX,), [args.prompts, args.families, args.labels])
    loaded, tcs = _load(args.model, args.transcoders, device)
    with _analysis_errors():
        report = discover(loaded, tcs, args)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["run"] = run_record(args)
    atomic_write_json(args.out / DISCOVERY_INDEX, report)
    for layer, rep in report["feature_layers"].items():
        top = ", ".join(f"{name} ({rep['families'][name]['score']:.2f})" for name in rep["ranking"][:3])
        logger.info("feature layer %s: %d families ranked; first %s", layer, len(rep["ranking"]), top)
    logger.info("wrote %s", args.out / DISCOVERY_INDEX)
    return 0

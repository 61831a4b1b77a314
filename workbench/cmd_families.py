"""`workbench families`: feature families over whole transcoder dictionaries.

    workbench families --transcoders T [--model M --prompts FILE] [--layer L|all] [--labels L] --out families.json

Writes ``{"families": [{"layer", "features", "label"}...], ...}``: a family within one layer (every
family by default) has an int ``layer`` and ``features`` the feature indices; with
``--cross-layer``, a family spanning several layers lists them in ``layer`` and holds [layer,
feature] pairs in ``features``. A token-class family also has ``tokens`` (ids), ``token_words`` (their
text) and ``token_sides`` ("read" / "predict"), and is labelled by its tokens when no labels name it.
``--prompts`` is unlabelled text, one prompt per line: its feature activations (run through
``--model``) are the co-activation evidence, and its tokens with the model's unembedding the token-class
evidence (``--no-token-families`` turns that off). Estimator flags come from
:class:`analyses.families.config.FamiliesConfig`.
"""

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from workbench.cli_model import add_model_placement, model_placement
from workbench.cli_threads import add_threads_argument, threaded

logger = logging.getLogger(__name__)

def _choices() -> dict[str, list[str]]:
    """The choice fields' values, from the analyses' own constants (the config validates against the same)."""
    from analyses.families.cluster import CLUSTERINGS
    from analyses.families.coactivation import WEIGHTINGS
    from analyses.families.config import COACTIVATIONS, TOKEN_CLUSTERINGS, TOKEN_SELECTIONS
    from analyses.families.knn import KNN_METHODS

    return {"knn": list(KNN_METHODS), "coactivation": list(COACTIVATIONS), "weighting": list(WEIGHTINGS),
            "clustering": list(CLUSTERINGS), "token_clustering": list(TOKEN_CLUSTERINGS),
            "token_selection": list(TOKEN_SELECTIONS)}


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from analyses.families.config import FamiliesConfig
    from workbench.config_cli import add_config_arguments, plain_help

    p = sub.add_parser("families", help="feature families over whole transcoder dictionaries",
                       description=plain_help(__doc__ or ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transcoders", required=True, help="transcoder folder (circuit-tracer formats)")
    p.add_argument("--model", default=None, help="local Hugging Face model folder (needed with --prompts)")
    add_model_placement(p, used="(with --prompts)")
    p.add_argument("--prompts", default=None,
                   help="unlabelled text, one prompt per line: co-activation and token-class evidence (needs --model)")
    p.add_argument("--allow-unk", action="store_true",
                   help="with --prompts: read words the tokenizer does not know as its unknown token (default: refuse)")
    p.add_argument("--layer", default="all", help="a layer index or 'all' (default all)")
    p.add_argument("--labels", default=None, help="feature labels (our JSONL or a Neuronpedia export)")
    p.add_argument("--clt-mode", default="concat", choices=["concat", "into", "sum"],
                   help="CLT decoders compared: concatenated over output layers, into --layer, or summed")
    p.add_argument("--cross-layer", action="store_true",
                   help="let families span layers (clusters every chosen layer's features together)")
    p.add_argument("--out", required=True, help="output JSON path")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    add_threads_argument(p, default=None)
    est = p.add_argument_group("estimator (analyses.families.FamiliesConfig)")
    add_config_arguments(est, FamiliesConfig, exclude=("per_layer",), choices=_choices())  # per_layer: --cross-layer
    p.set_defaults(func=threaded(run_families))


def _config(args: argparse.Namespace) -> Any:
    from analyses.families.config import FamiliesConfig
    from workbench.config_cli import config_from_args

    return config_from_args(FamiliesConfig, args, per_layer=not args.cross_layer)


def _check_args(args: argparse.Namespace) -> None:
    from tracer.errors import WorkbenchError
    from workbench.cli_safety import check_out

    if args.prompts is not None and args.model is None:
        raise WorkbenchError("--prompts needs --model; got no --model. Pass the model the transcoders were "
                             "trained on.")
    if args.model is not None and args.prompts is None:  # the model only reads the prompts: alone it changes nothing
        raise WorkbenchError(f"--model needs --prompts; got --model {args.model!r} alone. Pass --prompts FILE "
                             "(unlabelled text, one prompt per line) for co-activation and token-class evidence, or "
                             "drop --model.")
    if args.prompts is not None and not Path(args.prompts).is_file():
        raise WorkbenchError(f"--prompts must be a text file, one prompt per line; got {args.prompts!r}.")
    check_out(args.out, inputs=[args.transcoders, args.model, args.labels, args.prompts])
    if args.layer != "all" and not args.layer.lstrip("-").isdigit():
        raise WorkbenchError(f"--layer must be a layer index or 'all'; got {args.layer!r}.")


def _layers(text: str, n_layers: int) -> str | int:
    from tracer.errors import WorkbenchError

    if text == "all":
        return "all"
    layer = int(text)
    if not 0 <= layer < n_layers:
        raise WorkbenchError(f"--layer must be in [0, {n_layers}) or 'all'; got {text!r}.")
    return layer


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a prompt file (:func:`tracer.activations.read_prompts`: one per line, or JSONL
    records whose ``prompt`` is taken), for the commands that read unlabelled text."""
    from tracer.activations import read_prompts as read_records

    return [rec.prompt for rec in read_records(path)]


def prompt_sample(loaded: Any, transcoders: Any, prompts: list[str], layer: Any, *,
                  verbose: bool = False, allow_unk: bool = False) -> tuple[Any, Any, Any]:
    """(sparse (n_token_rows, n_features) activations at every position >= 1 of every prompt (BOS excluded), rows
    prompt by prompt, columns in the order of ``decoder_matrix``'s rows (each layer's features in turn, ``layer``
    giving each row's layer); (n_token_rows,) each row's token id and the next one's in its prompt (-1 at a
    prompt's end)), from one collection (the prompts are tokenized once)."""
    import numpy as np

    order = list(dict.fromkeys(np.asarray(layer).tolist()))  # layers in row order
    A, _, tokens, next_tokens, _ = collect_feature_matrix(loaded, transcoders, prompts, order, verbose=verbose,
                                                         allow_unk=allow_unk)
    return A, tokens, next_tokens


def name_token_families(families: list[dict[str, Any]], loaded: Any, shown: int = 5) -> None:
    """Give each token-class family (``tokens`` in its JSON row) its tokens' text (``token_words``), and a label
    made from them where its members' labels gave none: "predicts Monday, Tuesday, ... (7 tokens)"."""
    from tracer.attribution.packaging import decode_tokens

    for fam in families:
        if "tokens" not in fam:
            continue
        words = [decode_tokens(loaded, [int(t)]) for t in fam["tokens"]]
        fam["token_words"] = words
        if fam.get("label") is None:
            verbs = " and ".join({"read": "reads", "predict": "predicts"}[side] for side in fam["token_sides"])
            more = ", ..." if len(words) > shown else ""
            fam["label"] = f"{verbs} {', '.join(words[:shown])}{more} ({len(words)} tokens)"


def token_texts(loaded: Any) -> list[str]:
    """(d_vocab,) the text of every token id: the tokenizer's ``decode`` of it alone (the one method every
    tokenizer we load has; ids it lacks, such as padded unembedding rows, decode to empty text), or without a
    tokenizer the ids' numbers."""
    tok = loaded.tokenizer
    if tok is None:
        return [str(i) for i in range(loaded.d_vocab)]
    return [tok.decode([i]) for i in range(loaded.d_vocab)]


def collect_feature_matrix(loaded: Any, transcoders: Any, prompts: list[str], layers: list[int], *,
                           verbose: bool = False, allow_unk: bool = False) -> tuple[Any, Any, Any, Any, Any]:
    """(sparse (n_token_rows, n_columns) activations, (n_columns, 2) (layer, feature) keys, and (n_token_rows,)
    each row's token id, the next one's in its prompt (-1 at a prompt's end) and its prompt) of ``layers``' features
    over the prompts (:meth:`tracer.activations.ActivationStore.feature_matrix`), collected in batches by
    :func:`tracer.activations.collect_activations` into a temporary folder."""
    import tempfile

    from tracer.activations import ActivationConfig, collect_activations

    config = ActivationConfig(feature_layers=tuple(layers))
    with tempfile.TemporaryDirectory(prefix="workbench-activations-") as tmp:
        store = collect_activations(loaded, transcoders, prompts, tmp, config, allow_unk=allow_unk, verbose=verbose)
        return store_sample(store, layers)


def store_sample(store: Any, layers: list[int]) -> tuple[Any, Any, Any, Any, Any]:
    """What :func:`collect_feature_matrix` returns, read from an activation run that holds ``layers``."""
    from analyses.families.roles import row_tokens

    rows = store.row_table()
    return (*store.feature_matrix(list(layers)), *row_tokens(rows["prompt"], rows["pos"], rows["token"]),
            rows["prompt"][rows["pos"] > 0])  # the prompt of each row the feature matrix keeps (BOS rows left out)


def token_inputs(loaded: Any, tokens: Any, next_tokens: Any) -> dict[str, Any]:
    """FeatureFamilies.fit's token-class inputs for a sample's row tokens (the model's unembedding and token texts)."""
    return {"tokens": tokens, "next_tokens": next_tokens, "token_vectors": loaded.W_U.detach().float().cpu().numpy(),
            "token_words": token_texts(loaded)}


def fit_families(cfg: Any, X: Any, layer: Any, feature: Any, acts: Any, tokens: dict[str, Any], labels: Any,
                 verbose: bool) -> Any:
    """FeatureFamilies fitted as ``workbench families`` fits it: co-activation profiles over every chosen layer's
    features (the tuned setting), token classes when ``tokens`` holds :func:`token_inputs`; refusals are one line."""
    import numpy as np

    from analyses.families import FeatureFamilies
    from tracer.errors import WorkbenchError

    est = FeatureFamilies.from_config(cfg)
    try:
        est.fit(X, layer=layer, feature=feature, activations=acts, context=acts,
                context_self=None if acts is None else np.arange(X.shape[0]), labels=labels, verbose=verbose,
                tokens=tokens.get("tokens"), next_tokens=tokens.get("next_tokens"),
                token_vectors=tokens.get("token_vectors"), token_words=tokens.get("token_words"))
    except (ValueError, TypeError) as err:
        raise WorkbenchError(str(err)) from None
    return est


def _sample(args: argparse.Namespace, cfg: Any, tc: Any, prompts: list[str], layer: Any,
            device: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(the model, the activation sample over ``prompts``, the token-class inputs of FeatureFamilies.fit: empty
    without token families)."""
    from tracer.models import load_model

    loaded = load_model(args.model, device=device)
    acts, ids, nexts = prompt_sample(loaded, tc, prompts, layer, verbose=not args.quiet, allow_unk=args.allow_unk)
    return loaded, acts, token_inputs(loaded, ids, nexts) if cfg.token_families else {}


def run_families(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _check_args(args)
    _, device = model_placement(args)  # a bad --device is one line before any loading
    cfg = _config(args)

    from analyses.families import decoder_matrix
    from tracer.errors import WorkbenchError
    from tracer.io import atomic_write_json
    from tracer.labels import check_labels_match, load_labels
    from tracer.transcoders.loaders import load_transcoders

    tc = load_transcoders(args.transcoders)
    if tc.kind != "clt" and args.clt_mode != "concat":
        logger.warning("--clt-mode %s has no effect: %s holds per-layer (%s) transcoders, one decoder row each",
                       args.clt_mode, args.transcoders, tc.kind)
    layers = _layers(args.layer, tc.n_layers)
    try:
        X, layer, feature = decoder_matrix(tc, layers, clt_mode=args.clt_mode)
    except ValueError as err:
        raise WorkbenchError(str(err)) from None
    labels = load_labels(args.labels) if args.labels else None
    if labels is not None:
        check_labels_match(labels, n_layers=tc.n_layers, scan=tc.scan, source=str(args.labels), owner="--transcoders")
    acts, prompts, loaded = None, [], None
    tokens: dict[str, Any] = {}
    if args.prompts is not None:
        prompts = read_prompts(args.prompts)
        loaded, acts, tokens = _sample(args, cfg, tc, prompts, layer, device)
    from tracer.transcoders.identity import transcoder_signature
    from workbench.provenance import run_record

    est = fit_families(cfg, X, layer, feature, acts, tokens, labels, verbose=not args.quiet)

    families = est.result_.to_json_families()
    if tokens:
        name_token_families(families, loaded)
    doc = {"families": families, "n_features": int(X.shape[0]),
           "n_families": est.n_families_, "transcoders": str(args.transcoders),
           "transcoder_signature": transcoder_signature(args.transcoders), "layer": args.layer,
           "coactivation_evidence": acts is not None, "token_evidence": bool(tokens),
           "n_prompts": len(prompts),
           "n_token_rows": 0 if acts is None else int(acts.shape[0]),
           "config": dataclasses.asdict(cfg),
           "run": run_record(args),
           "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(args.out, doc)
    if not args.quiet:
        print(f"wrote {args.out}: {est.n_families_} families over {X.shape[0]} features", file=sys.stderr)
    return 0

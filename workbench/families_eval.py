"""Score :class:`analyses.families.FeatureFamilies` on a demo world against its per-feature truth.

The estimator sees only decoder rows and an *unlabelled* activation sample of the world's corpus
(fresh generator sentences on their own RNG stream, run through the model and the transcoders) with
the sample's token ids and the model's unembedding;
the truth (``feature_truth_{plt,clt}.jsonl``) is used only to score. Family ARI is computed per
layer over the features the truth puts in a family (features in no predicted family count as
singletons), and averaged over layers; a random baseline (the same predicted family sizes,
members shuffled) and the decoder-only ARI are reported next to it.

Hyper-parameters are chosen by :func:`tune` on a *tuning set* (the tiny world and the shipped
world's PLT) and then scored once on a held-out set (the shipped world's CLT).
"""

import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

TRUTH_KEYS = ("family", "side_family")


@dataclass(frozen=True, kw_only=True)
class WorldSample:
    """Decoder rows and an unlabelled activation sample of one transcoder set of a world."""

    X: np.ndarray
    """(n_features, dim) decoder rows, layer by layer (CLT: placed at their output layers' blocks)."""
    layer: np.ndarray
    """(n_features,) layer of each row."""
    feature: np.ndarray
    """(n_features,) index of each row within its layer."""
    activations: sp.csr_matrix
    """(n_rows, n_features) activations on the sample's token rows (columns = rows of X)."""
    n_sentences: int
    """Sentences in the sample."""
    row_task: np.ndarray
    """(n_rows,) each row's task. Never given to the estimator: only the task-profile diagnostic
    (a supervised reference) reads it."""
    row_word: np.ndarray
    """(n_rows,) each row's word (the text itself, no label): read by the supernode scorer's word-share
    diagnostic."""
    tokens: np.ndarray
    """(n_rows,) each row's token id (the text itself, no label)."""
    next_tokens: np.ndarray
    """(n_rows,) the next row's token id in the same sentence (-1 at a sentence's last token)."""
    token_vectors: np.ndarray
    """(d_vocab, d_model) the model's unembedding rows."""
    token_words: list[str]
    """(d_vocab,) each token's text (the tokenizer's)."""


def world_sample(world_dir: str | Path, name: str, *, n_sentences: int = 3000, seed: int = 0,
                 stream: str = "families-sample", sentences: Sequence[Any] | None = None) -> WorldSample:
    """Decoders and activations of transcoder set ``name`` ("plt" / "clt") of a built world on
    ``n_sentences`` fresh generator sentences (no labels are kept), or on ``sentences`` (generator sentences)
    when given. The activations are collected as ``workbench families --prompts`` collects them
    (:func:`workbench.cmd_families.prompt_sample`)."""
    from analyses.families import decoder_matrix
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.cmd_families import prompt_sample, token_texts
    from workbench.world import generator as gen
    from workbench.world.evaluate import manifest_spec

    d = Path(world_dir)
    loaded = load_model(d / "model")
    tc = load_transcoders(d / name, n_layers=loaded.n_layers, d_model=loaded.d_model)
    spec = manifest_spec(json.loads((d / "manifest.json").read_text()))
    sents = list(sentences) if sentences is not None else gen.sample_corpus(spec, n_sentences, seed=seed, stream=stream)
    X, layer, feature = decoder_matrix(tc, "all")  # (L * F, dim); CLT decoders placed at their output layers
    prompts = [" ".join(s.words) for s in sents]
    A, tokens, next_tokens = prompt_sample(loaded, tc, prompts, layer)  # (n_rows, L * F), (n_rows,) x 2
    row_task = np.asarray([s.task for s in sents for _ in s.words])
    row_word = np.asarray([w for s in sents for w in s.words])
    return WorldSample(X=X, layer=layer, feature=feature, activations=A, n_sentences=len(sents), row_task=row_task,
                       row_word=row_word, tokens=tokens, next_tokens=next_tokens,
                       token_vectors=loaded.W_U.detach().float().cpu().numpy(), token_words=token_texts(loaded))


def truth_labels(truth: dict[tuple[int, int], Any], layer: int, d_tc: int, key: str = "family") -> dict[int, str]:
    """feature -> its truth family (``key="side_family"``: "output:day"), for the features of
    ``layer`` that have one."""
    out = {}
    for f in range(d_tc):
        t = truth.get((layer, f))
        if t is not None and t.family is not None:
            out[f] = t.family if key == "family" else f"{t.side}:{t.family}"
    return out


def _singletons(pred: np.ndarray) -> np.ndarray:
    out = pred.copy()
    none = out < 0
    out[none] = np.arange(int(none.sum())) + (out.max() + 1 if out.size else 0)
    return out


def family_ari(pred: np.ndarray, layer: np.ndarray, feature: np.ndarray, truth: dict[tuple[int, int], Any], *,
               key: str = "family", shuffle_seed: int | None = None) -> dict[int, float]:
    """Per-layer ARI of predicted families against the truth's, over the truth's family features;
    with ``shuffle_seed``, of a random baseline: the predictions permuted within the layer."""
    from sklearn.metrics import adjusted_rand_score

    out: dict[int, float] = {}
    for lay in np.unique(layer):
        rows = np.flatnonzero(layer == lay)
        fam = truth_labels(truth, int(lay), int(feature[rows].max()) + 1, key)
        p = _singletons(pred[rows])
        if shuffle_seed is not None:
            p = np.random.default_rng(shuffle_seed + int(lay)).permutation(p)
        keep = [i for i, f in enumerate(feature[rows].tolist()) if f in fam]
        if len(keep) >= 2:
            out[int(lay)] = float(adjusted_rand_score([fam[int(feature[rows][i])] for i in keep], p[keep]))
    return out


def score(sample: WorldSample, truth: dict[tuple[int, int], Any], params: dict[str, Any], *,
          use_activations: bool = True) -> dict[str, Any]:
    """Fit FeatureFamilies with ``params`` (co-activation evidence from the sample unless
    ``use_activations`` is False) and score it: per-layer ARI for both truth keys, their means,
    a random baseline, the number of families and the fit time."""
    from analyses.families import FeatureFamilies

    t0 = time.perf_counter()
    est_params = {k: v for k, v in params.items() if k != "context"}
    est = FeatureFamilies(**est_params)
    act = sample.activations if use_activations else None
    wide = use_activations and params.get("context", "all") == "all"
    est.fit(sample.X, layer=sample.layer, feature=sample.feature, activations=act,
            context=act if wide else None, context_self=np.arange(sample.X.shape[0]) if wide else None,
            tokens=sample.tokens if use_activations else None,
            next_tokens=sample.next_tokens if use_activations else None,
            token_vectors=sample.token_vectors if use_activations else None,
            token_words=sample.token_words if use_activations else None)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"params": params, "coactivation_evidence": use_activations,
                           "n_families": est.n_families_, "fit_seconds": round(seconds, 2)}
    for key in TRUTH_KEYS:
        per = family_ari(est.labels_, sample.layer, sample.feature, truth, key=key)
        rand = family_ari(est.labels_, sample.layer, sample.feature, truth, key=key, shuffle_seed=0)
        out[f"ari_{key}"] = {"per_layer": per, "mean": float(np.mean(list(per.values())))}
        out[f"random_ari_{key}"] = float(np.mean(list(rand.values())))
    out["ari_family_coverage_0.8"] = confident_ari(est.labels_, sample, truth)
    return out


GRID: dict[str, list[Any]] = {
    "coactivation": ["profile", "jaccard"],
    "weighting": ["activation", "binary"],
    "coactivation_weight": [0.5, 0.75, 1.0],
    "context": ["layer", "all"],
    "clustering_cut": [("average", 0.3), ("average", 0.4), ("average", 0.5), ("average", 0.6), ("average", 0.7),
                       ("hdbscan", 3), ("hdbscan", 5)],
}
"""The tuning grid: co-activation kind, weighting, weight, context (the profile is over the
layer's own features or every layer's), and clustering with its cut (average-linkage distance
threshold, or HDBSCAN min_cluster_size). Scored without token-class evidence; the best point is then
tuned further over :data:`TOKEN_GRID`."""

TOKEN_GRID: dict[str, list[Any]] = {
    "token_clustering": [("average", 0.3), ("average", 0.4), ("average", 0.5), ("average", 0.6), ("average", 0.7),
                         ("average", 0.8), ("hdbscan", "leaf"), ("hdbscan", "eom")],
    "fold_case": [False, True],
    "min_token_class": [3, 5],
    "min_token_share": [0.3, 0.5],
}
"""The token-class evidence (:mod:`analyses.families.tokens`) tried on top of :data:`GRID`'s best point: the
classes' clustering (average linkage with its cut, or HDBSCAN with its selection), case folding, the smallest
variable (in words) and the share that makes a feature a member."""


def grid_params() -> list[dict[str, Any]]:
    """Every FeatureFamilies parameter set of :data:`GRID`."""
    out = []
    for co, wt, lam, ctx, (cl, cut) in itertools.product(*GRID.values()):
        if co == "jaccard" and (ctx == "all" or wt == "activation"):
            continue  # Jaccard reads only the features' own (binary) firing sets
        p: dict[str, Any] = {"coactivation": co, "weighting": wt, "coactivation_weight": lam, "context": ctx,
                             "clustering": cl, "token_families": False}
        p.update({"distance_threshold": cut} if cl == "average" else {"min_cluster_size": cut})
        out.append(p)
    return out


TUNING_SEEDS = (0, 1, 2, 3)
"""Token-grid points are scored as their mean over these ``random_state`` values: HDBSCAN breaks ties by the
order of the words it sees, which the seed shuffles, so a setting is judged over several orders, not one."""


def order_spread(sample: WorldSample, truth: dict[tuple[int, int], Any], params: dict[str, Any],
                 seeds: range = range(8)) -> dict[str, Any]:
    """Family ARI of ``params`` over ``seeds`` (``random_state``: the token classes' word order): the mean,
    the range and each seed's."""
    values = [score(sample, truth, {**params, "random_state": seed})["ari_family"]["mean"] for seed in seeds]
    return {"seeds": list(seeds), "ari": [round(v, 4) for v in values], "mean": round(float(np.mean(values)), 4),
            "min": round(min(values), 4), "max": round(max(values), 4)}


def tune(samples: dict[str, tuple[WorldSample, dict[tuple[int, int], Any]]]) -> tuple[dict[str, Any],
                                                                                     list[dict[str, Any]]]:
    """The grid point with the best mean family ARI over the tuning ``samples`` (name -> (sample,
    truth)): :data:`GRID` first, then :data:`TOKEN_GRID` on its best point (each scored over
    :data:`TUNING_SEEDS`); returns it and every grid point's scores."""
    rows: list[dict[str, Any]] = []

    def run(params: dict[str, Any], seeds: tuple[int, ...] = (0,)) -> None:
        by_seed = [{name: score(s, t, {**params, "random_state": seed})["ari_family"]["mean"]
                    for name, (s, t) in samples.items()} for seed in seeds]
        per = {name: float(np.mean([b[name] for b in by_seed])) for name in samples}
        rows.append({"params": params, "ari": per, "mean": float(np.mean(list(per.values()))), "seeds": list(seeds)})
        logger.debug("%s -> %s", params, per)

    for params in grid_params():
        run(params)
    base = max(rows, key=lambda r: r["mean"])["params"]
    for values in itertools.product(*TOKEN_GRID.values()):
        p = {**base, "token_families": True, **dict(zip(TOKEN_GRID, values))}
        method, setting = p["token_clustering"]
        p["token_clustering"] = method
        p["token_cut" if method == "average" else "token_selection"] = setting
        run(p, TUNING_SEEDS)
    best = max(rows, key=lambda r: r["mean"])
    return best["params"], rows


def task_profile_reference(sample: WorldSample, truth: dict[tuple[int, int], Any],
                           thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)) -> dict[str, Any]:
    """A *supervised* reference, not a method: each feature's mean activation per task (the
    labels the estimator never sees), average linkage on profile cosine, the best cut chosen on
    this very truth. Shows how far task-level activation profiles alone can go on this truth."""
    from analyses.families.cluster import average_families
    from analyses.families.knn import unit_rows

    tasks = sorted(set(sample.row_task.tolist()))
    onehot = sp.csr_matrix((np.ones(len(sample.row_task)), ([tasks.index(t) for t in sample.row_task],
                                                             np.arange(len(sample.row_task)))))
    counts = np.asarray(onehot.sum(axis=1)).ravel()
    P = np.asarray((onehot @ sample.activations).todense()).T / counts  # (n_features, n_tasks)
    best: dict[str, Any] = {"mean": -1.0}
    for t in thresholds:
        pred = np.full(len(P), -1, dtype=np.int64)
        for lay in np.unique(sample.layer):
            rows = np.flatnonzero(sample.layer == lay)
            U, _ = unit_rows(P[rows])
            pred[rows] = average_families(U @ U.T, t) + (pred.max() + 1)
        per = family_ari(pred, sample.layer, sample.feature, truth)
        mean = float(np.mean(list(per.values())))
        if mean > best["mean"]:
            best = {"mean": mean, "per_layer": per, "threshold": t}
    return best


def confident_ari(pred: np.ndarray, sample: WorldSample, truth: dict[tuple[int, int], Any],
                  min_coverage: float = 0.8) -> float:
    """Mean per-layer family ARI over the truth's family features whose coverage (share of their
    activation energy on the family's rows) is at least ``min_coverage``."""
    strong = {k: t for k, t in truth.items() if t.family is not None and t.coverage >= min_coverage}
    per = family_ari(pred, sample.layer, sample.feature, strong)
    return float(np.mean(list(per.values())))

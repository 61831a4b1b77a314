"""Score automatic supernodes against the demo world's per-feature truth (issue 10, point 6).

    python -m workbench.scoring.supernodes --out supernode_scores.json [--world DIR] [--truth-dir DIR]
        [--n-prompts 20] [--interventions demo|none|all] [--transcoder plt clt]
        [--coactivation-sentences 48000] [--sample-stream families-sample]

For each transcoder set, on the two demo prompts and on ``--n-prompts`` prompts of each of the
day, month, hue and two-hop prompt sets (evenly spaced over the set, train and held-out alike):
trace, prune (circuit-tracer's defaults), build the readable circuit **without labels**
(:class:`analyses.supernodes.circuit.ReadableCircuit`, transcoders given: edge-profile and
virtual-weight similarities, co-activation profiles over ``--coactivation-sentences`` fresh
*unlabelled* generator sentences (of ``--sample-stream``: another name draws an independent sample), and the
features' roles read from that sample's tokens,
:mod:`analyses.families.roles`) and score its groups against ``feature_truth_{kind}.jsonl``:

* **purity** (per group of two or more features: the largest share of members with one truth key,
  weighted by group size): ``side`` alone; ``side`` + ``family``; and the target's key, ``side`` +
  ``family`` + ``value`` where the family is not cyclic (day, month and hue values are the manifold
  issue's). ``purity_strict`` also separates context features by task and never counts two
  features of side "none" as alike;
* **compression**: feature nodes per group of the circuit;
* **replacement ratio**: the circuit's subgraph replacement over the pruned graph's;
* with ``--interventions``: the ablation check of :mod:`analyses.supernodes.interventions`;
* **pair separability**: the ROC AUC with which the clustering's affinity tells pairs of one truth key
  (target level) from pairs of different keys, over the pairs it may join (one position, no
  cannot-link), pooled over the graphs;
* the same summaries without the roles (``without_roles``) and without the sample at all, neither roles nor
  co-activation (``without_coactivation``: the graph and the weights only), side by side;
* **the oracle** (``oracle_truth_keys``): the same pipeline with the truth keys as the clustering's only
  similarity (same hard constraints, cut and budget). It reads the truth, so it is a bound, not a
  result: whether purity, compression and replacement can be met together on this world at all;
* **answer-word shares** (``answer_word_share``): per truth key, the share of each feature's activation
  energy on the scored prompts' last word (the answer position) over the unlabelled sample, for the
  features with at least 0.2 of it there: how far apart the truth's classes are on the measure that
  draws their borders (the truth's ``word_share`` threshold is 0.5);
* with ``--families-dir``: dictionary families (``workbench families`` output, computed without
  labels) as the family co-membership similarity;
* with ``--sweep-min-affinity``: the summaries again at other cuts (a sensitivity table; the
  defaults are not changed by it).

Targets (issue 10): purity >= 0.9, compression >= 2, replacement ratio >= 0.9. The JSON holds every
graph's numbers, per-set and overall summaries, and whether each target is met. Nothing here tunes
anything: the clustering runs with its defaults and never sees the labels or the truth.
"""

import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tracer.errors import WorkbenchError
from tracer.io import atomic_write_json
from workbench.cli_parser import script_parser
from workbench.scoring.bootstrap import interval, resamples
from workbench.world.truth import TruthConfig, load_truth

logger = logging.getLogger(__name__)

SETS: tuple[str, ...] = ("day_arith", "month_arith", "hue_arith", "two_hop")
TARGETS = {"purity": 0.9, "compression": 2.0, "replacement_ratio": 0.9}
SAMPLE_STREAM = "families-sample"
"""The generator stream of the unlabelled sample (co-activation and roles): the families scorer's."""
SAMPLE_SENTENCES = 48_000
"""Sentences in that sample. 3,000 until 2026-12-05; raised to the largest size of the roles' steadiness ladder
(:mod:`workbench.scoring.roles_stability`: split-half agreement 0.955 PLT / 0.969 CLT there), after the purity of
3,000-24,000 was known (README, "Supernodes and readable circuits")."""


# ----------------------------------------------------------------------------- truth
def truth_key(rec: Any, cyclic: set[str], *, level: str) -> tuple[Any, ...]:
    """The key members must share: level 'side', 'family', 'value' (the target) or 'strict'."""
    side, family, value = rec.side, rec.family, rec.value
    if level == "side":
        return (side,)
    if level == "family":
        return (side, family)
    key = (side, family, None if family in cyclic else value)
    if level == "strict":
        if side == "none":
            return (*key, "feature", rec.layer, rec.feature)  # never alike
        if side == "context":
            return (*key, getattr(rec, "task", None))
    return key


def purity(groups: Sequence[np.ndarray], truth: Mapping[tuple[int, int], Any], cyclic: set[str],
           level: str) -> dict[str, float]:
    """Size-weighted mean over groups of >= 2 features of the largest share of members sharing a key;
    ``groups`` hold (layer, feature) rows."""
    shares, sizes, pure = [], [], 0
    for g in groups:
        if len(g) < 2:
            continue
        keys = [truth_key(truth[(int(layer), int(f))], cyclic, level=level) for layer, f in g]
        top = Counter(keys).most_common(1)[0][1]
        shares.append(top / len(keys))
        sizes.append(len(keys))
        pure += top == len(keys)
    if not sizes:
        return {"purity": float("nan"), "groups_pure": float("nan"), "n_groups": 0, "n_members": 0}
    return {"purity": float(np.average(shares, weights=sizes)), "groups_pure": pure / len(sizes),
            "n_groups": len(sizes), "n_members": int(sum(sizes))}


def random_purity(groups: Sequence[np.ndarray], pool: np.ndarray, truth: Mapping[tuple[int, int], Any],
                  cyclic: set[str], *, n_draws: int = 20, seed: int = 0) -> dict[str, float]:
    """The random baseline of :func:`purity`: the same group sizes at the same positions, members drawn
    without replacement from that position's candidates (``pool``: (n, 3) layer, pos, feature rows;
    ``groups``: (size, 3) rows), mean over ``n_draws`` seeded draws, per level."""
    levels = ("side", "family", "value", "strict")
    if not any(len(g) > 1 for g in groups):
        return {level: float("nan") for level in levels}  # as purity: no group of two or more
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {level: [] for level in levels}
    for _ in range(n_draws):
        drawn = []
        left = {int(q): rng.permutation(np.flatnonzero(pool[:, 1] == q)) for q in np.unique(pool[:, 1])}
        for g in groups:
            q = int(g[0, 1])
            take, left[q] = left[q][:len(g)], left[q][len(g):]
            drawn.append(pool[take][:, [0, 2]])
        for level in out:
            out[level].append(purity(drawn, truth, cyclic, level)["purity"])
    return {level: float(np.nanmean(v)) for level, v in out.items()}


def affinity_pairs(clustering: Any, truth: Mapping[tuple[int, int], Any], cyclic: set[str]) -> tuple[np.ndarray,
                                                                                                    np.ndarray]:
    """(affinity, same truth key at the target level) of every candidate pair a fitted clustering may join."""
    keys = clustering.keys_  # (n, 3) layer, pos, feature
    tk = [truth_key(truth[(int(k[0]), int(k[2]))], cyclic, level="value") for k in keys]
    i, j = np.triu_indices(len(keys), 1)
    ok = ~clustering.cannot_link_[i, j] & (keys[i, 1] == keys[j, 1])
    i, j = i[ok], j[ok]
    return clustering.affinity_[i, j].astype(np.float64), np.array([tk[a] == tk[b] for a, b in zip(i, j)], bool)


def truth_ids(truth: Mapping[tuple[int, int], Any], cyclic: set[str]) -> dict[tuple[int, int], int]:
    """(layer, feature) -> an id of its truth key at the target level: the family table of the oracle run."""
    ids: dict[tuple[Any, ...], int] = {}
    return {k: ids.setdefault(truth_key(rec, cyclic, level="value"), len(ids)) for k, rec in truth.items()}


def word_shares(activations: Any, row_word: np.ndarray, layer: np.ndarray, feature: np.ndarray,
                truth: Mapping[tuple[int, int], Any], cyclic: set[str], words: set[str], *,
                min_share: float = 0.2) -> dict[str, dict[str, Any]]:
    """Per truth key (target level), the share of each feature's activation energy (sum of squared
    activations, the truth's own measure) on rows whose word is in ``words`` (the word at the scored
    graphs' last position), over the features with at least ``min_share`` of it there: how far apart
    the truth's classes of the features that fire at the answer position are on this one measure.
    ``activations``: sparse (n_rows, n_features), columns keyed by ``layer`` / ``feature``."""
    energy = activations.tocsc().power(2)
    total = np.asarray(energy.sum(0)).ravel()  # (n_features,)
    at = np.asarray(energy[np.isin(row_word, sorted(words))].sum(0)).ravel()  # (n_features,)
    share = np.divide(at, total, out=np.zeros_like(total), where=total > 0)
    by: dict[str, list[float]] = {}
    for i in np.flatnonzero(share >= min_share):
        key = truth_key(truth[(int(layer[i]), int(feature[i]))], cyclic, level="value")
        by.setdefault(" / ".join(str(k) for k in key), []).append(float(share[i]))
    return {key: {"n_features": len(v), "quantiles_10_25_50_75_90": np.percentile(v, [10, 25, 50, 75, 90]).round(3)
                  .tolist()} for key, v in sorted(by.items(), key=lambda kv: -len(kv[1]))}


# ----------------------------------------------------------------------------- one graph
def prompts_to_score(manifest: Mapping[str, Any], n_prompts: int) -> list[tuple[str, str]]:
    """(set name, prompt): the demo prompts, then n_prompts evenly spaced prompts of each set."""
    out = [(f"demo_{name}", prompt) for name, prompt in manifest["demo_prompts"].items()]
    for name in SETS:
        records = manifest["prompt_sets"][name]
        idx = np.unique(np.linspace(0, len(records) - 1, min(n_prompts, len(records))).round().astype(int))
        out += [(name, records[i]["prompt"]) for i in idx]
    return out


def trace(loaded: Any, transcoders: Any, prompt: str) -> Any:
    """The prompt's attribution graph (default configuration)."""
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.models import tokenize

    return attribute(loaded, transcoders, tokenize(loaded, prompt), AttributionConfig(verbose=False))


def score_graph(loaded: Any, transcoders: Any, prompt: str, graph: Any, truth: Mapping[tuple[int, int], Any],
                cyclic: set[str], *, interventions: bool, families: Mapping[tuple[int, int], int] | None = None,
                clustering: Mapping[str, Any] | None = None, coactivation: Any = None,
                roles: Any = None) -> dict[str, Any]:
    """Build the unlabelled readable circuit of ``graph`` (the prompt's, from :func:`trace`; ``clustering``:
    parameters of the SupernodeClustering other than its defaults) and score it (see the module docstring)."""
    import torch

    from analyses.supernodes.circuit import ReadableCircuit
    from analyses.supernodes.clustering import SupernodeClustering
    from analyses.supernodes.config import InterventionConfig
    from analyses.supernodes.interventions import check_supernodes

    t0 = time.perf_counter()
    est = SupernodeClustering(**(clustering or {}))
    circuit = ReadableCircuit(clustering=est).fit(graph, transcoders=transcoders, families=families,
                                                         coactivation=coactivation, roles=roles)
    seconds = time.perf_counter() - t0
    groups = [circuit.clustering_.groups_[k] for k in circuit.chosen_]
    sel = graph.active_features[graph.selected_features].cpu().numpy()  # (n_selected, 3) layer, pos, feature
    rows = [sel[g][:, [0, 2]] for g in groups]
    multi = [sel[g] for g in groups if len(g) > 1]
    s = circuit.scores_
    out: dict[str, Any] = {
        "prompt": prompt, "n_nodes": graph.n_nodes, "n_pruned_features": s.n_pruned_features,
        "n_groups": s.n_groups, "n_supernodes": s.n_supernodes, "n_features": s.n_features,
        "compression": s.compression, "pruned": s.pruned, "circuit": s.circuit,
        "replacement_ratio": s.replacement_ratio, "sign_consistency": s.sign_consistency,
        "purity": {level: purity(rows, truth, cyclic, level) for level in ("side", "family", "value", "strict")},
        "purity_random": random_purity(multi, sel[circuit.clustering_.candidates_], truth, cyclic),
        "seconds_circuit": round(seconds, 3), "similarities": list(circuit.clustering_.similarities_used_),
        "groups": [[truth_key(truth[(int(a), int(b))], cyclic, level="value") for a, b in r] for r in rows
                   if len(r) > 1],
        "_pairs": affinity_pairs(circuit.clustering_, truth, cyclic),  # pooled by summarize, not written
        "_rows": rows,  # each group's (layer, feature) rows, for re-scoring on a subset of features; not written
    }
    if interventions:
        with torch.no_grad():
            check = check_supernodes(loaded, transcoders, graph, groups, config=InterventionConfig())
        out["interventions"] = {"summary": check.summary, "clean_margin": check.clean_margin,
                                "runner_up_in_graph": check.runner_up_in_graph}
    return out


# ----------------------------------------------------------------------------- summaries
def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def purity_interval(records: list[dict[str, Any]], level: str) -> list[float]:
    """95% interval of the pooled purity at ``level``, resampling whole graphs (seeded bootstrap)."""
    members = np.array([r["purity"][level]["n_members"] for r in records], dtype=float)  # (n_graphs,)
    shares = np.array([r["purity"][level]["purity"] for r in records], dtype=float)  # (n_graphs,)
    pure = np.where(members > 0, shares * members, 0.0)  # (n_graphs,) members holding their group's key
    idx = resamples(len(records))  # (n_boot, n_graphs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return interval(pure[idx].sum(1) / members[idx].sum(1))


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over graphs, member-weighted purity over all their groups (with a 95% interval over graphs), and the
    targets."""
    def pooled(level: str, key: str = "purity") -> float:
        members = [r["purity"][level]["n_members"] for r in records]
        values = [r[key][level]["purity"] if key == "purity" else r[key][level] for r in records]
        pairs = [(v, m) for v, m in zip(values, members) if m > 0]
        return float(np.average([v for v, _ in pairs], weights=[m for _, m in pairs])) if pairs else float("nan")

    summary: dict[str, Any] = {
        "n_graphs": len(records),
        "purity": {level: pooled(level) for level in ("side", "family", "value", "strict")},
        "purity_interval": {level: purity_interval(records, level) for level in ("side", "family", "value", "strict")},
        "purity_random": {level: pooled(level, "purity_random") for level in ("side", "family", "value", "strict")},
        "compression": _mean([r["compression"] for r in records]),
        "replacement_ratio": _mean([r["replacement_ratio"] for r in records]),
        "replacement_ratio_min": float(np.nanmin([r["replacement_ratio"] for r in records])),
        "share_graphs_ratio_ge_0.9": float(np.mean([r["replacement_ratio"] >= 0.9 for r in records])),
        "circuit_replacement": _mean([r["circuit"]["replacement"] for r in records]),
        "pruned_replacement": _mean([r["pruned"]["replacement"] for r in records]),
        "circuit_completeness": _mean([r["circuit"]["completeness"] for r in records]),
        "pruned_completeness": _mean([r["pruned"]["completeness"] for r in records]),
        "sign_consistency_mass_weighted": _mean([r["sign_consistency"]["mass_weighted"] for r in records]),
        "seconds_circuit_mean": _mean([r["seconds_circuit"] for r in records]),
    }
    pairs = [r["_pairs"] for r in records if "_pairs" in r]
    if pairs:
        from sklearn.metrics import roc_auc_score

        aff, same = np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])
        summary["pair_separability"] = {
            "auc": float(roc_auc_score(same, aff)) if 0 < same.sum() < same.size else float("nan"),
            "n_pairs": int(same.size), "share_same": float(same.mean()) if same.size else float("nan")}
    checks = [r["interventions"]["summary"] for r in records if "interventions" in r]
    if checks:
        summary["interventions"] = {mode: {k: _mean([c[mode][k] for c in checks]) for k in checks[0][mode]}
                                    for mode in checks[0]}
    summary["targets_met"] = {"purity": summary["purity"]["value"] >= TARGETS["purity"],
                              "compression": summary["compression"] >= TARGETS["compression"],
                              "replacement_ratio": summary["replacement_ratio"] >= TARGETS["replacement_ratio"]}
    return summary


def coactivation_sample(world: Path, kind: str, n_sentences: int, sentences: Sequence[Any] | None = None,
                        stream: str = SAMPLE_STREAM) -> tuple[Any, Any, Any]:
    """(the co-activation context, the features' roles, the sample) of ``n_sentences`` fresh, unlabelled
    generator sentences of ``stream`` (the families scorer's sample: :func:`workbench.families_eval.world_sample`),
    or of ``sentences`` when given, columns keyed by (layer, feature); the roles read only the sample's activations
    and token ids."""
    from analyses.families.coactivation import CoactivationContext
    from analyses.families.roles import feature_roles
    from workbench.families_eval import world_sample

    sample = world_sample(world, kind, n_sentences=n_sentences, sentences=sentences, stream=stream)
    keys = np.stack([sample.layer, sample.feature], 1)
    context = CoactivationContext.from_activations(sample.activations, keys)
    context.prepare_profiles()  # shared by every graph scored: each column's profile computed once
    roles = feature_roles(sample.activations, keys, tokens=sample.tokens, next_tokens=sample.next_tokens,
                          token_vectors=sample.token_vectors, token_words=sample.token_words, transcoder_kind=kind,
                          transcoder_source=str(world / kind))
    return context, roles, sample


def side_tables(loaded: Any, tcs: Any, prompts: Sequence[tuple[str, str]], graphs: Sequence[Any],
                truth: Mapping[tuple[int, int], Any], cyclic: set[str], families: Any, sample: Any, context: Any,
                roles: Any, sweep: Sequence[float]) -> dict[str, Any]:
    """The tables beside the headline, on the same ``graphs`` (one per prompt): without the roles; without the
    sample (neither roles nor co-activation); the **oracle** (the clustering given the truth keys as its only
    similarity, under the same hard constraints and budget: a bound on what any similarity could reach here, not
    a result); the answer-word energy shares per truth key (:func:`word_shares`); and the min_affinity
    sensitivity table."""
    def run(**kw: Any) -> dict[str, Any]:
        return summarize([score_graph(loaded, tcs, prompt, graph, truth, cyclic, interventions=False, **kw)
                          for (_, prompt), graph in zip(prompts, graphs, strict=True)])

    out: dict[str, Any] = {}
    if context is not None:
        out["without_roles"] = run(families=families, coactivation=context)
        out["without_coactivation"] = run(families=families)
    out["oracle_truth_keys"] = run(families=truth_ids(truth, cyclic), clustering={"similarities": ("family",)})
    if sample is not None:
        words = {prompt.split()[-1] for _, prompt in prompts}
        out["answer_word_share"] = {"words": sorted(words), "by_truth_key": word_shares(
            sample.activations, sample.row_word, sample.layer, sample.feature, truth, cyclic, words)}
    out["sensitivity_min_affinity"] = {str(value): run(families=families, clustering={"min_affinity": value},
                                                       coactivation=context, roles=roles) for value in sweep}
    return out


def score_world(world: Path, truth_dir: Path, kinds: Sequence[str], n_prompts: int, interventions: str,
                verbose: bool, families_dir: Path | None = None,
                sweep: Sequence[float] = (), coactivation_sentences: int = SAMPLE_SENTENCES,
                sample_stream: str = SAMPLE_STREAM) -> dict[str, Any]:
    """Every graph's record and the summaries, per transcoder kind (and, for each ``sweep`` value of
    min_affinity, the summaries at that cut: a sensitivity table, not a tuning; and, with a
    co-activation sample, the summaries without it)."""
    import torch
    from tqdm.auto import tqdm

    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    manifest = json.loads((world / "manifest.json").read_text())
    cyclic = {name for name, fam in manifest["families"].items() if "period" in fam}
    loaded = load_model(world / "model")
    prompts = prompts_to_score(manifest, n_prompts)
    report: dict[str, Any] = {"targets": TARGETS, "cyclic_families": sorted(cyclic), "n_prompts_per_set": n_prompts}
    for kind in kinds:
        truth = load_truth(truth_dir / f"feature_truth_{kind}.jsonl")
        tcs = load_transcoders(world / kind, n_layers=loaded.n_layers, d_model=loaded.d_model)
        families = None
        if families_dir is not None:
            from workbench.cmd_cluster import read_families

            families = read_families(str(families_dir / f"families_{kind}.json"))
        context, roles, sample = coactivation_sample(world, kind, coactivation_sentences, stream=sample_stream) \
            if coactivation_sentences else (None, None, None)
        records, graphs = [], []
        for name, prompt in tqdm(prompts, desc=f"score {kind}", disable=not verbose):
            check = interventions == "all" or (interventions == "demo" and name.startswith("demo_"))
            with torch.inference_mode(False):
                graphs.append(trace(loaded, tcs, prompt))  # traced once, scored by every table below
                records.append({"set": name, **score_graph(loaded, tcs, prompt, graphs[-1], truth, cyclic,
                                                           interventions=check, families=families,
                                                           coactivation=context, roles=roles)})
        by_set = {name: summarize([r for r in records if r["set"] == name]) for name in dict.fromkeys(
            r["set"] for r in records)}
        overall = summarize(records)
        for r in records:
            r.pop("_pairs", None)
            r.pop("_rows", None)
        report[kind] = {"overall": overall, "by_set": by_set, "graphs": records,
                        "coactivation_sentences": coactivation_sentences, "sample_stream": sample_stream,
                        **side_tables(loaded, tcs, prompts, graphs, truth, cyclic, families, sample, context, roles,
                                      sweep)}
    return report


def check_sample_stream(stream: str, flag: str, *, example: str = SAMPLE_STREAM) -> str:
    """``stream`` when it names a generator stream other than the truth's own corpus (a sample drawn from it would
    be the very sentences the truth was read on); else one line naming ``flag``."""
    truth = TruthConfig().stream
    if not stream.strip() or stream == truth:
        raise WorkbenchError(f"{flag} must name a stream other than the truth's own ({truth!r}); got {stream!r}. "
                             f"Use another name, e.g. {example}.")
    return stream


def parse_cuts(text: str) -> list[float]:
    """``--sweep-min-affinity "0.5,0.7"`` -> [0.5, 0.7]: affinities in [0, 1]."""
    try:
        cuts = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        cuts = [float("nan")]
    if any(not 0.0 <= c <= 1.0 for c in cuts):
        raise WorkbenchError(f"--sweep-min-affinity must be comma-separated affinities in [0, 1]; got {text!r}.")
    return cuts


def main(argv: list[str] | None = None) -> int:
    from workbench.paths import world_dir

    p = script_parser("python -m workbench.scoring.supernodes", __doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--world", default=None, help="world folder (default: the embedded demo world)")
    p.add_argument("--truth-dir", default=None, help="folder with feature_truth_{plt,clt}.jsonl (default: --world)")
    p.add_argument("--transcoder", nargs="+", default=["plt", "clt"], choices=["plt", "clt"],
                   help="transcoder sets to score (default: plt clt)")
    p.add_argument("--n-prompts", type=int, default=20, help="prompts per prompt set (default 20)")
    p.add_argument("--interventions", default="demo", choices=["demo", "none", "all"],
                   help="which graphs get the ablation check (default: the two demo graphs)")
    p.add_argument("--families-dir", default=None,
                   help="folder with families_{plt,clt}.json (`workbench families` output) for the family similarity")
    p.add_argument("--coactivation-sentences", type=int, default=SAMPLE_SENTENCES,
                   help="fresh unlabelled generator sentences for the co-activation similarity and the roles "
                        f"(default {SAMPLE_SENTENCES}; 0: none)")
    p.add_argument("--sample-stream", default=SAMPLE_STREAM,
                   help=f"generator stream of that sample (default {SAMPLE_STREAM}; another name draws an independent "
                        "sample of the same size, to see how far a figure moves with the sentences)")
    p.add_argument("--sweep-min-affinity", default="",
                   help="comma-separated min_affinity values to report a sensitivity table for (default: none)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from workbench.cli_safety import check_out, need_input

    world = Path(args.world) if args.world else world_dir()
    truth_dir = Path(args.truth_dir) if args.truth_dir else world
    need_input(world / "manifest.json", "--world manifest.json")
    check_out(args.out, inputs=[world, truth_dir, args.families_dir])  # before any work: never over an input
    sweep = parse_cuts(args.sweep_min_affinity)
    if args.n_prompts < 0 or args.coactivation_sentences < 0:
        raise WorkbenchError(f"--n-prompts and --coactivation-sentences must be >= 0; got {args.n_prompts} and "
                             f"{args.coactivation_sentences}.")
    check_sample_stream(args.sample_stream, "--sample-stream", example="s2")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    report = score_world(world, truth_dir, args.transcoder, args.n_prompts,
                         args.interventions, verbose=not args.quiet,
                         families_dir=Path(args.families_dir) if args.families_dir else None, sweep=sweep,
                         coactivation_sentences=args.coactivation_sentences, sample_stream=args.sample_stream)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["argv"] = list(argv if argv is not None else sys.argv[1:])
    atomic_write_json(args.out, json.loads(json.dumps(report, default=str)))  # strict JSON: NaN -> null
    for kind in args.transcoder:
        o = report[kind]["overall"]
        print(f"{kind}: purity {o['purity']['value']:.3f} (side {o['purity']['side']:.3f}, family "  # noqa: T201
              f"{o['purity']['family']:.3f}, strict {o['purity']['strict']:.3f}), compression {o['compression']:.2f},"
              f" replacement ratio {o['replacement_ratio']:.3f} over {o['n_graphs']} graphs; random groups "
              f"{o['purity_random']['value']:.3f}; pair AUC {o['pair_separability']['auc']:.3f}")
        oracle = report[kind]["oracle_truth_keys"]
        print(f"{kind} oracle (truth keys as the only similarity: a bound, not a result): purity "  # noqa: T201
              f"{oracle['purity']['value']:.3f}, compression {oracle['compression']:.2f}, replacement ratio "
              f"{oracle['replacement_ratio']:.3f}")
        for table, name in (("without_roles", "without roles"), ("without_coactivation", "without the sample")):
            if table not in report[kind]:
                continue
            w = report[kind][table]
            print(f"{kind} {name}: purity {w['purity']['value']:.3f}, compression "  # noqa: T201
                  f"{w['compression']:.2f}, replacement ratio {w['replacement_ratio']:.3f}, pair AUC "
                  f"{w['pair_separability']['auc']:.3f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.scoring.supernodes"))

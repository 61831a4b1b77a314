"""The analyses of `workbench demo`: readable circuits, the day circle, and which families are rings.

* **Readable circuit** (issue 10): the pruned graph's features grouped into supernodes without labels
  (labels only name the groups), chosen under the default node budget, scored by Neuronpedia's
  subgraph scores next to the pruned graph's, and every group ablated on the real model against
  random groups matched in size, layer and position -- what ``workbench cluster`` writes, saved as
  ``supernodes/<name>.json`` (``workbench export --supernodes`` reads it).
* **Manifold** (issue 11), for each demo prompt of a cyclic family's arithmetic set (the day prompt):
  the family fitted at the answer position of the last residual layer (what the answer is read
  from) and at the family word in the embedding (where the start value lives), each with its
  held-out R², tiling, and class-mean substitution against a random subspace; then the demo prompt
  steered along the word circle to every value, which is "+2 days" seen as a rotation.
* **Discovery** (issue 11): at the transcoder layer whose family was tiled, every labelled family of
  at least 5 features ranked by ring evidence over a corpus sample, without values or truth; the
  truth is shown next to the ranking, never used by it.
"""

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tracer.models import LoadedModel
from tracer.transcoders.base import Transcoders
from workbench.report import CircuitView, DiscoveryRow, DiscoveryView, ManifoldView, SteerRow, SupernodeRow

logger = logging.getLogger(__name__)

MANIFOLD_DIR = "manifold"
DISCOVERY_FILES = (f"{MANIFOLD_DIR}/discovery.json", f"{MANIFOLD_DIR}/discovery.safetensors")
DISCOVERY_SENTENCES = 2000
"""corpus sentences (a seeded sample of the world's language) whose activations discovery reads"""


# ----------------------------------------------------------------------------- readable circuit
EVIDENCE = {"edge": "signed edge profiles", "virtual": "virtual weights",
            "coactivation": f"co-activation over {DISCOVERY_SENTENCES} corpus sentences",
            "family": "dictionary families", "label": "label text"}


def coactivation_sample(loaded: LoadedModel, tcs: Transcoders, world: Path, manifest: dict[str, Any], *,
                        verbose: bool) -> Any:
    """The co-activation context and the features' roles (a CorpusEvidence) of the world's corpus sample (the
    sentences discovery reads; no labels)."""
    from workbench.corpus_evidence import prompt_coactivation
    from workbench.manifold_world_discovery import world_corpus

    return prompt_coactivation(loaded, tcs, world_corpus(world, manifest, DISCOVERY_SENTENCES), verbose=verbose)


def circuit_view(loaded: LoadedModel, tcs: Transcoders, graph: Any, prune_result: Any, labels: dict[Any, Any],
                 tokens: list[str], out_json: Path, *, verbose: bool,
                 corpus: Any = None) -> tuple[CircuitView, dict[str, Any]]:
    """Cluster, choose, check and save one graph's readable circuit; the report's view and the summary
    (``corpus``: a :func:`coactivation_sample` for the co-activation similarity and the roles, or None)."""
    import dataclasses

    from analyses.coarse import SupernodeGraphDisplay
    from analyses.supernodes.config import CircuitConfig, ClusteringConfig, InterventionConfig
    from workbench.cmd_cluster import analyse_circuit, supernodes_document, write_supernodes

    configs: dict[str, Any] = {"circuit": CircuitConfig(), "clustering": ClusteringConfig(),
                               "interventions": InterventionConfig()}
    inputs = {"loaded": loaded, "transcoders": tcs, "labels": labels or None, "families": None,
              "prune": prune_result, "coactivation": corpus[0] if corpus else None,
              "roles": corpus[1] if corpus else None}
    circuit, check = analyse_circuit(graph, inputs, configs, tokens, verbose)
    doc = supernodes_document(circuit, check, graph, {"node_threshold": configs["clustering"].node_threshold,
                                                      "edge_threshold": configs["clustering"].edge_threshold})
    doc["config"] = {k: dataclasses.asdict(v) for k, v in configs.items()}
    write_supernodes(out_json, doc)
    scores = doc["scores"]
    groups = scores.get("interventions", {}).get("groups", [])
    rows = [_row(g, groups[k] if k < len(groups) else {}) for k, g in enumerate(doc["supernodes"])]
    summaries = scores["interventions"]["summary"] if "interventions" in scores else None
    display = SupernodeGraphDisplay.from_coarse_graph(circuit.coarse_graph_, numbered=True)
    view = CircuitView(
        budget=configs["circuit"].budget, n_groups=scores["n_groups"], n_supernodes=scores["n_supernodes"],
        n_features=scores["n_features"], n_pruned_features=scores["n_pruned_features"],
        compression=scores["compression"], subgraph={"pruned": scores["pruned"], "circuit": scores["circuit"]},
        sign_consistency=scores["sign_consistency"]["mass_weighted"], interventions=summaries, rows=rows,
        figure_svg=display.to_svg(), files={"supernodes": str(out_json)},
        evidence=", ".join(EVIDENCE[n] for n in doc["similarities"])
        + ("; one role per group (what each feature reads or predicts on those sentences)"
           if doc["role_constraint"] else ""))
    stats = {k: scores[k] for k in ("pruned", "circuit", "n_groups", "n_supernodes", "n_features",
                                    "n_pruned_features", "compression", "replacement_ratio")}
    stats["sign_consistency"] = scores["sign_consistency"]["mass_weighted"]
    stats["similarities"] = doc["similarities"]
    stats["role_constraint"] = doc["role_constraint"]
    stats["interventions"] = summaries
    stats["supernodes_json"] = str(out_json)
    return view, stats


def _row(group: dict[str, Any], check: dict[str, Any]) -> SupernodeRow:
    members = group["members"]
    layers = [int(m["layer"]) for m in members]
    pos = [int(m["pos"]) for m in members]
    modes = [k.removeprefix("measured_margin_") for k in check if k.startswith("measured_margin_")]
    return SupernodeRow(label=group["label"], kind=group["kind"], n_members=len(members),
                        layers=(min(layers), max(layers)), positions=(min(pos), max(pos)),
                        predicted_margin=check.get("predicted_margin"),
                        measured_margin={m: float(check[f"measured_margin_{m}"]) for m in modes},
                        win_rate={m: float(check[f"win_rate_{m}"]) for m in modes})


# ----------------------------------------------------------------------------- manifolds
def arithmetic_family(manifest: dict[str, Any], name: str) -> str | None:
    """The cyclic family whose arithmetic prompt set the demo prompt ``name`` comes from, if any."""
    family = name.removesuffix("_arith") if name.endswith("_arith") else None
    fam = manifest.get("families", {}).get(family) if family else None
    details = manifest.get("demo_details", {}).get(name, {})
    if not isinstance(fam, dict) or "period" not in fam or not {"start", "offset", "direction"} <= set(details):
        return None
    return family


def manifold_outputs(manifest: dict[str, Any]) -> list[str]:
    """The manifold files the demo will write (relative to its output folder)."""
    names = list(DISCOVERY_FILES)
    for name in manifest.get("demo_prompts", {}):
        family = arithmetic_family(manifest, name)
        if family is None:
            continue
        for where in ("answer", "word"):
            folder = f"{MANIFOLD_DIR}/{family}_{where}"
            names += [f"{folder}/manifold.json", f"{folder}/fit.json", f"{folder}/fit.safetensors"]
            names += [f"{folder}/{plot}.{ext}" for plot in ("circle", "frequency", "tuning") for ext in ("png", "svg")]
    return names


def manifold_views(loaded: LoadedModel, tcs: Transcoders, world: Path, manifest: dict[str, Any], out: Path, *,
                   paths: tuple[Path, Path], labels: Path | None) -> tuple[list[Any], dict[str, Any]]:
    """One view per demo prompt from a cyclic family's arithmetic set, then the discovery ranking at the
    layer the first one tiled (with ``labels``, whose families it ranks); the summary per family and
    ``discovery``. ``paths``: the model and transcoder folders (recorded in each ``manifold.json``)."""
    views: list[Any] = []
    stats: dict[str, Any] = {}
    for name, prompt in manifest.get("demo_prompts", {}).items():
        family = arithmetic_family(manifest, name)
        if family is None:
            continue
        view, fam_stats = family_view(loaded, tcs, world, manifest, family, name, prompt, out / MANIFOLD_DIR,
                                      paths=paths)
        views.append(view)
        stats[family] = fam_stats
    tiled = next((s["tiling_feature_layer"] for s in stats.values() if s.get("tiling_feature_layer") is not None),
                 None)
    if labels is not None and tiled is not None:
        with tempfile.TemporaryDirectory(prefix="demo-discovery-") as tmp:
            found, stats["discovery"] = discovery_view(loaded, tcs, world, manifest, labels, int(tiled),
                                                       out / MANIFOLD_DIR, Path(tmp))
        if found is not None:
            views.append(found)
    return views, stats


def discovery_view(loaded: LoadedModel, tcs: Transcoders, world: Path, manifest: dict[str, Any], labels: Path,
                   layer: int, out: Path, scratch: Path) -> tuple[DiscoveryView | None, dict[str, Any]]:
    """Rank the layer's label families (>= 5 features) by ring evidence over a corpus sample."""
    from analyses.manifolds.discovery import ManifoldDiscovery, ripser_available
    from analyses.results import save_result
    from workbench.manifold_discover_run import (
        corpus_store,
        discover_layer,
        discovery_displays,
        families_from_labels,
        layer_inputs,
    )
    from workbench.manifold_world_discovery import world_corpus

    families = families_from_labels(labels, 5, tcs).get(layer, {})
    if len(families) < 2:
        return None, {"skipped": f"fewer than 2 labelled families of >= 5 features at layer {layer}"}
    store = corpus_store(loaded, tcs, world_corpus(world, manifest, DISCOVERY_SENTENCES), scratch, [layer])
    with_h1 = ripser_available()  # without it the report says so (no warning in a first run of the demo)
    est = ManifoldDiscovery(persistence="auto" if with_h1 else "none")
    A, W = layer_inputs(store, tcs, layer)
    report, result = discover_layer(A, W, layer, families, est)
    save_result(result, out / "discovery.json")
    cyclic = {name for name, fam in manifest.get("families", {}).items() if isinstance(fam, dict) and "period" in fam}
    by_name = {f.name: f for f in result.families}
    rows = [DiscoveryRow(name=n, n_members=len(by_name[n].members), score=by_name[n].score,
                         loop_score=by_name[n].loop_score, h1=by_name[n].h1_persistence,
                         cyclic=n.split("/")[0] in cyclic) for n in est.ranking_]
    ranking, cloud = discovery_displays(result, A, W, est.activation_threshold)
    figures = [("ring score per family (blue) and the score without persistent H1 (grey)", ranking.to_svg())]
    if cloud is not None:
        top = next(f for f in result.families if f.scored)
        figures.append((f"the top family's ({top.name}) decoder-direction cloud in its loop plane, coloured by "
                        "the fitted angle, with its principal curve", cloud.to_svg()))
    first_other = next((i for i, r in enumerate(rows) if not r.cyclic), len(rows))
    view = DiscoveryView(
        title=f"Which families are rings? Unsupervised discovery, transcoder layer {layer}",
        description=(f"Each labelled family of at least 5 features at layer {layer}, as a cloud of its members' "
                     f"decoder directions weighted by activation over {DISCOVERY_SENTENCES} corpus sentences "
                     "(every position; no values), ranked by a ring score: loop quality x irreducibility of the "
                     "loop plane x persistence of the loop (persistent H1), the last two each counted fully once "
                     "they reach a noisy circle's value (min(1, value / reference)); 'without H1' leaves the last "
                     "factor out. The truth column is shown, never used."
                     + ("" if with_h1 else " ripser is not installed, so this ranking leaves persistent H1 out "
                                           "(pip install ripser, the topology extra, for the full score).")),
        rows=rows, figures=figures, files={"discovery result": str(out / "discovery.json")})
    stats = {"feature_layer": layer, "ranking": list(est.ranking_), "persistence": result.persistence,
             "cyclic_first": first_other, "cyclic_above_all_other": cyclic_first(rows),
             "seconds": report["seconds"]}
    return view, stats


def cyclic_first(rows: list[Any]) -> bool | None:
    """Whether every cyclic family's ring score is above every other family's (strictly: families tied, e.g. all
    at 0 with no ring evidence, were "first" by their input order); None when one side has no scored family."""
    cyc = [r.score for r in rows if r.cyclic and r.score is not None and np.isfinite(r.score)]
    other = [r.score for r in rows if not r.cyclic and r.score is not None and np.isfinite(r.score)]
    return None if not cyc or not other else bool(min(cyc) > max(other))


def _fit(loaded: LoadedModel, tcs: Transcoders, world: Path, family: str, layer: int, position: str, out: Path,
         scratch: Path, paths: tuple[Path, Path]) -> tuple[Any, dict[str, Any]]:
    """Fit + tiling + causal check + plots of one (layer, position), as ``workbench manifold fit`` does
    (and its ``manifold.json``)."""

    from analyses.manifolds.fit import ManifoldFitConfig
    from tracer.io import atomic_write_json
    from workbench.cmd_manifold import ManifoldRunConfig
    from workbench.manifold_fit_run import fit_and_check
    from workbench.manifold_world import world_inputs

    inputs = world_inputs(loaded, world, family, position, loaded.n_layers, tcs.kind)
    out.mkdir(parents=True, exist_ok=True)
    run_cfg = ManifoldRunConfig(feature_layer=largest_family_layer(inputs.features, layer))
    report = fit_and_check(loaded, tcs, inputs, layer, position, out, ManifoldFitConfig(), run_cfg,
                           None, activations=scratch / f"{position}-{layer}")
    report.update({"model": str(paths[0].resolve()), "transcoders": str(paths[1].resolve())})
    atomic_write_json(out / "manifold.json", report)  # `workbench manifold steer --fit`
    return inputs, report


def largest_family_layer(features: dict[int, list[int]] | None, layer: int) -> int | None:
    """The transcoder layer (at most ``layer``, so its features can write into the fitted residual
    layer; the last of equals) with the most family features -- the family's tiling worth showing; None
    (the default, L - 1) when no layer has any."""
    sizes = {k: len(v) for k, v in (features or {}).items() if k < max(layer, 1) and v}
    return max(sizes, key=lambda k: (sizes[k], k)) if sizes else None


def family_view(loaded: LoadedModel, tcs: Transcoders, world: Path, manifest: dict[str, Any], family: str,
                name: str, prompt: str, out: Path, *,
                paths: tuple[Path, Path]) -> tuple[ManifoldView, dict[str, Any]]:
    """The family's answer and word fits, and the demo prompt steered along the word circle."""
    names = list(manifest["families"][family]["values"])
    with tempfile.TemporaryDirectory(prefix="demo-manifold-") as tmp:
        answer_dir, word_dir = out / f"{family}_answer", out / f"{family}_word"
        _, answer = _fit(loaded, tcs, world, family, loaded.n_layers, "last", answer_dir, Path(tmp), paths)
        inputs, word = _fit(loaded, tcs, world, family, 0, "value", word_dir, Path(tmp), paths)
        details = manifest["demo_details"][name]
        start = names[int(details["start"])]
        steering = steer_demo_prompt(loaded, tcs, word_dir, inputs, prompt, start, Path(tmp) / "steer")
    sign = 1 if details["direction"] == "after" else -1
    tok = loaded.tokenizer

    def decode(t: int) -> str:
        return tok.decode([t]) if tok is not None else str(t)

    rows = [SteerRow(target=names[v], expected=names[(v + sign * int(details["offset"])) % len(names)],
                     answer=decode(int(t)), probability=float(p))
            for v, t, p in zip(steering.targets, steering.top_token, steering.top_prob)]
    hits = sum(r.answer.strip() == r.expected for r in rows)
    facts = _facts(f"answer position, L{loaded.n_layers}", answer) + _facts(f"family word ({start}), L0", word)
    figures = [(f"{family}s at the answer position (L{loaded.n_layers}) in the fitted plane, by value",
                _svg_file(answer_dir / "circle.svg")),
               (f"{family}s at the family word (embedding, L0)", _svg_file(word_dir / "circle.svg"))]
    if (answer_dir / "tuning.svg").is_file():
        tiled = answer.get("tiling") or {}
        figures.append((f"tuning of the {tiled.get('n_live')} live '{family}' features of transcoder layer "
                        f"{tiled.get('feature_layer')} (of the {len(tiled.get('features', []))} the world's truth "
                        "puts in the family) at the answer position",
                        _svg_file(answer_dir / "tuning.svg")))
    view = ManifoldView(
        title=f"Manifold: {family}s on a circle",
        description=(f"The {len(names)} {family}s, fitted on the {family} arithmetic prompts of the model's training "
                     "split (class means, a PCA subspace, a Fourier curve with a searched frequency) and scored on "
                     "the combinations the model never saw. Substitution replaces a point's class mean by another "
                     "value's inside the fitted subspace (a' = a - mu_v + mu_v') and asks whether the answer becomes "
                     "the implied one; a random subspace of the same dimension is the baseline."),
        facts=facts, figures=figures,
        steering_caption=(f'"{prompt}" with {start} moved along the fitted circle at the family word (L0) to each '
                          f"{family}: the answer should shift with it."),
        steering=rows, files={"answer-position fit": str(answer_dir / "fit.json"),
                              "family-word fit": str(word_dir / "fit.json")})
    stats = {"answer": _fit_stats(answer), "word": _fit_stats(word),
             "steering_demo_prompt": {"prompt": prompt, "hits": hits, "n": len(rows),
                                      "rows": [dataclasses.asdict(r) for r in rows]},
             "tiling_feature_layer": (answer.get("tiling") or {}).get("feature_layer")}
    return view, stats


def steer_demo_prompt(loaded: LoadedModel, tcs: Transcoders, fit_dir: Path, inputs: Any, prompt: str,
                      start: str, scratch: Path) -> Any:
    """Steer ``prompt`` (whose family word is ``start``) to every value along the fit saved in ``fit_dir``."""
    from analyses.manifolds.causal import steer_prompt
    from analyses.manifolds.fit import ManifoldFitResult
    from analyses.results import load_result
    from tracer.activations import PromptRecord
    from tracer.errors import WorkbenchError
    from workbench.manifold_fit_run import FIT_FILE
    from workbench.manifold_points import collect_points

    fit = load_result(fit_dir / FIT_FILE, ManifoldFitResult)
    record = next((r for r in inputs.records if r.prompt == prompt), None)
    if record is None:  # a demo prompt outside the family's prompt set: its family word's position
        words = prompt.split()
        if start not in words:
            raise WorkbenchError(f"manifest demo_details start must name a word of the demo prompt; got "
                                 f"{start!r} for {prompt!r}. Rebuild the world.")
        record = PromptRecord(prompt=prompt, meta={"position": 1 + words.index(start)})  # after BOS
    layer = int(fit.layer or 0)
    pts = collect_points(loaded, tcs, [record], scratch, residual_layers=(layer,), positions="field")
    position = int(record.meta["position"])
    x = pts.residual(layer, np.array([position]))[0]  # (d_model,)
    return steer_prompt(loaded, tcs, fit, list(pts.records[0]["tokens"]), position, x)


def _facts(where: str, report: dict[str, Any]) -> list[tuple[str, str]]:
    held, causal = report.get("heldout", {}), report.get("causal", {})
    order = "calendar order" if report.get("order_matches") else "order: " + ", ".join(report["order"])
    out = [(f"{where}: frequency, fitted order", f"k = {report['frequency']}, {order}"),
           (f"{where}: R² on the fit / on held-out prompts (n)",
            f"{report['r2']:.3f} / {held.get('r2', float('nan')):.3f} ({held.get('n', 0)})"),
           (f"{where}: components (explained variance)",
            f"{report['n_components']} ({report['explained_variance']:.2f})")]
    if held.get("radius_ratio") is not None:  # why a held-out R² falls: points inside the curve, or off its angles
        out.insert(2, (f"{where}: held-out points' distance from the centre, share of the curve's / their R² "
                       "moved to the curve's distance",
                       f"{held['radius_ratio']:.2f} / {held['r2_radius_matched']:.3f}"))
    if causal.get("fitted_success") is not None:  # a skipped check holds None
        out.append((f"{where}: substitution success, fitted / random subspace / full vector",
                    f"{causal['fitted_success']:.3f} / {causal['random_success']:.3f} / {causal['full_success']:.3f}"))
    tiling = report.get("tiling")
    if tiling:
        covered = tiling.get("value_coverage")
        out.append((f"{where}: share of values covered by the family's features (transcoder layer "
                    f"{tiling['feature_layer']}, {len(tiling['features'])} features)",
                    "" if covered is None else f"{covered:.2f}"))
    return out


def _fit_stats(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("layer", "position", "frequency", "order_matches", "r2", "n_components", "explained_variance")
    out = {k: report.get(k) for k in keep}
    out["heldout_r2"] = report.get("heldout", {}).get("r2")
    causal = report.get("causal", {})
    out["causal"] = {k: causal.get(k) for k in ("fitted_success", "random_success", "full_success", "n_prompts")}
    return out


def _svg_file(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text[text.index("<svg"):]

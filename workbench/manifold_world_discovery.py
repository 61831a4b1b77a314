"""Unsupervised manifold discovery on the demo world, scored against its truth (issue 11, phase 1).

Activations of the world's PLT features over a sample of its training corpus (every position but
BOS), then :class:`~analyses.manifolds.discovery.ManifoldDiscovery` per layer on the candidate
families: the features whose world label names a family, split by side (``day/output``,
``city/input``, ...), with at least ``--min-size`` members. The check: every cyclic family (day,
month, hue) ranks above every non-cyclic family. ``python -m workbench.manifold_world_discovery
--out DIR`` writes ``world_discovery.json``.
"""

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from analyses.manifolds.discovery import ManifoldDiscovery
from tracer.models import LoadedModel, load_model, tokenize
from tracer.models.forward import run_with_cache
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import load_transcoders
from workbench.manifold_world import decoder_matrices
from workbench.world import generator, language

logger = logging.getLogger(__name__)

CYCLIC = ("day", "month", "hue")


def corpus_activations(loaded: LoadedModel, tcs: Transcoders, texts: list[str]) -> list[sp.csr_matrix]:
    """Per PLT layer, (n_rows, d_transcoder) activations over every non-BOS position of ``texts``."""
    per_layer: list[list[np.ndarray]] = [[] for _ in range(tcs.n_layers)]
    for text in texts:
        cache = run_with_cache(loaded, tokenize(loaded, text))  # TODO(lead): replace with tracer.activations
        for i in range(tcs.n_layers):
            per_layer[i].append(tcs.layers[i].encode(cache.mlp_input[i, 1:]).numpy())  # (n_pos - 1, d_tc)
    return [sp.csr_matrix(np.concatenate(rows)) for rows in per_layer]


def label_families(labels_path: Path, layer: int, min_size: int) -> dict[str, list[int]]:
    """``{family/side: features}`` of one layer from the world labels, families of >= min_size members."""
    groups: dict[str, list[int]] = {}
    for line in labels_path.read_text().split("\n"):
        if line.strip():
            rec = json.loads(line)
            if rec["layer"] == layer and rec.get("family") and rec.get("side") in ("input", "output"):
                groups.setdefault(f"{rec['family']}/{rec['side']}", []).append(int(rec["feature"]))
    return {k: sorted(v) for k, v in sorted(groups.items()) if len(v) >= min_size}


def score_ranking(ranking: list[str], scores: dict[str, float]) -> dict[str, Any]:
    """Do all cyclic families rank above all non-cyclic ones?"""
    cyclic = [n for n in ranking if n.split("/")[0] in CYCLIC and np.isfinite(scores[n])]
    other = [n for n in ranking if n.split("/")[0] not in CYCLIC]
    worst_cyclic = max((ranking.index(n) for n in cyclic), default=-1)
    best_other = min((ranking.index(n) for n in other), default=len(ranking))
    return {"cyclic_above_all_other": worst_cyclic < best_other, "n_cyclic": len(cyclic), "n_other": len(other),
            "cyclic_below_an_other": [n for n in cyclic if ranking.index(n) > best_other]}


def discover_layer(A: sp.csr_matrix, W: np.ndarray, families: dict[str, list[int]], layer: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    est = ManifoldDiscovery().fit(A, W, families, layer=layer)
    seconds = time.perf_counter() - t0
    rows = {f.name: {"score": f.score, "n_members": len(f.members), "n_points": f.n_points,
                     "mixture": f.mixture, "separability": f.separability, "loop_quality": f.loop_quality,
                     "h1_persistence": f.h1_persistence, "curve_r2_closed": f.curve_r2_closed,
                     "curve_r2_open": f.curve_r2_open,
                     "explained_variance_ratio": [float(x) for x in f.explained_variance_ratio]}
            for f in est.result_.families}
    return {"ranking": est.ranking_, "families": rows, "seconds": round(seconds, 1),
            **score_ranking(est.ranking_, est.scores_)}


def main(argv: list[str] | None = None) -> int:
    from workbench.paths import world_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, default=None, help="world folder (default: the shipped data/world)")
    ap.add_argument("--out", type=Path, required=True, help="folder for world_discovery.json")
    ap.add_argument("--n-sentences", type=int, default=2000, help="corpus sentences (seeded sample)")
    ap.add_argument("--min-size", type=int, default=5, help="smallest family scored")
    ap.add_argument("--layers", default=None, help="comma-separated PLT layers (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    world = args.world or world_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((world / "manifest.json").read_text())
    facts = manifest["facts"]
    spec = language.make_world(int(manifest["seed"]), n_regions=len(facts["regions"]),
                               cities_per_region=len(facts["cities"]) // len(facts["regions"]))
    texts = [" ".join(s.words) for s in generator.sample_corpus(spec, args.n_sentences, seed=0, stream="manifolds")]
    loaded = load_model(world / "model")
    tcs = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    t0 = time.perf_counter()
    acts = corpus_activations(loaded, tcs, texts)
    report: dict[str, Any] = {"n_sentences": len(texts), "n_rows": acts[0].shape[0],
                              "seconds_activations": round(time.perf_counter() - t0, 1), "layers": {}}
    W_dec = decoder_matrices(tcs)
    layers = range(tcs.n_layers) if args.layers is None else [int(x) for x in args.layers.split(",")]
    for layer in layers:
        fams = label_families(world / "labels_plt.jsonl", layer, args.min_size)
        report["layers"][str(layer)] = rep = discover_layer(acts[layer], W_dec[layer], fams, layer)
        print(f"layer {layer} ({rep['seconds']} s): cyclic above all others: {rep['cyclic_above_all_other']}")
        for name in rep["ranking"]:
            f = rep["families"][name]
            print(f"  {name:16s} n={f['n_members']:3d} pts={f['n_points']:5d} score={f['score']:.3f} "
                  f"M={np.round(f['mixture'], 2).tolist()} S={np.round(f['separability'], 2).tolist()} "
                  f"loop={f['loop_quality']:.2f} closed R2={f['curve_r2_closed']:.2f}")
    (args.out / "world_discovery.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Prune, scores, .pt import and viewer JSON against circuit-tracer 0.5.0's own outputs.

Runs only when ``MW_CT_FIXTURES`` points at a fixtures root holding
``<fixture>/runs/<tag>/{graph.npz, prune.npz, result.json, graph.pt, graph_files/}`` written by
the shared reference harness (``shared/reference/circuit_tracer_baseline/run_attribution.py``).
Also a script: ``python -m tests.tracer.test_ct_oracle_prune [ROOT]`` prints the comparison table.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = os.environ.get("MW_CT_FIXTURES")
RUNS = sorted(Path(ROOT).glob("*/runs/*")) if ROOT else []


def compare_run(run: Path) -> dict[str, Any]:
    """Our prune/scores on circuit-tracer's graph.npz vs its prune.npz and result.json."""
    from tracer.graph import PruneConfig, graph_scores, load_npz, prune_graph

    graph = load_npz(run / "graph.npz")
    want = np.load(run / "prune.npz")
    config = PruneConfig(node_threshold=float(want["node_threshold"]),
                         edge_threshold=float(want["edge_threshold"]))
    got = prune_graph(graph, config)
    edges = got.edge_index.numpy()
    scores = json.loads((run / "result.json").read_text())["scores"]
    ours = graph_scores(graph)
    return {
        "tag": run.name, "n_nodes": graph.n_nodes,
        "nodes_equal": bool(np.array_equal(got.node_mask.numpy(), want["node_mask"])),
        "edges_equal": edges.shape[1] == len(want["edge_target"])
        and bool(np.array_equal(edges[0], want["edge_target"]))
        and bool(np.array_equal(edges[1], want["edge_source"])),
        "n_kept": (int(got.node_mask.sum()), edges.shape[1]),
        "max_cum_diff": float(np.abs(got.cumulative_scores.numpy() - want["cumulative_scores"]).max()),
        "d_replacement": ours.replacement - scores["replacement"],
        "d_completeness": ours.completeness - scores["completeness"],
    }


def _ready(run: Path) -> bool:
    return all((run / f).exists() for f in ("graph.npz", "prune.npz", "result.json"))


@pytest.mark.skipif(not ROOT, reason="MW_CT_FIXTURES is not set")
@pytest.mark.parametrize("run", [r for r in RUNS if _ready(r)], ids=lambda r: r.name)
def test_prune_and_scores_equal_circuit_tracer(run: Path) -> None:
    row = compare_run(run)
    assert row["nodes_equal"] and row["edges_equal"], row
    assert row["max_cum_diff"] <= 1e-6, row
    assert abs(row["d_replacement"]) <= 1e-6 and abs(row["d_completeness"]) <= 1e-6, row


@pytest.mark.skipif(not ROOT, reason="MW_CT_FIXTURES is not set")
@pytest.mark.parametrize("run", [r for r in RUNS if (r / "graph.pt").exists() and (r / "graph.npz").exists()],
                         ids=lambda r: r.name)
def test_pt_import_equals_npz(run: Path) -> None:
    import torch

    from tracer.graph import load_npz
    from tracer.graph.ct_import import load_circuit_tracer_pt

    imported = load_circuit_tracer_pt(run / "graph.pt", trust_pickle=True)
    npz = load_npz(run / "graph.npz")
    for name in ("adjacency", "input_tokens", "active_features", "activation_values", "selected_features",
                 "logit_token_ids", "logit_probabilities"):
        assert torch.equal(getattr(imported, name), getattr(npz, name)), name
    assert imported.n_layers == npz.n_layers


@pytest.mark.skipif(not ROOT, reason="MW_CT_FIXTURES is not set")
@pytest.mark.parametrize("run", [r for r in RUNS if list(r.glob("graph_files/*.json"))
                                 and (r / "graph.pt").exists()], ids=lambda r: r.name)
def test_viewer_json_equals_circuit_tracer(run: Path, tmp_path: Path) -> None:
    from tracer.graph.ct_import import load_circuit_tracer_pt
    from tracer.graph.export import export_neuronpedia

    theirs_path = next(p for p in (run / "graph_files").glob("*.json") if p.name != "graph-metadata.json")
    theirs = json.loads(theirs_path.read_text())
    graph = load_circuit_tracer_pt(run / "graph.pt", trust_pickle=True)
    meta = theirs["metadata"]
    ours = json.loads(export_neuronpedia(graph, tmp_path, slug=meta["slug"],
                                         tokenizer=meta["prompt_tokens"]).read_text())
    assert {k: ours["metadata"][k] for k in meta} == meta
    assert ours["qParams"] == theirs["qParams"]
    assert ours["nodes"] == theirs["nodes"]
    assert ours["links"] == theirs["links"]


if __name__ == "__main__":  # pragma: no cover
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT or ".")
    print("| tag | N | nodes equal | edges equal | kept nodes/edges | max abs d cumulative | d replacement "
          "| d completeness |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(root.glob("*/runs/*")):
        if _ready(r):
            row = compare_run(r)
            print(f"| {row['tag']} | {row['n_nodes']} | {row['nodes_equal']} | {row['edges_equal']} | "
                  f"{row['n_kept'][0]}/{row['n_kept'][1]} | {row['max_cum_diff']:.1e} | "
                  f"{row['d_replacement']:.1e} | {row['d_completeness']:.1e} |")

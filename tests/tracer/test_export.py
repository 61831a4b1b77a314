"""tracer.graph.export: the viewer JSON (circuit-tracer's create_graph_files nodes and links), supernode edges."""

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import dense_prune as ref
from tracer.errors import WorkbenchError
from tracer.graph import (
    PruneConfig,
    cantor_pairing,
    load_prune_result,
    node_ids,
    prune_graph,
    save_prune_result,
)
from tracer.graph.export import build_neuronpedia, export_neuronpedia, supernode_edges
from tracer.labels import FeatureLabel


class _Tok:
    def decode(self, token_id: int) -> str:
        return f"<{int(token_id)}>"


@pytest.fixture
def graph():
    return ref.random_graph(7, n_pos=6, max_features=5)


def test_node_ids_follow_circuit_tracer(graph) -> None:
    ids = node_ids(graph)
    layer, pos, feat = graph.active_features[graph.selected_features[0]].tolist()
    assert ids[0] == f"{layer}_{feat}_{pos}"
    assert ids[graph.error_start + graph.n_pos + 2] == "0_1_2"
    assert ids[graph.token_start + 3] == f"E_{int(graph.input_tokens[3])}_3"
    assert ids[graph.logit_start] == f"{graph.n_layers + 1}_{int(graph.logit_token_ids[0])}_{graph.n_pos - 1}"
    assert len(ids) == graph.n_nodes
    assert cantor_pairing(3, 5) == 41


def test_nodes_and_links_equal_the_dense_reference(graph) -> None:
    data = build_neuronpedia(graph, slug="g", tokenizer=_Tok())
    node_mask, edge_mask, cumulative = ref.prune(graph)
    ids = node_ids(graph)
    kept = edge_mask & node_mask[:, None] & node_mask[None, :]
    want_links = [{"source": ids[s], "target": ids[t], "weight": float(graph.adjacency[t, s])}
                  for t, s in kept.nonzero().tolist()]
    assert data["links"] == want_links
    touched = kept.any(0) | kept.any(1)
    touched[graph.token_start:] = True
    want_nodes = [ids[i] for i in (node_mask & touched).nonzero().flatten().tolist()]
    assert [n["node_id"] for n in data["nodes"]] == want_nodes
    by_id = {n["node_id"]: n for n in data["nodes"]}
    for i in (node_mask & touched).nonzero().flatten().tolist()[:5]:
        if i < graph.token_start:
            assert by_id[ids[i]]["influence"] == float(cumulative[i])
    logit = by_id[ids[graph.logit_start]]
    p = float(graph.logit_probabilities[0])
    assert logit["is_target_logit"] and logit["token_prob"] == p and logit["influence"] is None
    assert logit["clerp"] == f'Output "{graph.logit_tokens[0]}" (p={p:.3f})'
    assert logit["jsNodeId"] == f"L_{int(graph.logit_token_ids[0])}-{graph.n_pos - 1}"
    assert data["metadata"]["prompt_tokens"] == [f"<{t}>" for t in graph.input_tokens.tolist()]
    assert data["qParams"] == {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                               "sg_pos": ""}


def test_feature_and_error_fields(graph) -> None:
    config = PruneConfig(node_threshold=1.0, edge_threshold=0.99)
    data = build_neuronpedia(graph, slug="g", prune_config=config)
    features = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    f = features[0]
    layer, feat, pos = (int(x) for x in f["node_id"].split("_"))
    want = (str(layer), pos, cantor_pairing(layer, feat), f"{layer}_{feat}-0")
    assert (f["layer"], f["ctx_idx"], f["feature"], f["jsNodeId"]) == want
    active = graph.active_features.tolist().index([layer, pos, feat])
    assert f["activation"] == float(graph.activation_values[active])
    errors = [n for n in data["nodes"] if n["feature_type"] == "mlp reconstruction error"]
    assert errors and all(n["feature"] == -1 and n["activation"] is None for n in errors)
    tokens = [n for n in data["nodes"] if n["feature_type"] == "embedding"]
    assert [n["ctx_idx"] for n in tokens] == list(range(graph.n_pos)) and tokens[0]["layer"] == "E"


def test_labels_supernodes_and_pins(graph, caplog: pytest.LogCaptureFixture) -> None:
    data = build_neuronpedia(graph, slug="g")
    features = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    a, b = features[0], features[1]
    la, fa, _ = (int(x) for x in a["node_id"].split("_"))
    labels = {(la, fa): FeatureLabel(layer=la, feature=fa, label="alpha"), b["node_id"]: "beta"}
    groups = [["pair", a["node_id"], b["node_id"]]]
    with caplog.at_level(logging.WARNING):
        data = build_neuronpedia(graph, slug="g", labels=labels, supernodes=groups,
                                 pinned_ids=[a["node_id"], "99_99_99"])
    by_id = {n["node_id"]: n for n in data["nodes"]}
    assert (by_id[a["node_id"]]["clerp"], by_id[b["node_id"]]["clerp"]) == ("alpha", "beta")
    assert data["qParams"]["supernodes"] == groups
    assert data["qParams"]["pinnedIds"] == [a["node_id"], "99_99_99"]
    assert "1 pinned/supernode ids are not in the exported graph" in caplog.text and "99_99_99" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # every id known: no warning (supernode members were once always counted)
        build_neuronpedia(graph, slug="g", supernodes=groups, pinned_ids=[a["node_id"]])
    assert "not in the exported graph" not in caplog.text
    with pytest.raises(WorkbenchError, match=r"each supernode must be \[label, node_id, ...\]"):
        build_neuronpedia(graph, slug="g", supernodes=[["lonely"]])


def test_labels_of_another_set_are_refused(graph) -> None:
    """Labels of another transcoder set were written as the nodes' notes (the CLI refused them; the API did not)."""
    layer, _, feat = graph.active_features[graph.selected_features[0]].tolist()
    labels = {(layer, feat): FeatureLabel(layer=layer, feature=feat, label="x", extra={"scan": "set-b"})}
    with pytest.raises(WorkbenchError, match="labels must be for the graph's transcoders 'set-a'"):
        build_neuronpedia(dataclasses.replace(graph, scan="set-a"), slug="g", labels=labels)
    # `scan` is the viewer's id (a model id will do): a graph that records no set cannot hold labels to one
    build_neuronpedia(dataclasses.replace(graph, scan=""), slug="g", labels=labels, scan="some-model")
    data = build_neuronpedia(dataclasses.replace(graph, scan="set-b"), slug="g", labels=labels)
    assert "x" in {n["clerp"] for n in data["nodes"]}


def test_export_writes_and_upserts_atomically(graph, tmp_path: Path) -> None:
    out = tmp_path / "viewer"
    first = export_neuronpedia(graph, out, slug="one", tokenizer=[f"t{i}" for i in range(graph.n_pos)])
    export_neuronpedia(graph, out, slug="two", tokenizer=_Tok())
    export_neuronpedia(graph, out, slug="one", tokenizer=_Tok())
    index = json.loads((out / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["two", "one"]
    assert index["graphs"][1]["prompt_tokens"][0] == f"<{int(graph.input_tokens[0])}>"
    data = json.loads(first.read_text())
    assert data["metadata"]["schema_version"] == 1 and data["metadata"]["scan"] == "random-scan"
    assert data["metadata"]["info"]["generator"]["name"] == "manifold-workbench"
    assert sorted(p.name for p in out.iterdir()) == ["graph-metadata.json", "one.json", "two.json"]


def test_export_rejects_bad_input(graph, tmp_path: Path) -> None:
    for slug in ("", "a/b", "../x", "-x"):
        with pytest.raises(WorkbenchError, match="slug must be"):
            export_neuronpedia(graph, tmp_path, slug=slug)
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkbenchError, match="must be a folder"):
        export_neuronpedia(graph, tmp_path / "file", slug="s")
    (tmp_path / "graph-metadata.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="graph-metadata.json must be valid JSON"):
        export_neuronpedia(graph, tmp_path, slug="s")
    assert not (tmp_path / "s.json").exists()
    with pytest.raises(WorkbenchError, match="prompt token strings must be"):
        build_neuronpedia(graph, slug="s", tokenizer=["a"])
    with pytest.raises(WorkbenchError, match="scan must be set"):
        build_neuronpedia(dataclasses.replace(graph, scan="", model_id=""), slug="s")


def test_non_finite_numbers_become_null(graph) -> None:
    acts = graph.activation_values.clone()
    acts[:] = float("nan")
    data = build_neuronpedia(dataclasses.replace(graph, activation_values=acts), slug="s")
    assert all(n["activation"] is None for n in data["nodes"])
    json.dumps(data, allow_nan=False)


def test_prune_result_is_reused(graph) -> None:
    result = prune_graph(graph, PruneConfig(node_threshold=0.5))
    a = build_neuronpedia(graph, slug="s", prune_result=result, prune_config=PruneConfig(node_threshold=0.5))
    b = build_neuronpedia(graph, slug="s", prune_config=PruneConfig(node_threshold=0.5))
    assert a == b
    assert a["metadata"]["pruning_settings"]["node_threshold"] == 0.5
    # a result alone: the thresholds it was made with are unknown (they were recorded as the defaults)
    with pytest.raises(ValueError, match="prune_config must be given with prune_result"):
        build_neuronpedia(graph, slug="s", prune_result=result)


# ----------------------------------------------------------------------------- supernode edges
def test_supernode_edges_by_hand() -> None:
    links = [
        {"source": "a", "target": "c", "weight": 2.0},
        {"source": "b", "target": "c", "weight": -1.0},
        {"source": "a", "target": "b", "weight": 0.5},
        {"source": "d", "target": "a", "weight": 1.0},
    ]
    view = supernode_edges(["a", "b", "c", "d"], links, ["a", "b", "c", "zz"], [["S", "a", "b"]])
    assert view.members == {"c": ["c"], "S": ["a", "b"]}
    assert len(view.links) == 1
    link = view.links[0]
    assert (link.source, link.target) == ("S", "c")
    assert link.weight == pytest.approx(2 / 3 - 1 / 3)  # all of c's input is external; share 1


def test_supernode_label_colliding_with_a_pinned_id_gets_an_index() -> None:
    links = [{"source": "a", "target": "c", "weight": 1.0}, {"source": "x", "target": "a", "weight": 3.0},
             {"source": "b", "target": "a", "weight": 1.0}]
    view = supernode_edges(["a", "b", "c", "x"], links, ["a", "b", "c"], [["c", "a"], ["c", "b"]])
    assert set(view.members) == {"c", "supernode-0", "supernode-1"}
    weights = {(link.source, link.target): link.weight for link in view.links}
    # a's input: x (3, external) and b (1, another supernode, so external too): share 1
    assert weights[("supernode-0", "c")] == pytest.approx(1.0)
    assert weights[("supernode-1", "supernode-0")] == pytest.approx(1 / 4)
    assert torch.tensor([abs(link.weight) for link in view.links]).diff().ge(0).all()


# ----------------------------------------------------------------------------- prune result files
@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1000), st.sampled_from([".npz", ".safetensors"]), st.floats(0, 1))
def test_prune_result_save_load_round_trip(seed: int, suffix: str, node_t: float) -> None:
    import tempfile

    graph = ref.random_graph(seed)
    result = prune_graph(graph, PruneConfig(node_threshold=node_t))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_prune_result(result, Path(tmp) / f"p{suffix}", meta={"node_threshold": node_t})
        back, meta = load_prune_result(path)
    assert torch.equal(back.node_mask, result.node_mask)
    assert torch.equal(back.edge_index, result.edge_index)
    assert torch.equal(back.cumulative_scores, result.cumulative_scores)
    assert meta == {"schema_version": 1, "node_threshold": node_t}


def test_load_prune_result_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(WorkbenchError, match="prune result must be a file written by"):
        load_prune_result(bad)
    with pytest.raises(WorkbenchError, match="must exist"):
        load_prune_result(tmp_path / "missing.npz")

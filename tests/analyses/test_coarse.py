"""analyses.coarse: coarse graphs built by the viewer's supernode formula, saved, exported, drawn."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from matplotlib.colors import to_hex

from analyses.coarse import CoarseGraph, SupernodeGraphDisplay, build_coarse_graph, graph_links, with_columns
from analyses.display import EDGE_COLOURS, NODE_COLOURS
from analyses.results import load_result, save_result
from tests.reference import dense_prune as ref
from tests.reference import viewer_supernodes as viewer
from tracer.graph import PruneConfig, node_ids, prune_graph, viewer_subgraph
from tracer.graph.export import build_neuronpedia


def _feature_groups(graph, rng: np.random.Generator, n_groups: int = 3) -> list[list[int]]:
    feats = rng.permutation(graph.n_selected)
    size = max(1, graph.n_selected // (2 * n_groups))
    return [sorted(feats[k * size:(k + 1) * size].tolist()) for k in range(n_groups) if size * (k + 1) <= len(feats)]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.3, 1.0))
def test_edges_equal_the_viewer_formula_on_the_exported_json(seed: int, node_t: float) -> None:
    graph = ref.random_graph(seed, max_features=5)
    assume(len(set(node_ids(graph))) == graph.n_nodes)  # error ids "0_{layer}_{pos}" can clash with layer-0 features
    config = PruneConfig(node_threshold=node_t)
    result = prune_graph(graph, config)
    shown_index = set(viewer_subgraph(graph, result).node_index.tolist())
    groups = [[g for g in grp if g in shown_index] for grp in _feature_groups(graph, np.random.default_rng(seed))]
    groups = [g for g in groups if g]
    coarse = build_coarse_graph(graph, groups, prune_result=result, labels=[f"S{i}" for i in range(len(groups))])
    data = build_neuronpedia(graph, slug="g", prune_config=config, prune_result=result,
                             supernodes=coarse.to_supernodes(), pinned_ids=coarse.pinned_ids())
    assert data["metadata"]["pruning_settings"]["node_threshold"] == node_t
    shown = [n["node_id"] for n in data["nodes"]]
    members, links = viewer.supernode_edges(shown, data["links"], data["qParams"]["pinnedIds"] * (len(shown) <= 200),
                                            data["qParams"]["supernodes"])
    if len(shown) > 200:
        return  # the viewer pins at most 200 nodes; the coarse graph has no such cap
    name = {}
    for i in range(coarse.n_nodes):
        ids = list(coarse.node(i).node_ids)
        matches = [k for k, v in members.items() if v == ids]
        assert len(matches) == 1, (ids, members)
        name[matches[0]] = i
    got = {(s, t): w for s, t, w in coarse.edges()}
    want = {(name[s], name[t]): w for s, t, w in links}
    assert set(got) == set(want)
    for key, w in want.items():
        assert got[key] == pytest.approx(w, rel=1e-9, abs=1e-9)


def test_node_table_ranges_values_and_labels() -> None:
    graph = ref.random_graph(3, max_features=4)
    ids = node_ids(graph)
    feats = [0, 1, 2]
    coarse = build_coarse_graph(graph, [feats], singletons=[graph.logit_start, graph.token_start + 1])
    assert coarse.kind == ("supernode", "token", "logit")
    node = coarse.node(0)
    keys = graph.active_features[graph.selected_features[feats]].numpy()
    assert node.node_ids == tuple(ids[i] for i in feats)
    assert node.layer_range == (keys[:, 0].min(), keys[:, 0].max())
    assert node.pos_range == (keys[:, 1].min(), keys[:, 1].max())
    acts = graph.activation_values[graph.selected_features[feats]]
    assert node.value == pytest.approx(float(acts.sum()))
    assert np.isnan(coarse.value[1]) and coarse.value[2] == pytest.approx(float(graph.logit_probabilities[0]))
    assert coarse.label[2] == graph.logit_tokens[0] and coarse.label[0].endswith("x3")
    assert coarse.to_supernodes() == [[coarse.label[0], *node.node_ids]]
    assert coarse.qparams()["pinnedIds"] == [*node.node_ids, ids[graph.token_start + 1], ids[graph.logit_start]]


def test_sign_consistency_by_hand() -> None:
    graph = ref.random_graph(5, max_features=4)
    adj = torch.zeros_like(graph.adjacency)
    logit = graph.logit_start
    adj[logit, 0], adj[logit, 1] = 3.0, -1.0  # two members, opposite signs into the logit
    graph = type(graph)(**{**graph.__dict__, "adjacency": adj})
    coarse = build_coarse_graph(graph, [[0, 1]], singletons=[logit])
    assert coarse.adjacency[1, 0] == pytest.approx(0.5)  # (3 - 1) / 4
    assert coarse.sign_consistency[1, 0] == pytest.approx(0.75)
    assert coarse.link_mass[1, 0] == pytest.approx(1.0)
    assert np.isnan(coarse.sign_consistency[0, 1])


def test_links_from_a_node_mask_read_in_blocks_equal_the_dense_ones() -> None:
    graph = ref.random_graph(7, max_features=5)
    mask = torch.rand(graph.n_nodes, generator=torch.Generator().manual_seed(0)) < 0.7
    edges, weights = graph_links(graph, node_mask=mask, block_rows=3)
    dense = graph.adjacency * mask[:, None] * mask[None, :]
    t, s = dense.nonzero(as_tuple=True)
    assert sorted(zip(edges[0].tolist(), edges[1].tolist())) == sorted(zip(t.tolist(), s.tolist()))
    assert weights.dtype == np.float64 and np.allclose(sorted(weights), sorted(dense[t, s].double().numpy()))


def test_save_load_round_trip_with_columns(tmp_path) -> None:
    graph = ref.random_graph(11)
    coarse = build_coarse_graph(graph, [[0, 1], [2]], columns={"coordinate": [0.25, 0.5]})
    coarse = with_columns(coarse, magnitude=np.arange(coarse.n_nodes, dtype=float))
    back = load_result(save_result(coarse, tmp_path / "coarse.json"), CoarseGraph)
    for name in ("member_ptr", "member_nodes", "member_keys", "layer_range", "pos_range", "value", "adjacency",
                 "sign_consistency", "link_mass"):
        np.testing.assert_array_equal(getattr(back, name), getattr(coarse, name))
    assert back.kind == coarse.kind and back.label == coarse.label and back.member_ids == coarse.member_ids
    np.testing.assert_array_equal(back.columns["coordinate"], coarse.columns["coordinate"])
    assert back.meta == coarse.meta


def test_an_inconsistent_coarse_graph_is_refused() -> None:
    coarse = build_coarse_graph(ref.random_graph(11), [[0, 1], [2]], columns={"coordinate": [0.25, 0.5]})
    with pytest.raises(ValueError, match=r"CoarseGraph value must have shape"):
        dataclasses.replace(coarse, value=coarse.value[:-1])
    with pytest.raises(ValueError, match=r"CoarseGraph columns\['coordinate'\] must have shape"):
        dataclasses.replace(coarse, columns={"coordinate": np.zeros(1)})
    with pytest.raises(ValueError, match="CoarseGraph member_ptr must rise from 0"):
        dataclasses.replace(coarse, member_ptr=coarse.member_ptr[::-1].copy())


@pytest.mark.parametrize("groups, message", [
    ([[0, 1], [1, 2]], "groups must be disjoint"),
    ([[]], "at least one node"),
    ([[10_000]], "node indices in"),
])
def test_bad_groups(groups, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_coarse_graph(ref.random_graph(1), groups)


def test_labels_must_match_groups() -> None:
    with pytest.raises(ValueError, match="one entry per group"):
        build_coarse_graph(ref.random_graph(1), [[0, 1]], labels=["a", "b"])


def test_display_draws_nodes_and_signed_edges(tmp_path) -> None:
    graph = ref.random_graph(2, max_features=5)
    coarse = build_coarse_graph(graph, [[0, 1, 2]], prune_result=prune_graph(graph))
    disp = SupernodeGraphDisplay.from_coarse_graph(coarse, max_edges=20).plot()
    assert len(disp.ax_.collections) == len(set(coarse.kind))
    colours = {line.get_color() for line in disp.ax_.lines}
    assert colours <= set(EDGE_COLOURS.values()) and len(disp.ax_.lines) == min(20, len(coarse.edges()))
    # node colours are the report's (one palette, analyses.display), none of them an edge colour
    for points in disp.ax_.collections:
        assert to_hex(points.get_facecolor()[0]) == NODE_COLOURS[points.get_label()]
    assert not set(NODE_COLOURS.values()) & set(EDGE_COLOURS.values())
    assert disp.savefig(tmp_path / "g.svg").stat().st_size > 0
    texts = [t.get_text() for t in disp.ax_.texts]
    assert texts == [label[:28] for label in coarse.label]
    numbered = SupernodeGraphDisplay.from_coarse_graph(coarse, max_edges=20, numbered=True).plot()
    groups = [i for i, kind in enumerate(coarse.kind) if kind in ("supernode", "feature")]
    got = [t.get_text() for t in numbered.ax_.texts]
    assert [got[i] for i in groups] == [str(k + 1) for k in range(len(groups))]  # groups numbered in node order
    assert all(got[i] == coarse.label[i][:28] for i in range(coarse.n_nodes) if i not in groups)


def test_inlined_svg_escapes_hostile_labels() -> None:
    """Reports inline ``to_svg()`` output as it is, so label text (from a labels file a user downloaded)
    must come out escaped: no markup of its own, not even through matplotlib's text comments."""
    import numpy as np

    hostile = "--><script>alert(1)</script><!--"
    disp = SupernodeGraphDisplay(x=np.array([0.0, 1.0]), y=np.array([0.0, 1.0]), labels=[hostile, "a<b>&c"],
                                 kinds=["supernode", "token"], sizes=np.array([2, 1]), edges=[(0, 1, 1.0)],
                                 n_layers=2, title="<img src=x onerror=alert(1)>")
    svg = disp.to_svg()
    assert "<script" not in svg and "<img" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg  # the label is there, escaped

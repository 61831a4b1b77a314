"""QA pass 20, supernodes and coarse graphs: inputs made for another graph (a prune result, a families
table, token strings) are refused naming both sizes; candidates are not truncated; node indices are
checked."""

import numpy as np
import pytest
import torch

from analyses.coarse import build_coarse_graph
from analyses.supernodes.circuit import ReadableCircuit
from analyses.supernodes.clustering import SupernodeClustering
from tests.analyses.supernodes.planted import planted_graph
from tracer.graph import PruneConfig, prune_graph

PRUNE = PruneConfig(node_threshold=0.8, edge_threshold=0.98)


def test_a_prune_result_of_another_graph_is_refused() -> None:
    """A node_mask of 58 nodes was accepted for a 108-node graph."""
    graph, _ = planted_graph(0, n_pos=5)
    other, _ = planted_graph(1, n_pos=3)
    assert graph.n_nodes != other.n_nodes
    foreign = prune_graph(other, PRUNE)
    n, m = graph.n_nodes, other.n_nodes
    message = rf"prune_result must come from this graph of {n} nodes.*got one for {m} nodes \(node_mask \({m},\)"
    with pytest.raises(ValueError, match=message):
        ReadableCircuit().fit(graph, prune_result=foreign)
    with pytest.raises(ValueError, match=message):
        SupernodeClustering().fit(graph, prune_result=foreign)
    with pytest.raises(ValueError, match=message):
        build_coarse_graph(graph, [], prune_result=foreign)


def test_a_families_table_that_does_not_cover_the_graph_is_refused() -> None:
    """np.zeros((1, 1)) put every feature in no family without a word."""
    graph, _ = planted_graph(0)
    mask = torch.ones(graph.n_nodes, dtype=torch.bool)
    n_feat = int(graph.active_features[:, 2].max()) + 1
    for bad in (np.zeros((1, 1), dtype=np.int64), np.zeros((graph.n_layers, n_feat - 1), dtype=np.int64),
                np.zeros(n_feat, dtype=np.int64)):
        with pytest.raises(ValueError, match=rf"families must be an array .* = \({graph.n_layers}, >= {n_feat}\)"):
            SupernodeClustering().fit(graph, node_mask=mask, families=bad)
    with pytest.raises(TypeError, match="families must hold integers"):
        SupernodeClustering().fit(graph, node_mask=mask, families=np.full((graph.n_layers, n_feat), 0.5))
    table = np.full((graph.n_layers, n_feat), -1, dtype=np.int64)
    est = SupernodeClustering().fit(graph, node_mask=mask, families=table)
    assert "family" in est.similarities_used_


def test_fractional_candidates_are_refused_not_truncated() -> None:
    """candidates=[0.5] clustered feature 0."""
    graph, _ = planted_graph(0)
    mask = torch.ones(graph.n_nodes, dtype=torch.bool)
    with pytest.raises(TypeError, match=r"candidates must hold integers; got \[0\.5\]"):
        SupernodeClustering().fit(graph, node_mask=mask, candidates=[0.5])  # type: ignore[list-item]
    est = SupernodeClustering().fit(graph, node_mask=mask, candidates=[np.int64(0), 1.0])  # type: ignore[list-item]
    assert est.candidates_.tolist() == [0, 1]


def test_token_strings_of_the_wrong_length_are_refused_before_clustering() -> None:
    """ReadableCircuit.fit(token_strings=["a"]) was an IndexError while labelling the tokens."""
    graph, _ = planted_graph(0, n_pos=5)
    with pytest.raises(ValueError, match=r"token_strings must hold one string per input position \(5\); got 1"):
        ReadableCircuit().fit(graph, token_strings=["a"])
    with pytest.raises(ValueError, match=r"token_strings must hold one string per input position \(5\); got 'abcde'"):
        build_coarse_graph(graph, [], token_strings="abcde")
    coarse = ReadableCircuit(budget=2).fit(graph, token_strings=list("abcde")).coarse_graph_
    assert [coarse.label[i] for i in range(coarse.n_nodes) if coarse.kind[i] == "token"] == list("abcde")


def test_coarse_node_indices_are_checked() -> None:
    """node(999) / members(999) were IndexErrors; node(-1) returned an empty, wrong node."""
    graph, _ = planted_graph(0)
    coarse = ReadableCircuit(budget=2).fit(graph).coarse_graph_
    n = coarse.n_nodes
    for bad in (n, 999, -1):
        with pytest.raises(ValueError, match=rf"node index must be an integer in \[0, {n}\); got {bad}"):
            coarse.node(bad)
        with pytest.raises(ValueError, match="node index must be"):
            coarse.members(bad)
    with pytest.raises(TypeError, match="node index must be an integer; got 1.0"):
        coarse.node(1.0)  # type: ignore[arg-type]
    assert coarse.node(np.int64(n - 1)).members.shape[1] == 3
    np.testing.assert_array_equal(coarse.members(0), coarse.node(0).node_index)


def test_supernode_configs_take_numpy_numbers():
    from analyses.supernodes.config import CircuitConfig, ClusteringConfig

    assert ClusteringConfig(max_group_size=np.int64(5)).max_group_size == 5
    assert ClusteringConfig(edge_weight=np.float32(0.25)).edge_weight == 0.25
    assert CircuitConfig(budget=np.int32(7)).budget == 7
    with pytest.raises(TypeError, match="max_group_size must be an integer; got np.True_"):
        ClusteringConfig(max_group_size=np.bool_(True))  # type: ignore[arg-type]


def test_groups_given_one_label_get_distinct_labels() -> None:
    """The viewers key a supernode by its label: two groups named alike were drawn as one."""
    graph, _ = planted_graph(0, n_pos=5)
    feats = list(range(min(graph.n_selected, 4)))
    coarse = build_coarse_graph(graph, [feats[:2], feats[2:4]], labels=["say a day", "say a day"])
    names = [coarse.label[i] for i in range(coarse.n_nodes) if coarse.kind[i] == "supernode"]
    assert sorted(names) == ["say a day", "say a day (2)"]
    assert [g[0] for g in coarse.to_supernodes()] == names

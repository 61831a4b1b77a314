"""ReadableCircuit: budget, greedy choice, exact scores, sign consistency, saving."""

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.base import clone as sk_clone

from analyses.results import load_result, save_result
from analyses.supernodes.circuit import CircuitResult, ReadableCircuit, _Flows, choose_groups, group_gains
from analyses.supernodes.clustering import SupernodeClustering
from tests.analyses.supernodes.planted import planted_graph
from tracer.graph import Graph, PruneConfig, SubgraphScorer, prune_graph, viewer_subgraph


def _chain_graph() -> Graph:
    """BOS + one position... nodes: f1 (L0, pos 1) | errors (1 layer x 2 pos) | tokens (2) | logit."""
    n = 1 + 2 + 2 + 1
    A = torch.zeros(n, n)
    f1, e_bos, e1, t0, t1, logit = range(n)
    A[logit, f1], A[logit, e1] = 1.0, 1.0
    A[f1, t1], A[f1, e1] = 1.0, 3.0
    return Graph(adjacency=A, input_tokens=torch.tensor([1, 7]), active_features=torch.tensor([[0, 1, 5]]),
                 activation_values=torch.tensor([2.0]), selected_features=torch.tensor([0]),
                 logit_token_ids=torch.tensor([9]), logit_probabilities=torch.tensor([1.0]),
                 logit_vectors=torch.zeros(1, 4), n_layers=1, d_vocab=10)


def test_estimated_gain_equals_the_exact_change_on_a_chain() -> None:
    graph = _chain_graph()
    result = prune_graph(graph, PruneConfig(node_threshold=1.0, edge_threshold=1.0))
    scorer = SubgraphScorer(graph, result)
    none = scorer(torch.zeros(graph.n_nodes, dtype=torch.bool)).replacement
    pinned = torch.zeros(graph.n_nodes, dtype=torch.bool)
    pinned[0] = True
    gain, flow = group_gains(_Flows(graph, viewer_subgraph(graph, result)), np.zeros(graph.n_nodes, dtype=bool))
    assert flow[0] == pytest.approx(0.5) and gain[0] == pytest.approx(0.5 * 0.25)
    assert (none, scorer(pinned).replacement) == pytest.approx((0.0, 0.125))  # total flow 1: T = gain


def test_everything_fits_the_budget_so_the_circuit_is_the_pruned_graph() -> None:
    graph, _ = planted_graph(0)
    rc = ReadableCircuit(budget=1000).fit(graph)
    s = rc.scores_
    assert s.circuit == s.pruned and s.replacement_ratio == pytest.approx(1.0)
    assert s.n_features == s.n_pruned_features and s.n_groups == len(rc.clustering_.groups_)
    assert s.compression == pytest.approx(s.n_features / s.n_groups)
    kinds = set(rc.coarse_graph_.kind)
    assert kinds <= {"supernode", "feature", "token", "logit"} and "logit" in kinds and "token" in kinds


@pytest.mark.parametrize("seed", range(3))
def test_a_small_budget_keeps_more_than_random_groups(seed: int) -> None:
    graph, _ = planted_graph(seed, n_pos=5)
    rc = ReadableCircuit(budget=4).fit(graph)
    assert rc.scores_.n_groups == 4 and len(rc.clustering_.groups_) > 4
    groups = rc.clustering_.groups_
    scorer = SubgraphScorer(graph, rc.prune_result_)
    rng = np.random.default_rng(seed)
    random = [scorer([int(i) for k in rng.choice(len(groups), 4, replace=False) for i in groups[k]]).replacement
              for _ in range(20)]
    assert rc.scores_.circuit["replacement"] > np.quantile(random, 0.9)
    est_only = choose_groups(graph, rc.prune_result_, groups, 4, exact_candidates=0)
    assert est_only == choose_groups(graph, rc.prune_result_, groups, 4, exact_max_links=0) and len(est_only) == 4
    est_score = scorer([int(i) for k in est_only for i in groups[k]]).replacement
    assert est_score > np.quantile(random, 0.9)


def test_budget_is_validated_and_results_save(tmp_path) -> None:
    graph, _ = planted_graph(1)
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        ReadableCircuit(budget=0).fit(graph)
    with pytest.raises(TypeError, match="clustering must be a SupernodeClustering"):
        ReadableCircuit(clustering="edges").fit(graph)  # type: ignore[arg-type]
    rc = ReadableCircuit(budget=3, clustering=SupernodeClustering(max_group_size=2)).fit(graph)
    assert all(len(g) <= 2 for g in rc.clustering_.groups_)
    back = load_result(save_result(rc.result(), tmp_path / "circuit.json"), CircuitResult)
    assert back.scores.circuit == rc.scores_.circuit and back.scores.sign_consistency == rc.scores_.sign_consistency
    np.testing.assert_array_equal(back.coarse.adjacency, rc.coarse_graph_.adjacency)
    sc = rc.scores_.sign_consistency
    assert 0.5 <= sc["min"] <= sc["mean"] <= 1.0 and sc["n_links"] > 0


def test_nested_clustering_params_follow_scikit_learn() -> None:
    """``clustering__*`` was missing from get_params(deep=True), and set_params refused it."""
    rc = ReadableCircuit(clustering=SupernodeClustering())
    params = rc.get_params(deep=True)
    assert params["clustering__min_affinity"] == SupernodeClustering().min_affinity and "clustering__cut" in params
    assert "clustering__cut" not in rc.get_params(deep=False)
    assert rc.set_params(clustering__min_affinity=0.4, clustering__max_group_size=2) is rc
    assert rc.clustering is not None and (rc.clustering.min_affinity, rc.clustering.max_group_size) == (0.4, 2)
    copy = sk_clone(rc)
    assert copy.clustering is not rc.clustering and copy.get_params()["clustering__min_affinity"] == 0.4
    fitted = copy.fit(planted_graph(1)[0])  # the nested parameters reach the fit
    assert all(len(g) <= 2 for g in fitted.clustering_.groups_)
    with pytest.raises(ValueError, match="clustering must be an estimator"):
        ReadableCircuit().set_params(clustering__min_affinity=0.4)


def test_an_inconsistent_result_is_refused() -> None:
    result = ReadableCircuit(budget=3).fit(planted_graph(1)[0]).result()
    with pytest.raises(ValueError, match="CircuitResult chosen must index the clustering's"):
        dataclasses.replace(result, chosen=np.array([10_000]))

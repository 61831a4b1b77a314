"""tracer.graph.prune against the dense reference (tests/reference/dense_prune.py) and its properties."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import tracer.graph.influence as influence_mod
import tracer.graph.prune as prune_mod
from tests.reference import dense_prune as ref
from tracer.errors import WorkbenchError
from tracer.graph import (
    Graph,
    PruneConfig,
    compute_influence,
    compute_partial_influences,
    graph_scores,
    normalize_matrix,
    prune_graph,
    subgraph_scores,
)
from tracer.graph.influence import logit_weights
from tracer.graph.prune import find_threshold, viewer_subgraph

SEEDS = st.integers(0, 10_000)
FAST = settings(max_examples=15, deadline=None)


def _dense_edges(result: prune_mod.PruneResult) -> torch.Tensor:
    return result.edge_mask.to_dense()


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("field", ["node_threshold", "edge_threshold"])
@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "0.8", True, None])
def test_config_rejects_bad_thresholds(field: str, value: object) -> None:
    with pytest.raises(WorkbenchError, match=rf"^{field} must be in \[0, 1\]; got "):
        PruneConfig(**{field: value})  # type: ignore[arg-type]  # bad values on purpose


def test_config_defaults_and_frozen() -> None:
    config = PruneConfig()
    assert (config.node_threshold, config.edge_threshold) == (0.8, 0.98)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node_threshold = 0.5  # type: ignore[misc]  # the frozen field is the point
    assert str(PruneConfig(node_threshold=1, edge_threshold=0)) != ""


# ----------------------------------------------------------------------------- properties
@FAST
@given(arrays("float32", st.tuples(st.integers(1, 12), st.integers(1, 12)),
              elements=st.floats(-1e3, 1e3, width=32).filter(lambda x: x == 0 or abs(x) > 1e-6)))
def test_normalized_rows_sum_to_one_or_zero(matrix) -> None:
    # (rows whose |sum| is below the clamp 1e-10 sum to less than 1 by design; excluded here)
    sums = normalize_matrix(torch.from_numpy(matrix)).sum(1)
    assert bool(((sums - 1).abs() < 1e-5).logical_or(sums == 0).all())


@FAST
@given(SEEDS)
def test_influence_is_non_negative_and_equals_dense(seed: int) -> None:
    graph = ref.random_graph(seed)
    w = logit_weights(graph)
    influence = compute_influence(graph.adjacency, w)
    assert bool((influence >= 0).all())
    assert torch.equal(influence, ref.influence(ref.normalize(graph.adjacency), w))


@FAST
@given(SEEDS, st.floats(0, 1), st.floats(0, 1))
def test_prune_keeps_tokens_and_logits_and_node_cut_is_monotone(seed: int, t1: float, t2: float) -> None:
    graph = ref.random_graph(seed)
    result = prune_graph(graph, PruneConfig(node_threshold=t1, edge_threshold=t2))
    assert bool(result.node_mask[graph.token_start:].all())
    influence = compute_influence(graph.adjacency, logit_weights(graph))
    low, high = sorted((t1, t2))
    kept_low = influence >= find_threshold(influence, low)
    kept_high = influence >= find_threshold(influence, high)
    assert bool(kept_low.le(kept_high).all())


@FAST
@given(SEEDS, st.sampled_from([0.0, 0.3, 0.8, 0.95, 1.0]), st.sampled_from([0.0, 0.5, 0.9, 0.98]))
def test_prune_equals_dense_reference(seed: int, node_t: float, edge_t: float) -> None:
    graph = ref.random_graph(seed, n_pos=6, max_features=6)
    result = prune_graph(graph, PruneConfig(node_threshold=node_t, edge_threshold=edge_t))
    node_mask, edge_mask, cumulative = ref.prune(graph, node_t, edge_t)
    assert torch.equal(result.node_mask, node_mask)
    assert torch.equal(_dense_edges(result), edge_mask)
    assert torch.equal(result.cumulative_scores, cumulative)
    assert torch.equal(result.edge_index, edge_mask.nonzero().t())


def test_prune_logs_its_phases(caplog: pytest.LogCaptureFixture) -> None:
    """A large memory-mapped graph prunes for minutes: each phase says what it is doing before it starts."""
    graph = ref.random_graph(1)
    with caplog.at_level("INFO", logger="tracer.graph.prune"):
        prune_graph(graph, PruneConfig(node_threshold=0.8))
    influence = compute_influence(graph.adjacency, logit_weights(graph))
    kept = (influence >= find_threshold(influence, 0.8))[:graph.token_start].sum() + graph.n_nodes - graph.token_start
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"pruning {graph.n_nodes} nodes: influence of each node on the logits"
    assert lines[1] == (f"pruning: {int(kept)} nodes hold node_threshold 0.8 of the influence; "
                        "scoring their edges")
    assert lines[-1].startswith("pruned to ")


def test_prune_equals_dense_on_a_graph_that_splits_torch_sums_across_threads() -> None:
    graph = ref.random_graph(3, n_layers=4, n_pos=12, max_features=8)  # N^2 > 32768
    assert graph.n_nodes ** 2 > prune_mod._TORCH_GRAIN
    for config in (PruneConfig(), PruneConfig(node_threshold=0.95, edge_threshold=0.9)):
        result = prune_graph(graph, config)
        node_mask, edge_mask, _ = ref.prune(graph, config.node_threshold, config.edge_threshold)
        assert torch.equal(result.node_mask, node_mask)
        assert torch.equal(_dense_edges(result), edge_mask)


def test_edge_threshold_one_keeps_nonzero_edges_and_circuit_tracers_nodes() -> None:
    graph = ref.random_graph(11, n_pos=6)
    result = prune_graph(graph, PruneConfig(node_threshold=0.8, edge_threshold=1.0))
    node_mask, edge_mask, _ = ref.prune(graph, 0.8, 1.0)
    assert torch.equal(result.node_mask, node_mask)
    dense = _dense_edges(result)
    assert bool(dense.le(edge_mask).all())  # circuit-tracer may also mark zero-score pairs
    assert bool((graph.adjacency[dense] != 0).all())


def test_blocked_path_agrees_with_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = ref.random_graph(5, n_layers=4, n_pos=10, max_features=8)
    monkeypatch.setattr(influence_mod, "_SINGLE_BLOCK_ELEMENTS", 16 * 16)
    monkeypatch.setattr(influence_mod, "_BLOCK_ROWS", 32)
    w = logit_weights(graph)
    blocked = compute_influence(graph.adjacency, w)
    dense = ref.influence(ref.normalize(graph.adjacency), w)
    torch.testing.assert_close(blocked, dense, rtol=2e-6, atol=1e-9)
    result = prune_graph(graph)
    node_mask, edge_mask, cumulative = ref.prune(graph)
    assert torch.equal(result.node_mask, node_mask)
    assert torch.equal(_dense_edges(result), edge_mask)
    torch.testing.assert_close(result.cumulative_scores, cumulative, rtol=0, atol=1e-6)
    sc, dense_sc = graph_scores(graph), ref.graph_scores(graph)
    assert sc.replacement == pytest.approx(dense_sc[0], abs=1e-6)
    assert sc.completeness == pytest.approx(dense_sc[1], abs=1e-6)


def test_row_blocks_never_end_in_a_single_row() -> None:
    assert influence_mod._row_blocks(10, 10) == [(0, 10)]
    blocks = influence_mod._row_blocks(2 * influence_mod._BLOCK_ROWS + 1, 5000)
    assert blocks[-1][1] - blocks[-1][0] > 1 and blocks[-1][1] == 2 * influence_mod._BLOCK_ROWS + 1
    assert all(b[0] % 16 == 0 for b in blocks)


# ----------------------------------------------------------------------------- exact torch sum
@pytest.mark.parametrize(("n_values", "total"), [(0, 10), (300, 1000), (39_000, 40_000), (30_000, 40_000),
                                                 (200_000, 9_000_000), (5_000_000, 9_000_000),
                                                 (100_000, 36_000_000)])
def test_sum_of_prefix_equals_torch_sum_of_the_padded_vector(n_values: int, total: int) -> None:
    gen = torch.Generator().manual_seed(n_values)
    values = torch.sort(torch.rand(n_values, generator=gen) ** 6, descending=True).values
    full = torch.zeros(total)
    full[:n_values] = values
    assert torch.equal(prune_mod._torch_sum_of_prefix(values, total), full.sum())


def test_padded_length_keeps_the_cascade_width() -> None:
    span = 60_000_000
    length = prune_mod._padded_length(1000, span)
    assert length < span
    assert all(prune_mod._level_power(length, v) == prune_mod._level_power(span, v) for v in (4, 8, 16))


# ----------------------------------------------------------------------------- scores
@FAST
@given(SEEDS)
def test_graph_scores_equal_dense(seed: int) -> None:
    graph = ref.random_graph(seed)
    assert tuple(graph_scores(graph)) == ref.graph_scores(graph)


def _chain_graph(through_error: bool) -> "Graph":
    """token -> (feature or error at layer 0, pos 1) -> logit."""
    graph = ref.random_graph(0, n_layers=1, n_pos=2, max_features=1, n_logits=1)
    while graph.n_selected != 1:
        seed = int(torch.randint(0, 999, ()))
        graph = ref.random_graph(seed, n_layers=1, n_pos=2, max_features=1, n_logits=1)
    a = torch.zeros_like(graph.adjacency)
    middle = graph.error_start + 1 if through_error else 0
    a[middle, graph.token_start + 1] = 2.0 if not through_error else 0.0
    a[graph.logit_start, middle] = 1.5
    if not through_error:
        return dataclasses.replace(graph, adjacency=a)
    a[graph.logit_start, graph.token_start + 1] = 0.5
    return dataclasses.replace(graph, adjacency=a)


def test_scores_on_handmade_graphs() -> None:
    assert tuple(graph_scores(_chain_graph(False))) == (1.0, 1.0)
    sc = graph_scores(_chain_graph(True))  # logit: 3/4 from the error, 1/4 from the token
    assert sc.replacement == pytest.approx(0.25 / (0.25 + 0.75))
    # completeness weighs each node's non-error input fraction by influence + w: the logit (p, 1/4),
    # the error (3p/4, 1: it has no inputs) and the token (p/4, 1): (p/4 + 3p/4 + p/4) / 2p
    assert sc.completeness == pytest.approx(0.625)


@FAST
@given(SEEDS, st.integers(0, 2**16))
def test_subgraph_scores_equal_dense_neuronpedia(seed: int, pin_bits: int) -> None:
    graph = ref.random_graph(seed, n_pos=6, max_features=5)
    result = prune_graph(graph)
    node_mask, edge_mask, _ = ref.prune(graph)
    view = viewer_subgraph(graph, result)
    features = [int(i) for i in view.node_index if i < graph.n_selected]
    pinned = [f for k, f in enumerate(features) if pin_bits >> (k % 16) & 1]
    for pins, dense_pins in ((pinned, set(pinned) if pinned else None), ([], None)):
        got = subgraph_scores(graph, pins, prune_result=result)
        want = ref.viewer_scores(graph, node_mask, edge_mask, dense_pins)
        assert got == pytest.approx(want, abs=1e-12)


def test_subgraph_scores_accept_node_ids_and_reject_bad_indices() -> None:
    from tracer.graph import node_ids

    graph = ref.random_graph(2, n_pos=6, max_features=5)
    result = prune_graph(graph)
    ids = node_ids(graph)
    features = [int(i) for i in viewer_subgraph(graph, result).node_index if i < graph.n_selected][:3]
    by_index = subgraph_scores(graph, features, prune_result=result)
    assert subgraph_scores(graph, [ids[i] for i in features], prune_result=result) == by_index
    pin_all = subgraph_scores(graph, list(range(graph.n_selected)), prune_result=result)
    assert pin_all == subgraph_scores(graph, [], prune_result=result)
    with pytest.raises(WorkbenchError, match="pinned node indices must be integers in"):
        subgraph_scores(graph, [graph.n_nodes], prune_result=result)
    with pytest.raises(WorkbenchError, match=r"pinned node indices must be integers in .*got 1\.5"):
        subgraph_scores(graph, [1.5], prune_result=result)  # type: ignore[list-item]  # was truncated to 1
    # an unknown id (a typo) was dropped: "pin nothing" merged every feature into the errors
    with pytest.raises(WorkbenchError, match="pinned node ids must be ids of this graph; got 'nonexistent'"):
        subgraph_scores(graph, ["nonexistent", ids[features[0]]], prune_result=result)
    assert subgraph_scores(graph, [np.int64(f) for f in features], prune_result=result) == by_index


def test_a_pinned_id_shared_by_a_layer_0_feature_and_an_error_node_is_refused() -> None:
    """QA pass 30: "0_{feature}_{pos}" of a layer-0 feature with feature < n_layers is also the error node's id
    "0_{layer}_{pos}"; the lookup silently pinned the error node."""
    from collections import Counter

    from tracer.graph import node_ids

    for seed in range(40):
        graph = ref.random_graph(seed, n_pos=6, max_features=5)
        ids = node_ids(graph)
        shared = [i for i, name in enumerate(ids[:graph.n_selected]) if Counter(ids)[name] > 1]
        if shared:
            break
    else:
        pytest.fail("no random graph with a shared id")
    result = prune_graph(graph)
    with pytest.raises(WorkbenchError, match=rf"pinned node ids must name one node each; got '{ids[shared[0]]}', "
                                             r"the id of nodes \[\d+, \d+\].*Pin that node by its index"):
        subgraph_scores(graph, [ids[shared[0]]], prune_result=result)
    assert subgraph_scores(graph, [shared[0]], prune_result=result) is not None  # by index it is one node


# ----------------------------------------------------------------------------- partial influences
@FAST
@given(SEEDS, st.integers(1, 40))
def test_partial_influences_equal_dense(seed: int, n_rows: int) -> None:
    graph = ref.random_graph(seed, n_pos=6, max_features=6)
    rows = torch.cat([torch.arange(graph.logit_start, graph.n_nodes), torch.arange(graph.n_selected)])
    rows = rows[: max(n_rows, graph.n_logits)]
    edge_rows = graph.adjacency[rows]  # (n_rows, n_nodes)
    got = compute_partial_influences(edge_rows, graph.logit_probabilities, rows)
    assert torch.equal(got, ref.partial_influences(edge_rows, graph.logit_probabilities, rows))


def test_cyclic_graph_is_reported() -> None:
    graph = ref.random_graph(1)
    a = graph.adjacency.clone()
    a[0, graph.logit_start] = 1.0  # logit -> feature 0 closes a cycle with feature 0 -> logit
    a[graph.logit_start, 0] = 1.0
    with pytest.raises(WorkbenchError, match="must converge"):
        compute_influence(a, logit_weights(graph), max_iter=50)


def test_blocked_partial_influences_agree_with_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = ref.random_graph(8, n_layers=4, n_pos=10, max_features=8)
    monkeypatch.setattr(influence_mod, "_SINGLE_BLOCK_ELEMENTS", 16 * 16)
    monkeypatch.setattr(influence_mod, "_BLOCK_ROWS", 32)
    rows = torch.cat([torch.arange(graph.logit_start, graph.n_nodes), torch.arange(graph.n_selected)])
    got = compute_partial_influences(graph.adjacency[rows], graph.logit_probabilities, rows)
    want = ref.partial_influences(graph.adjacency[rows], graph.logit_probabilities, rows)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-9)

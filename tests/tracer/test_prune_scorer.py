"""tracer.graph.scores.SubgraphScorer: one pruned graph, many pinned sets, same numbers as subgraph_scores."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import dense_prune as ref
from tracer.errors import WorkbenchError
from tracer.graph import SubgraphScorer, node_ids, prune_graph, subgraph_scores


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_scorer_equals_subgraph_scores_for_lists_ids_and_masks(seed: int, pick: int) -> None:
    graph = ref.random_graph(seed, max_features=5)
    result = prune_graph(graph)
    scorer = SubgraphScorer(graph, result)
    gen = torch.Generator().manual_seed(pick)
    mask = torch.zeros(graph.n_nodes, dtype=torch.bool)
    mask[:graph.n_selected] = torch.rand(graph.n_selected, generator=gen) < 0.5
    pinned = mask.nonzero().flatten().tolist()
    assert scorer() == subgraph_scores(graph, prune_result=result)
    if pinned:
        expected = subgraph_scores(graph, pinned, prune_result=result)
        assert scorer(pinned) == expected
        assert scorer(mask) == expected
        ids = node_ids(graph)
        if len(set(ids)) == len(ids):
            assert scorer([ids[i] for i in pinned]) == expected


def test_scorer_rejects_a_mask_of_the_wrong_shape() -> None:
    graph = ref.random_graph(0)
    with pytest.raises(WorkbenchError, match="pinned mask must have shape"):
        SubgraphScorer(graph, prune_graph(graph))(torch.zeros(3, dtype=torch.bool))

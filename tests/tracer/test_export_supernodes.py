"""tracer.graph.export's supernode formula: the array implementation against the frozen string oracle."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import viewer_supernodes as ref
from tracer.graph.export import aggregate_supernode_links, supernode_edges


@st.composite
def viewer_graphs(draw):
    n = draw(st.integers(2, 9))
    ids = [f"n{i}" for i in range(n)]
    n_links = draw(st.integers(0, 20))
    links = []
    for _ in range(n_links):
        s, t = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        w = draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-3]))
        links.append({"source": ids[s], "target": ids[t], "weight": w})
    pinned = draw(st.lists(st.sampled_from(ids + ["ghost"]), max_size=n + 1))
    # disjoint groups (a node listed in two supernodes is undefined in the viewer); labels may
    # repeat or collide with node ids
    owner = draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n))
    groups = [[draw(st.sampled_from(["A", "B", ids[0]])), *[ids[i] for i in range(n) if owner[i] == k]]
              for k in range(3) if k in owner]
    return ids, links, pinned, groups


@settings(max_examples=200, deadline=None)
@given(viewer_graphs())
def test_supernode_edges_equal_the_frozen_viewer_transcription(case) -> None:
    ids, links, pinned, groups = case
    members, expected = ref.supernode_edges(ids, links, pinned, groups)
    view = supernode_edges(ids, links, pinned, groups)
    assert view.members == members
    got = [(link.source, link.target, link.weight) for link in view.links]
    assert sorted((s, t) for s, t, _ in got) == sorted((s, t) for s, t, _ in expected)
    want = {(s, t): w for s, t, w in expected}
    for s, t, w in got:
        assert math.isclose(w, want[(s, t)], rel_tol=1e-12, abs_tol=1e-12)
    assert [abs(w) for _, _, w in got] == sorted(abs(w) for _, _, w in got)


def test_aggregate_by_hand_with_contributions() -> None:
    # nodes 0, 1 form a supernode (group 0); node 2 is a singleton (group 1); node 3 is not pinned
    targets, sources = [2, 2, 1, 0], [0, 1, 0, 3]
    weights = [2.0, -1.0, 0.5, 1.0]
    agg = aggregate_supernode_links(targets, sources, weights, [0, 0, 1, -1])
    assert agg.edge_index.tolist() == [[1], [0]]
    assert agg.weights.tolist() == [2 / 3 - 1 / 3]
    assert agg.link_edge.tolist() == [0, 0, -1, -1]
    np.testing.assert_allclose(agg.contributions[:2], [2 / 3, -1 / 3])
    assert np.isnan(agg.contributions[2:]).all()  # internal link 0 -> 1, and an unpinned source


def test_supernode_labels_are_made_distinct_for_the_viewers():
    """circuit-tracer's viewer keys a supernode by its label: two groups of one label were drawn as one."""
    from tracer.graph.export import unique_labels

    assert unique_labels(["a", "a", "b", "a"]) == ["a", "a (2)", "b", "a (3)"]
    assert unique_labels(["a", "a (2)", "a"]) == ["a", "a (2)", "a (3)"]
    assert unique_labels([]) == []

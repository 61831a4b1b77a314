"""analyses.supernodes.linkage: constraints, determinism, permutation invariance, the cut."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import silhouette_score

from analyses.supernodes.linkage import (
    FAR,
    Block,
    cannot_link,
    cluster_affinity,
    cluster_blocks,
    cut_linkage,
    silhouette,
)


def _blocks(rng: np.random.Generator, sizes: list[int], within: float = 0.9, between: float = 0.1) -> np.ndarray:
    truth = np.repeat(np.arange(len(sizes)), sizes)
    aff = np.where(truth[:, None] == truth[None, :], within, between) + rng.normal(0, 0.03, (truth.size,) * 2)
    aff = (aff + aff.T) / 2
    np.fill_diagonal(aff, 1.0)
    return aff


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == k).tolist()) for k in np.unique(labels)}


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 30), st.sampled_from(["auto", "threshold"]))
def test_partition_is_invariant_to_item_order(seed: int, n: int, cut: str) -> None:
    rng = np.random.default_rng(seed)
    aff = rng.choice([0.2, 0.5, 0.7, 0.9], size=(n, n))  # many exact ties
    aff = np.maximum(aff, aff.T)
    cannot = rng.random((n, n)) < 0.1
    cannot = cannot | cannot.T
    np.fill_diagonal(cannot, False)
    np.fill_diagonal(aff, 1.0)
    keys = np.stack([rng.integers(0, 3, n), np.arange(n), rng.permutation(n)], 1)
    base = cluster_affinity(aff, cannot, keys, max_height=0.4, max_size=4, cut=cut)
    perm = rng.permutation(n)
    other = cluster_affinity(aff[np.ix_(perm, perm)], cannot[np.ix_(perm, perm)], keys[perm], max_height=0.4,
                             max_size=4, cut=cut)
    assert np.array_equal(other.labels, base.labels[perm])  # same partition and same numbering
    assert other.height == base.height
    for members in _partition(base.labels):  # every constraint holds inside every cluster
        idx = sorted(members)
        assert len(idx) <= 4 and not cannot[np.ix_(idx, idx)].any()
        assert (aff[np.ix_(idx, idx)] >= 0.6 - 1e-9).all() or len(idx) == 1


def test_recovers_planted_blocks_and_splits_at_max_size() -> None:
    rng = np.random.default_rng(0)
    aff = _blocks(rng, [3, 5, 2, 1, 6])
    keys = np.stack([np.zeros(17, int), np.zeros(17, int), np.arange(17)], 1)
    got = cluster_affinity(aff, np.zeros((17, 17), bool), keys, max_height=0.4, max_size=12, cut="threshold")
    truth = np.repeat(np.arange(5), [3, 5, 2, 1, 6])
    assert _partition(got.labels) == _partition(truth)
    small = cluster_affinity(aff, np.zeros((17, 17), bool), keys, max_height=0.4, max_size=4, cut="threshold")
    sizes = np.bincount(small.labels)
    assert sizes.max() <= 4 and len(sizes) == 7  # the 5 and the 6 are split in two each


def test_cannot_link_pairs_never_share_a_cluster() -> None:
    aff = np.full((4, 4), 0.95)
    cannot = np.zeros((4, 4), bool)
    cannot[0, 3] = cannot[3, 0] = True
    keys = np.stack([np.zeros(4, int), np.zeros(4, int), np.arange(4)], 1)
    got = cluster_affinity(aff, cannot, keys, max_height=0.4, max_size=12, cut="threshold")
    assert got.labels[0] != got.labels[3] and len(np.unique(got.labels)) == 2
    assert got.linkage[-1, 2] == FAR


def test_cut_matches_scipy_fcluster_without_size_limit() -> None:
    rng = np.random.default_rng(3)
    d = rng.random((12, 12))
    d = np.round((d + d.T) / 2, 9)
    np.fill_diagonal(d, 0)
    Z = linkage(squareform(d), "complete")
    for h in (0.2, 0.5, 0.8):
        ours = cut_linkage(Z, h, 100)
        theirs = fcluster(Z, h, criterion="distance")
        assert _partition(ours) == _partition(theirs)


def test_silhouette_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    d = rng.random((15, 15))
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4])
    assert silhouette(d, labels) == pytest.approx(silhouette_score(d, labels, metric="precomputed"))


def test_cannot_link_criteria() -> None:
    keys = np.array([[0, 1, 5], [0, 1, 6], [1, 1, 7], [0, 2, 8], [4, 1, 9]])
    effects = np.array([1.0, 2.0, -1.0, 1.0, 1.0])
    out_cos = np.ones((5, 5))
    out_cos[0, 1] = out_cos[1, 0] = 0.0
    edges = np.zeros((5, 5))
    edges[4, 0] = -0.5  # target 4 reads 0 negatively; 4's input mass is 2 -> below -5%
    in_mass = np.full(5, 2.0)
    bad = cannot_link(keys, effects, out_cos, edges, in_mass, cross_position=False, max_layer_span=3,
                      negative_edge_tolerance=0.05)
    assert bad[0, 1]  # outgoing profiles not positively aligned
    assert bad[0, 2] and bad[1, 2]  # opposite effect on the logits
    assert bad[0, 3]  # another position
    assert bad[0, 4] and bad[4, 0]  # a direct negative edge (and a layer span of 4 > 3)
    assert not bad[1, 4] or abs(keys[1, 0] - keys[4, 0]) > 3
    assert (bad == bad.T).all() and not bad.diagonal().any()
    loose = cannot_link(keys, effects, out_cos, edges, in_mass, cross_position=True, max_layer_span=4,
                        negative_edge_tolerance=0.5)
    assert not loose[0, 3] and not loose[0, 4]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 24), st.integers(1, 4), st.sampled_from(["auto", "threshold"]))
def test_blocks_equal_one_matrix_with_cannot_links_between_blocks(seed: int, n: int, n_blocks: int, cut: str) -> None:
    rng = np.random.default_rng(seed)
    aff = rng.choice([0.2, 0.5, 0.7, 0.9], size=(n, n))
    aff = np.maximum(aff, aff.T)
    np.fill_diagonal(aff, 1.0)
    block_of = rng.integers(0, n_blocks, n)
    cannot = block_of[:, None] != block_of[None, :]
    keys = np.stack([rng.integers(0, 3, n), np.arange(n), rng.permutation(n)], 1)
    whole = cluster_affinity(aff, cannot, keys, max_height=0.4, max_size=3, cut=cut)
    blocks = [Block(aff[np.ix_(idx, idx)], cannot[np.ix_(idx, idx)], idx)
              for b in range(n_blocks) if (idx := np.flatnonzero(block_of == b)).size]
    parts = cluster_blocks(blocks, keys, max_height=0.4, max_size=3, cut=cut)
    assert np.array_equal(parts.labels, whole.labels) and parts.height == whole.height
    assert parts.linkage.shape == (n - 1, 4) and (parts.linkage[:, 3].max() == n)

"""QA pass 30 (API review): inputs that failed deep inside or were accepted wrongly now get a clear error at
the boundary, naming the value."""

import numpy as np
import pytest

from analyses.families import FeatureFamilies
from analyses.manifolds.discovery import ManifoldDiscovery
from analyses.manifolds.display import DecoderMapDisplay
from analyses.manifolds.fit import ManifoldFit
from analyses.results import load_result, save_result
from analyses.supernodes.circuit import ReadableCircuit
from analyses.supernodes.clustering import SupernodeClustering
from tests.analyses.manifolds.planted import planted_curve
from tests.analyses.supernodes.planted import planted_graph


@pytest.fixture(scope="module")
def graph():
    return planted_graph(0)[0]


def _feature_keys(graph) -> list[tuple[int, int]]:
    keys = graph.active_features[graph.selected_features].numpy()  # (n_selected, 3) layer, pos, feature
    return sorted({(int(k[0]), int(k[2])) for k in keys})


def test_token_strings_must_be_text(graph, tmp_path) -> None:
    """Integers were accepted, and the result saved but did not load back ("the file was edited or damaged")."""
    ids = list(range(101, 101 + graph.n_pos))
    with pytest.raises(TypeError, match=r"token_strings must hold strings; got 101 at position 0\."):
        ReadableCircuit().fit(graph, token_strings=ids)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="token_strings must hold strings; got None at position 1"):
        names = ["a", None] + ["c"] * (graph.n_pos - 2)
        SupernodeClustering().fit(graph).to_coarse_graph(graph, token_strings=names)  # type: ignore[arg-type]
    text = [f"t{i}" for i in range(graph.n_pos)]
    fitted = ReadableCircuit().fit(graph, token_strings=text)
    assert load_result(save_result(fitted.result(), tmp_path / "c.json")).coarse.label == fitted.result().coarse.label


@pytest.mark.parametrize("estimator", [ReadableCircuit, SupernodeClustering])
@pytest.mark.parametrize("bad", ["x", (1, 2)])
def test_prune_result_must_be_a_prune_result(graph, estimator, bad) -> None:
    """It failed with "AttributeError: 'str' object has no attribute 'node_mask'"."""
    with pytest.raises(TypeError, match=r"prune_result must be a tracer PruneResult; got .*prune_graph\(graph"):
        estimator().fit(graph, prune_result=bad)


@pytest.mark.parametrize("value", ["x", 1.7])
def test_family_ids_of_a_mapping_must_be_integers(graph, value) -> None:
    """A text value raised int()'s own error; 1.7 was truncated to family 1."""
    families = {key: value for key in _feature_keys(graph)}
    with pytest.raises(TypeError, match=r"families' values \(family ids\) must hold integers"):
        SupernodeClustering(similarities=("edge", "family")).fit(graph, families=families)
    whole = {key: 2.0 if value == 1.7 else 3 for key in _feature_keys(graph)}  # whole numbers stay accepted
    fitted = SupernodeClustering(similarities=("edge", "family")).fit(graph, families=whole)  # type: ignore[arg-type]
    assert "family" in fitted.similarities_used_


@pytest.mark.parametrize("bad", [3, "3", np.int64(3)])
def test_candidates_must_be_a_sequence(graph, bad) -> None:
    with pytest.raises(TypeError, match=r"candidates must be a sequence of feature node indices; got .*\[3\]"):
        SupernodeClustering().fit(graph, candidates=bad)
    assert SupernodeClustering().fit(graph, candidates=[0, 1]).candidates_.tolist() == [0, 1]


def test_readable_circuit_names_a_wrong_clustering_by_its_value(graph) -> None:
    with pytest.raises(TypeError, match="clustering must be a SupernodeClustering or None; got 'x'"):
        ReadableCircuit(clustering="x").fit(graph)  # type: ignore[arg-type]


def test_fit_coordinates_must_be_finite_numbers() -> None:
    """NaN and inf gave a plausible value (6) with only a numpy RuntimeWarning; text gave numpy's error."""
    X, y, _ = planted_curve(period=7, n_per_value=3, seed=0)
    res = ManifoldFit(period=7).fit(X, y).result_
    with pytest.raises(ValueError, match=r"u must be finite; got nan at index 0\. Pass coordinates from transform"):
        res.coordinate_to_value(np.array([np.nan, np.inf]))
    for method in (res.curve, res.coordinate_to_value, res.curve_derivative):
        with pytest.raises(TypeError, match="u must hold real numbers"):
            method("x")  # type: ignore[arg-type]
    u = res.value_coordinate(np.arange(7))
    assert res.coordinate_to_value(u).tolist() == list(range(7))
    assert res.coordinate_to_value(u[3:4]).tolist() == [3]


def test_decoder_map_takes_family_names_of_mixed_types() -> None:
    """Names 7 and "a" crashed sorted() at plot time; they are shown as text, as discovery shows them."""
    W = np.random.default_rng(0).normal(size=(6, 4))
    families = {7: [0, 1], "a": [2, 3]}
    display = DecoderMapDisplay.from_decoders(W, families, method="pca").plot()  # type: ignore[arg-type]
    assert display.family_of[:4] == ["7", "7", "a", "a"]
    assert display.figure_ is not None


def test_discovery_refuses_an_empty_family_mapping_as_a_value_error() -> None:
    A = np.abs(np.random.default_rng(0).normal(size=(20, 6)))
    W = np.random.default_rng(1).normal(size=(6, 4))
    with pytest.raises(ValueError, match=r"families must be a non-empty mapping name -> feature indices; got \{\}"):
        ManifoldDiscovery().fit(A, W, {})
    with pytest.raises(TypeError, match=r"families must be a non-empty mapping name -> feature indices; got \[1, 2\]"):
        ManifoldDiscovery().fit(A, W, [1, 2])  # type: ignore[arg-type]


def test_a_fitted_feature_families_holds_no_private_clock() -> None:
    est = FeatureFamilies().fit(np.random.default_rng(0).normal(size=(40, 8)))
    assert not hasattr(est, "_last_tick") and set(est.timings_)


def test_a_period_larger_than_the_points_allow_is_refused_before_allocating() -> None:
    """period=10**12 ended in a MemoryError (a count per value)."""
    X, y, _ = planted_curve(period=5, n_per_value=2, seed=0)
    with pytest.raises(ValueError, match=r"every value must have at least 1 point\(s\); got 10 points for a period "
                                         r"of 1000000000000"):
        ManifoldFit(period=10**12).fit(X, y)
    with pytest.raises(ValueError, match="got 10 points for a period of 5"):
        ManifoldFit(period=5, min_points_per_value=3).fit(X, y)
    assert ManifoldFit(period=5, min_points_per_value=2).fit(X, y).result_.period == 5


def test_a_huge_n_neighbors_asks_only_for_the_neighbours_there_are() -> None:
    """n_neighbors=10**12 ended in a MemoryError (kNN lists allocated at that width); it means "every neighbour"."""
    X = np.random.default_rng(0).normal(size=(40, 8))
    every = FeatureFamilies(n_neighbors=39).fit(X).result_
    huge = FeatureFamilies(n_neighbors=10**12).fit(X).result_
    assert huge.knn_index.shape == (40, 39)
    np.testing.assert_array_equal(huge.knn_index, every.knn_index)
    np.testing.assert_array_equal(huge.family, every.family)
    assert FeatureFamilies(n_neighbors=5).fit(X).result_.knn_index.shape == (40, 5)


def test_a_seeded_umap_map_says_nothing_about_threads() -> None:
    """umap warned 'n_jobs value 1 overridden to 1 by setting random_state' on every seeded map (a log line in
    the CLI)."""
    import warnings

    from analyses.manifolds.display import embed_2d

    pytest.importorskip("umap")
    W = np.random.default_rng(0).normal(size=(30, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert embed_2d(W, method="umap", random_state=0).shape == (30, 2)

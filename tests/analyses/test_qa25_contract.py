"""Found by the stop-25 API review: a refused refit keeps the previous fit whole; results record the
parameters they were fitted with."""

import warnings
from typing import Any

import numpy as np
import pytest

from analyses.families import FeatureFamilies
from analyses.manifolds.discovery import ManifoldDiscovery
from analyses.manifolds.fit import ManifoldFit
from analyses.manifolds.irreducibility import IrreducibilityConfig
from analyses.supernodes.circuit import ReadableCircuit
from analyses.supernodes.clustering import SupernodeClustering
from tests.analyses.manifolds.planted import planted_curve, planted_layer
from tests.analyses.supernodes.planted import planted_graph


def _fitted(est: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}


def _cases() -> list[tuple[str, Any, Any, Any]]:
    """(name, estimator, a good fit, a refit refused after set_params changed a parameter)."""
    g1, _ = planted_graph(0)
    g2, _ = planted_graph(1)
    X, y = planted_curve(period=7, n_per_value=10)[:2]
    A, W, fams, _ = planted_layer(n_tokens=1500)
    rng = np.random.default_rng(0)
    fast: dict[str, Any] = {"persistence": "none", "metric_points": 200,
                           "irreducibility": IrreducibilityConfig(n_steps=50)}
    return [
        ("clustering", SupernodeClustering(), lambda e: e.fit(g1),
         lambda e: e.set_params(min_affinity=0.3).fit(g2, candidates=[10**6])),
        ("circuit", ReadableCircuit(budget=3), lambda e: e.fit(g1),
         lambda e: e.set_params(budget=9).fit(g2, token_strings=["too", "few"])),
        ("families", FeatureFamilies(), lambda e: e.fit(rng.normal(size=(50, 8))),
         lambda e: e.set_params(n_neighbors=7).fit(np.full((50, 8), np.nan))),
        ("fit", ManifoldFit(), lambda e: e.fit(X, y),
         lambda e: e.set_params(variance_threshold=0.5).fit(X, y, value_names=["a"])),
        ("discovery", ManifoldDiscovery(**fast), lambda e: e.fit(A, W, fams, feature_layer=1),
         lambda e: e.set_params(seed=5).fit(A, W, {"x": [10**6]})),
    ]


@pytest.mark.parametrize("case", range(5))
def test_a_refused_refit_leaves_the_previous_fit_whole(case: int) -> None:
    name, est, good, bad = _cases()[case]
    good(est)
    before = _fitted(est)
    assert before, name
    with pytest.raises((ValueError, TypeError)):
        bad(est)
    after = _fitted(est)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before), name


def test_the_circuit_result_records_the_budget_it_was_fitted_with() -> None:
    graph, _ = planted_graph(0)
    rc = ReadableCircuit(budget=3).fit(graph)
    rc.set_params(budget=25)
    res = rc.result()
    assert res.meta == {"budget": 3} and res.scores.n_groups <= 3


def test_a_circle_over_three_values_warns_that_it_fits_anything() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    with pytest.warns(UserWarning, match="a circle over 3 values has as many curve terms as class means") as got:
        res = ManifoldFit().fit(rng.normal(size=(150, 32)), y).result_  # pure noise
    assert res.r2 == pytest.approx(1.0) and got[0].filename == __file__  # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # four values keep a residual degree of freedom: no warning
        ManifoldFit().fit(rng.normal(size=(200, 32)), np.repeat(np.arange(4), 50))


def test_set_params_checks_nested_names_before_setting_anything() -> None:
    rc = ReadableCircuit(budget=25, clustering=SupernodeClustering())
    with pytest.raises(ValueError, match="no_such_param"):
        rc.set_params(budget=4, clustering__no_such_param=1)
    assert rc.budget == 25
    bare = ReadableCircuit(budget=25)
    with pytest.raises(ValueError, match="clustering must be an estimator"):
        bare.set_params(budget=3, clustering__cut="threshold")
    assert bare.budget == 25
    rc.set_params(budget=4, clustering=SupernodeClustering(), clustering__cut="threshold")  # the new one is checked
    assert rc.budget == 4 and rc.clustering is not None and rc.clustering.cut == "threshold"


def test_repr_survives_array_parameters() -> None:
    assert "similarities=array" in repr(SupernodeClustering(similarities=np.array(["edge", "virtual"])))  # type: ignore[arg-type]
    assert "n_neighbors=array" in repr(FeatureFamilies(n_neighbors=np.array([5, 10])))  # type: ignore[arg-type]


def test_metadata_that_would_not_load_back_is_refused() -> None:
    from analyses.manifolds.tiling import compute_tiling

    A, W, fams, _ = planted_layer(n_tokens=600)
    est = ManifoldDiscovery(persistence="none", metric_points=100, irreducibility=IrreducibilityConfig(n_steps=20))
    for bad, error in ((2.0, TypeError), ("3", TypeError), (-1, ValueError)):
        with pytest.raises(error, match="feature_layer must be"):
            est.fit(A, W, fams, feature_layer=bad)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    for bad in (0, "yes"):
        with pytest.raises(TypeError, match="closed must be a bool"):
            compute_tiling(rng.uniform(0, 1, 50), rng.random((50, 3)), closed=bad)  # type: ignore[arg-type]


def test_wrong_types_are_refused_by_name() -> None:
    graph, _ = planted_graph(0)
    with pytest.raises(TypeError, match="labels must be a mapping"):
        SupernodeClustering().fit(graph, labels=["a label"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="transcoders must be a tracer Transcoders"):
        SupernodeClustering().fit(graph, transcoders="/path/to/transcoders")  # type: ignore[arg-type]
    X = np.random.default_rng(0).normal(size=(20, 8)) + 1j
    with pytest.raises(TypeError, match="X must hold real numbers"):
        FeatureFamilies().fit(X)


def test_value_names_for_an_inferred_period_say_so() -> None:
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    X, y = planted_curve(period=7, n_per_value=10)[:2]
    keep = y < 6  # no point for Sunday: the period inferred from y is 6
    with pytest.raises(ValueError, match="the period inferred from y's largest value 5; pass period="):
        ManifoldFit().fit(X[keep], y[keep], value_names=days)
    with pytest.raises(ValueError, match="got 0 for value 6. Add points for it.$"):
        ManifoldFit(period=7, min_points_per_value=1).fit(X[keep], y[keep], value_names=days)


def test_displays_check_what_they_are_given() -> None:
    from analyses.families import FamilyDendrogramDisplay
    from analyses.manifolds.display import DecoderMapDisplay, ManifoldCircleDisplay

    rng = np.random.default_rng(0)
    X, y = planted_curve(period=7, n_per_value=10)[:2]
    est = ManifoldFit().fit(X, y)
    assert ManifoldCircleDisplay.from_fit(est, X, y).plot().figure_ is not None  # the estimator gives its result
    with pytest.raises(ValueError, match="y must hold value indices in \\[0, 7\\)"):
        ManifoldCircleDisplay.from_fit(est.result_, X, y + 7)
    with pytest.raises(TypeError, match="y must hold integers"):
        ManifoldCircleDisplay.from_fit(est.result_, X, np.array(["Mon"] * len(y)))
    res = FeatureFamilies(max_hierarchy=5).fit(rng.normal(size=16) + 0.05 * rng.normal(size=(12, 16))).result_
    big = max(res.families, key=lambda f: f.size)
    assert big.size > 5
    with pytest.raises(ValueError, match=f"family {big.id} must have a hierarchy"):
        FamilyDendrogramDisplay.from_result(res, big.id)
    assert DecoderMapDisplay.from_decoders(rng.normal(size=(3, 16))).plot().figure_ is not None  # 3 rows: umap


def test_an_unscored_family_says_why_it_cannot_be_drawn() -> None:
    from analyses.manifolds.display import FamilyCloudDisplay

    A, W, fams, _ = planted_layer(n_tokens=600)
    res = ManifoldDiscovery(persistence="none", irreducibility=IrreducibilityConfig(n_steps=20)).fit(
        A, W, {"solo": [0], "ring": fams["ring"]}).result_
    with pytest.raises(ValueError, match="unscored because it has one member: a loop needs two"):
        FamilyCloudDisplay.from_family(res.family("solo"), A, W)

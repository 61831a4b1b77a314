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
    fast = {"persistence": "none", "metric_points": 200, "irreducibility": IrreducibilityConfig(n_steps=50)}
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

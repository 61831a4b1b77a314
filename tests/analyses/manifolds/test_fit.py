"""ManifoldFit recovers planted circles, helices and intervals; contract, validation, round trip."""

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses.base import NotFittedError, clone
from analyses.manifolds import curves
from analyses.manifolds.fit import ManifoldFit, ManifoldFitResult
from analyses.results import load_result, save_result
from tests.analyses.manifolds.planted import planted_curve

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _split(X, y, every=4):
    held = np.arange(len(y)) % every == 0
    return X[~held], y[~held], X[held], y[held]


def test_k1_circle_in_calendar_order_with_second_harmonic():
    X, y, _ = planted_curve(period=12, n_per_value=20, second_harmonic=1.0, noise=0.3, seed=1)
    Xtr, ytr, Xte, yte = _split(X, y)
    fit = ManifoldFit(period=12).fit(Xtr, ytr, value_names=MONTHS, layer=2, position="last", source="residual")
    res = fit.result_
    assert res.frequency == 1 and res.order_matches_values()
    assert res.n_components == 4  # the k = 2 harmonic needs two more dimensions for 95%
    assert res.r2_fundamental < 0.95 < res.r2  # the harmonics model the k = 2 component
    assert res.r2_per_frequency["1"] > 0.7 and res.r2_per_frequency["5"] < 0.05
    assert res.coordinate_rmse < 0.05 and res.fourier_concentration > 0.85
    assert fit.score(Xte, yte) > 0.9 and res.class_mean_r2(Xte, yte) > 0.98
    assert np.mean(fit.predict_value(Xte) == yte) > 0.95
    assert np.sqrt(np.mean(res.coordinate_errors(Xte, yte) ** 2)) < 0.2
    order = res.summary()["order"]
    assert isinstance(order, list)
    assert order[0] in MONTHS and res.layer == 2 and res.position == "last"


@pytest.mark.parametrize("k", [2, 3])
def test_recovers_a_planted_frequency(k):
    X, y, _ = planted_curve(period=7, n_per_value=10, frequency=k, noise=0.2, seed=k)
    res = ManifoldFit(period=7, n_harmonics=1).fit(X, y).result_
    assert res.frequency == k and res.r2 > 0.95
    assert not res.order_matches_values()  # k != 1 visits the days out of order
    slots = [(k * v) % 7 for v in res.order]  # the k-circle's slots in increasing fitted angle
    assert curves.order_is_cyclic_shift(slots, 7, allow_reverse=False)
    assert np.all(ManifoldFit(period=7, n_harmonics=1).fit(X, y).predict_value(X) == y)


def test_sign_follows_the_direction_of_travel():
    X, y, B = planted_curve(period=7, n_per_value=5, noise=0.05, seed=3)
    s1 = ManifoldFit(period=7).fit(X, y).result_.sign
    s2 = ManifoldFit(period=7).fit(X, (-y) % 7).result_.sign
    assert s1 == -s2


def test_helix_and_interval():
    X, y, _ = planted_curve(period=20, n_per_value=8, shape="helix", frequency=2, drift=8.0, noise=0.2, seed=4)
    res = ManifoldFit(period=20, shape="helix").fit(X, y).result_
    assert res.frequency == 2 and res.r2 > 0.97 and res.order_matches_values()
    assert np.mean(np.abs(res.predict_value(X) - y) <= 1) > 0.95
    X, y, _ = planted_curve(period=10, n_per_value=8, shape="interval", noise=0.1, seed=5)
    res = ManifoldFit(period=10, shape="interval").fit(X, y).result_
    assert res.r2 > 0.97 and res.order_matches_values() and res.coordinate_rmse < 0.05
    assert np.mean(res.predict_value(X) == y) > 0.9


def test_curve_derivative_matches_finite_differences():
    X, y, _ = planted_curve(period=12, n_per_value=5, second_harmonic=0.7, seed=6)
    res = ManifoldFit(period=12).fit(X, y).result_
    u, h = np.linspace(0.1, 6.0, 7), 1e-6
    fd = (res.curve(u + h) - res.curve(u - h)) / (2 * h)
    np.testing.assert_allclose(res.curve_derivative(u), fd, rtol=1e-5, atol=1e-6)
    # class means sit near their curve points
    assert np.abs(res.curve(res.value_coords) - res.class_means).max() < 0.5


def test_round_trip(tmp_path):
    X, y, _ = planted_curve(period=7, n_per_value=6, seed=7)
    res = ManifoldFit(period=7).fit(X, y, value_names=list("MTWTFSS"), layer=1, position=5).result_
    back = load_result(save_result(res, tmp_path / "fit.json"), ManifoldFitResult)
    for name in ("centre", "basis", "class_means", "coefficients", "fitted_coords", "fourier_spectrum"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert back.summary() == res.summary()
    np.testing.assert_array_equal(back.transform(X), res.transform(X))


def test_estimator_contract_and_validation():
    est = ManifoldFit(period=7, n_harmonics=2)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.transform(np.zeros((1, 3)))
    X, y, _ = planted_curve(period=7, n_per_value=3)
    assert est.fit(X, y) is est and est.get_params()["n_harmonics"] == 2
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"period": 2}, ValueError, "period must be"), ({"shape": "torus"}, ValueError, "shape must be"),
        ({"n_harmonics": 4}, ValueError, "n_harmonics must be"), ({"variance_threshold": 0}, ValueError, "variance"),
        ({"max_components": 0}, ValueError, "max_components"), ({"n_harmonics": 1.5}, TypeError, "n_harmonics"),
        ({"frequency": 0}, ValueError, "frequency must be")]
    for params, err, msg in bad:
        with pytest.raises(err, match=msg):
            ManifoldFit(**params).fit(X, y)
    with pytest.raises(ValueError, match="frequency must be coprime"):
        ManifoldFit(period=12, frequency=4).fit(*planted_curve(period=12, n_per_value=2)[:2])
    with pytest.raises(ValueError, match=r"y must be in \[0, 7\)"):
        ManifoldFit(period=7).fit(X, y + 1)
    with pytest.raises(ValueError, match="at least 4 point"):
        ManifoldFit(period=7, min_points_per_value=4).fit(X[:-2], y[:-2])
    with pytest.raises(ValueError, match="one value per row"):
        ManifoldFit(period=7).fit(X, y[:-1])
    with pytest.raises(ValueError, match="value_names must have 7"):
        ManifoldFit(period=7).fit(X, y, value_names=["a"])


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 13), st.integers(0, 10_000))
def test_class_means_map_to_their_values(period, seed):
    """A clean planted k=1 circle: every class mean predicts its own value, for any period."""
    X, y, _ = planted_curve(period=period, n_per_value=2, noise=0.01, seed=seed)
    fit = ManifoldFit(period=period).fit(X, y)
    assert fit.frequency_ == 1
    np.testing.assert_array_equal(fit.predict_value(fit.result_.class_means), np.arange(period))

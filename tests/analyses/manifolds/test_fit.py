"""ManifoldFit recovers planted circles, helices and intervals; contract, validation, round trip."""

import contextlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses.base import NotFittedError, clone
from analyses.manifolds import curves
from analyses.manifolds.configs import ManifoldFitConfig
from analyses.manifolds.fit import ManifoldFit, ManifoldFitResult
from analyses.results import load_result, save_result
from tests.analyses.manifolds.planted import planted_curve
from tests.helpers_mutants import edit_result_field

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
    res = ManifoldFit(period=7).fit(X, y, value_names=["Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"], layer=1,
                                  position=5).result_
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


def test_fit_refuses_points_whose_squares_overflow_and_is_scale_free_within_range():
    """Points scaled by 1e200 overflowed numpy (a RuntimeWarning, then NaN); by 1e-200 divided 0 by 0."""
    X, y, _ = planted_curve(period=7, n_per_value=6, seed=7)
    base = ManifoldFit(period=7).fit(X, y).result_
    for scale in (1e90, 1e-90):
        scaled = ManifoldFit(period=7).fit(X * scale, y).result_
        assert scaled.frequency == base.frequency and scaled.order == base.order
        assert scaled.r2 == pytest.approx(base.r2, abs=1e-9)
    for scale in (1e200, 1e-200):
        with pytest.raises(ValueError, match=r"X must hold entries of magnitude between 1e-100 and 1e\+100; got "
                                             r"max \|X\| .*e[+-]200. Rescale the points"):
            ManifoldFit(period=7).fit(X * scale, y)


def test_transform_predict_and_score_check_their_input():
    """NaN / inf rows once gave coordinate 0, a 1-D vector one value per component, another width numpy's
    broadcast error, and out-of-range values a score."""
    X, y, _ = planted_curve(period=7, n_per_value=6, seed=7)
    est = ManifoldFit(period=7).fit(X, y)
    d = X.shape[1]
    for api in (est, est.result_):
        for bad in (np.nan, np.inf, -np.inf):
            Xb = X.copy()
            Xb[3, 0] = bad
            for call in (api.transform, api.predict_value, lambda Z: api.score(Z, y)):  # noqa: B023
                with pytest.raises(ValueError, match="X must hold finite numbers"):
                    call(Xb)
        with pytest.raises(ValueError, match=rf"X must have shape \(n_samples, {d}\).*width {d - 1}"):
            api.transform(X[:, :-1])
        with pytest.raises(ValueError, match=r"y must be in \[0, 7\) \(the fit's period\); got values from 7 to 13"):
            api.score(X, y + 7)
        with pytest.raises(ValueError, match=r"y must have shape \(42,\) \(one value per row of X\)"):
            api.score(X, y[:-1])
        with pytest.raises(TypeError, match="y must hold integers"):
            api.score(X, y + 0.5)
        one = api.transform(X[0])  # a 1-D vector is one point
        assert one.shape == (1,) and one[0] == api.transform(X[:1])[0]
        assert api.predict_value(X[0]).tolist() == api.predict_value(X[:1]).tolist()
    res = est.result_
    with pytest.raises(ValueError, match=r"y must be in \[0, 7\)"):
        res.coordinate_errors(X, y - 1)
    with pytest.raises(ValueError, match=r"y must be in \[0, 7\)"):
        res.class_mean_r2(X, y + 7)


def test_api_refuses_what_the_cli_refuses():
    X, y, _ = planted_curve(period=7, n_per_value=3)
    with pytest.raises(ValueError, match="value_names must be distinct"):
        ManifoldFit(period=7).fit(X, y, value_names=["a"] * 7)
    for shape in ("circle", "helix"):  # a closed curve needs two components: the cap was silently raised to 2
        with pytest.raises(ValueError, match=f"max_components must be >= 2 for shape '{shape}'"):
            ManifoldFit(period=7, shape=shape, max_components=1).fit(X, y)
        with pytest.raises(ValueError, match="max_components must be >= 2"):
            ManifoldFitConfig(shape=shape, max_components=1)
    assert ManifoldFit(period=7, shape="interval", max_components=1).fit(X, y).n_components_ == 1


@pytest.mark.parametrize("field, value, message", [
    ("order", [0] * 7, r"order must list the values 0\.\.6 once each"),
    ("value_names", list("abcdeff"), "value_names must be distinct"),
])
def test_load_refuses_a_fit_that_fails_its_own_checks(tmp_path, field, value, message):
    res = ManifoldFit(period=7).fit(*planted_curve(period=7, n_per_value=3)[:2]).result_
    path = save_result(res, tmp_path / "fit.json")
    edit_result_field(path, field, value)
    with pytest.raises(ValueError, match=message) as info:
        load_result(path, ManifoldFitResult)
    assert str(path) in str(info.value)


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 13), st.integers(0, 10_000))
def test_class_means_map_to_their_values(period, seed):
    """A clean planted k=1 circle: every class mean predicts its own value, for any period."""
    X, y, _ = planted_curve(period=period, n_per_value=2, noise=0.01, seed=seed)
    with pytest.warns(UserWarning, match="R² is 1 by construction") if period == 3 else contextlib.nullcontext():
        fit = ManifoldFit(period=period).fit(X, y)  # 3 values: as many curve terms as class means
    assert fit.frequency_ == 1
    np.testing.assert_array_equal(fit.predict_value(fit.result_.class_means), np.arange(period))


def _exact_circle(period: int, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four noisy points per angle slot i of a k = 1 circle; slot i carries value ``labels[i]``."""
    rng = np.random.default_rng(seed)
    angle = 2 * np.pi * np.arange(period) / period
    M = np.zeros((period, 8))  # (p, d)
    M[:, 0], M[:, 1] = np.cos(angle), np.sin(angle)
    X = np.repeat(M, 4, 0) + 0.01 * rng.standard_normal((4 * period, 8))  # (4p, d)
    return X, np.repeat(np.asarray(labels), 4)


@pytest.mark.parametrize("period", [7, 12])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffled_labels_are_not_fitted_in_calendar_order(period, seed):
    """With 2H + 1 = p harmonics the final curve passes through every class mean whatever their labels;
    the order, angles and R² must come from where the class means lie, not restate the labels."""
    perm = np.random.default_rng(seed).permutation(period)
    assert not curves.order_is_cyclic_shift([int(v) for v in perm], period)
    X, y = _exact_circle(period, perm, seed)
    res = ManifoldFit(period=period).fit(X, y).result_
    assert not res.order_matches_values()
    assert res.r2 < 0.9 and res.coordinate_rmse > 0.3
    # in calendar order the same points fit perfectly
    X, y = _exact_circle(period, np.arange(period), seed)
    res = ManifoldFit(period=period).fit(X, y).result_
    assert res.order_matches_values() and res.r2 > 0.99 and res.coordinate_rmse < 0.05


def test_a_swap_of_two_neighbours_shows_in_the_fitted_order():
    labels = np.array([0, 1, 2, 4, 3, 5, 6])  # slot 3 holds value 4, slot 4 value 3
    X, y = _exact_circle(7, labels)
    res = ManifoldFit(period=7).fit(X, y).result_
    assert not res.order_matches_values()
    start = res.order.index(0)
    assert res.order[start:] + res.order[:start] in ([0, 1, 2, 4, 3, 5, 6], [0, 6, 5, 3, 4, 2, 1])


def test_values_whose_class_means_coincide_have_no_fitted_order():
    """Months 1-9 all at one point (where no feature fires), 0, 10 and 11 on a circle: ties broken by value index
    would read as calendar order; they are not an order."""
    X, y = _exact_circle(12, np.arange(12))
    X[(y >= 1) & (y <= 9)] = np.array([0.1, 0.2, 0, 0, 0, 0, 0, 0])  # (36, 8) nine values, one point
    res = ManifoldFit(period=12).fit(X, y).result_
    assert res.order_tied() and not res.order_matches_values() and res.summary()["order_matches"] is False
    clean = ManifoldFit(period=12).fit(*_exact_circle(12, np.arange(12))).result_
    assert not clean.order_tied() and clean.order_matches_values()


def test_r2_is_undefined_where_the_points_do_not_vary():
    """Points that coincide away from the curve have SS_tot of rounding only: R² would read -1e31."""
    assert curves.r2_from_sums(1.0, 4.0) == pytest.approx(0.75)
    got = curves.r2_from_sums(np.array([1.0, 2.0, 1.0, 0.0]), np.array([4.0, 1e-31, 0.0, 0.0]))
    assert got[0] == pytest.approx(0.75) and np.isnan(got[1:]).all()
    Z = np.ones((5, 2)) + 1e-17  # (5, 2) one point, five times
    assert np.isnan(curves.r2_score(Z, np.zeros((5, 2))))
    assert curves.r2_score(np.eye(2), np.eye(2)) == 1.0


def test_circles_keep_a_residual_degree_of_freedom():
    assert curves.max_harmonics("circle", 7, 3) == 2 and curves.max_harmonics("circle", 12, 3) == 3
    assert curves.max_harmonics("circle", 5, 3) == 1 and curves.max_harmonics("circle", 3, 3) == 1
    assert curves.max_harmonics("helix", 7, 3) == 1 and curves.max_harmonics("helix", 12, 3) == 3
    assert curves.max_harmonics("interval", 5, 3) == 1


@pytest.mark.parametrize(("shape", "period"), [("helix", 5), ("helix", 7), ("interval", 5), ("interval", 7)])
def test_open_curves_do_not_fit_noise_by_construction(shape, period):
    """A helix over 7 values had 3 harmonics and a linear term (8 functions for 7 class means): it passed
    through any means, and pure noise fitted with R² 1."""
    rng = np.random.default_rng(period)
    y = np.repeat(np.arange(period), 20)
    X = rng.standard_normal((y.size, 16))
    res = ManifoldFit(period=period, shape=shape).fit(X, y).result_
    assert res.r2 < 0.99, res.r2


@pytest.mark.parametrize("shape", ["helix", "interval"])
def test_an_open_curve_over_four_values_warns_that_it_cannot_fail(shape):
    """Over 4 values one harmonic and a linear term are 4 terms for 4 class means: R² 1 on noise, silently."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    with pytest.warns(UserWarning, match=f"a {shape} over 4 values has as many curve terms as class means"):
        ManifoldFit(period=4, shape=shape).fit(rng.standard_normal((40, 8)), y)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layer": "3"}, "layer must be"), ({"layer": True}, "layer must be"), ({"layer": -1}, "layer must be"),
    ({"position": [1, 2]}, "position must be"), ({"position": 1.5}, "position must be"),
    ({"source": 5}, "source must be"),
])
def test_fit_refuses_metadata_that_would_not_load_back(kwargs, match):
    X, y, _ = planted_curve(period=7, n_per_value=3)
    with pytest.raises((TypeError, ValueError), match=match):
        ManifoldFit(period=7).fit(X, y, **kwargs)


def test_numpy_integer_metadata_is_saved_as_plain_integers(tmp_path):
    X, y, _ = planted_curve(period=7, n_per_value=3)
    res = ManifoldFit(period=7).fit(X, y, layer=np.int64(2), position=np.int32(4)).result_
    back = load_result(save_result(res, tmp_path / "fit.json"), ManifoldFitResult)
    assert back.layer == 2 and back.position == 4 and type(back.layer) is int


@pytest.mark.parametrize(("shape", "frequency"), [("circle", 8), ("circle", 5), ("helix", 100)])
def test_frequencies_above_half_the_period_are_refused(shape, frequency):
    X, y, _ = planted_curve(period=7, n_per_value=3)
    with pytest.raises(ValueError, match="frequency must be <= period // 2 = 3"):
        ManifoldFit(period=7, shape=shape, frequency=frequency).fit(X, y)


def test_a_forced_frequency_has_no_harmonic_that_aliases_onto_another():
    """Over 7 values the 2nd harmonic of k = 3 is frequency 6, i.e. 1: ManifoldFit(frequency=3) on k = 1 data
    reported R² 0.9998 against a fundamental R² of 0.0001."""
    X, y, _ = planted_curve(period=7, n_per_value=6, noise=0.01, seed=3)
    forced = ManifoldFit(period=7, frequency=3).fit(X, y).result_
    assert forced.n_harmonics == 1 and forced.r2 == pytest.approx(forced.r2_fundamental)
    assert forced.r2 < 0.2
    free = ManifoldFit(period=7).fit(X, y).result_
    assert free.frequency == 1 and free.n_harmonics == 2 and free.r2 > 0.99  # k = 1 keeps its harmonics
    months = ManifoldFit(period=12, frequency=5).fit(*planted_curve(period=12, n_per_value=4, seed=1)[:2]).result_
    assert months.n_harmonics == 1  # 2 x 5 = 10 = -2 over 12 would alias


@pytest.mark.parametrize("dtype", [np.complex128, np.bool_, object])
def test_fit_refuses_points_that_are_not_real_numbers(dtype):
    """Complex points lost their imaginary part with only a ComplexWarning; bool points were called
    "NaN, inf or non-numeric"."""
    X, y, _ = planted_curve(period=7, n_per_value=3, seed=0)
    with pytest.raises(TypeError, match=f"X must hold real numbers; got dtype {np.dtype(dtype)}"):
        ManifoldFit(period=7).fit(X.astype(dtype), y)


def test_a_one_component_interval_fit_draws_on_its_line():
    """ManifoldCircleDisplay.from_fit refused a valid one-component fit: "components must be in [0, 1); got
    (0, 1)", though the user passed no components."""
    import matplotlib

    matplotlib.use("Agg")
    from analyses.manifolds.display import ManifoldCircleDisplay

    X, y, _ = planted_curve(period=6, n_per_value=4, shape="interval", seed=2)
    fit = ManifoldFit(period=6, shape="interval", max_components=1).fit(X, y).result_
    assert fit.n_components == 1
    disp = ManifoldCircleDisplay.from_fit(fit, X, y).plot()
    assert disp.figure_ is not None and np.all(disp.means_2d[:, 1] == 0)
    with pytest.raises(ValueError, match=r"components must be in \[0, 1\)"):
        ManifoldCircleDisplay.from_fit(fit, components=(0, 2))

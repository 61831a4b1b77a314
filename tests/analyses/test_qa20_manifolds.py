"""QA pass 20, manifolds: discovery refuses non-finite or non-numeric inputs; the causal checks validate
their cases; tiling refuses what it used to clip, truncate or turn into "dead"; displays refuse indices
outside their data instead of an IndexError or a silently wrong colour."""

import types
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from analyses.manifolds.causal import SubstitutionCase, causal_check, check_cases, steer_check
from analyses.manifolds.discovery import ManifoldDiscovery
from analyses.manifolds.display import DecoderMapDisplay, ManifoldCircleDisplay, TuningCurvesDisplay
from analyses.manifolds.fit import ManifoldFit, ManifoldFitResult
from analyses.manifolds.tiling import compute_tiling
from analyses.results import load_result, save_result
from tests.analyses.manifolds.planted import planted_curve, planted_layer
from tests.helpers_mutants import edit_result_field


# ----------------------------------------------------------------------------- discovery (A)
def test_discovery_refuses_nan_and_inf_in_its_inputs() -> None:
    """One NaN decoder entry left a family silently unscored; one inf activation made the ring's score NaN
    and ranked it below a categorical family."""
    A, W, families, _ = planted_layer(n_tokens=300)
    W_nan = W.copy()
    W_nan[12, 3] = np.nan
    with pytest.raises(ValueError, match=r"W_dec must be finite; got nan at index \(12, 3\)"):
        ManifoldDiscovery().fit(A, W_nan, families)
    A_inf = A.tolil()
    A_inf[5, 0] = np.inf
    with pytest.raises(ValueError, match=r"A must be finite; got inf at index \(5, 0\)"):
        ManifoldDiscovery().fit(A_inf.tocsr(), W, families)
    dense = A.toarray()
    dense[7, 2] = -np.inf
    with pytest.raises(ValueError, match=r"A must be finite; got -inf at index \(7, 2\)"):
        ManifoldDiscovery().fit(dense, W, families)


def test_discovery_refuses_text_inputs_with_a_clear_error() -> None:
    """String activations gave scipy's "no supported conversion for types"."""
    A, W, families, _ = planted_layer(n_tokens=100)
    with pytest.raises(TypeError, match="A must hold real numbers; got dtype <U"):
        ManifoldDiscovery().fit(A.toarray().astype(str), W, families)
    with pytest.raises(TypeError, match="W_dec must hold real numbers; got dtype <U"):
        ManifoldDiscovery().fit(A, W.astype(str), families)  # these used to be parsed as numbers
    with pytest.raises(TypeError, match="A must hold real numbers; got dtype complex"):
        ManifoldDiscovery().fit(sp.csr_matrix(A, dtype=complex), W, families)


# ----------------------------------------------------------------------------- causal checks (D)
@pytest.fixture(scope="module")
def fit7() -> ManifoldFitResult:
    X, y, _ = planted_curve(period=7, n_per_value=3, d=16, seed=0)
    return ManifoldFit(period=7).fit(X, y, layer=1).result_


def _case(value: int = 0, targets: dict[int, int] | None = None, vector: Any = None) -> SubstitutionCase:
    return SubstitutionCase(tokens=[1, 2, 3], position=-1, value=value, targets={2: 5} if targets is None else targets,
                            vector=vector)


@pytest.mark.parametrize("case, message", [
    (_case(value=-1), r"cases\[0\]\.value must be an integer in \[0, 7\); got -1"),  # wrapped to class 6
    (_case(value=7), r"cases\[0\]\.value must be an integer in \[0, 7\); got 7"),  # a raw IndexError
    (_case(targets={-3: 5}), r"cases\[0\]\.targets value must be an integer in \[0, 7\); got -3"),
    (_case(targets={2: 10**9}), r"cases\[0\]\.targets\[2\] token id must be an integer in \[0, 50\); got 1000000000"),
    (_case(targets={2: -1}), r"token id must be an integer in \[0, 50\); got -1"),
    (_case(targets={}), r"cases\[0\]\.targets must be a non-empty mapping"),
])
def test_cases_outside_the_fit_or_the_vocabulary_are_refused(fit7: ManifoldFitResult, case: SubstitutionCase,
                                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_cases([case], fit7, 50)


def test_steering_checks_targets_and_vectors_but_not_the_value(fit7: ManifoldFitResult) -> None:
    d = fit7.class_means.shape[1]
    check_cases([_case(value=-1, vector=np.zeros(d))], fit7, 50, steering=True)  # steering never reads it
    with pytest.raises(ValueError, match=r"cases\[0\]\.targets value must be an integer in \[0, 7\); got -1"):
        check_cases([_case(targets={-1: 5}, vector=np.zeros(d))], fit7, 50, steering=True)
    with pytest.raises(ValueError, match=rf"cases\[0\]\.vector must have shape \({d},\).*got \(5,\)"):
        check_cases([_case(vector=np.zeros(5))], fit7, 50, steering=True)
    with pytest.raises(ValueError, match="got vector=None for case 0"):
        check_cases([_case()], fit7, 50, steering=True)


def test_both_checks_refuse_zero_cases_before_running_the_model(fit7: ManifoldFitResult) -> None:
    """causal_check reported rates 0.0 and mediates=False on no cases, steer_check NaN."""
    loaded: Any = types.SimpleNamespace(d_vocab=50)  # never run: the cases are refused first
    transcoders: Any = None
    for check in (causal_check, steer_check):
        with pytest.raises(ValueError, match="cases must hold at least one SubstitutionCase; got none"):
            check(loaded, transcoders, fit7, [])
    with pytest.raises(ValueError, match=r"targets\[2\] token id must be an integer in \[0, 50\)"):
        causal_check(loaded, transcoders, fit7, [_case(targets={2: 50})])


# ----------------------------------------------------------------------------- tiling (E)
def _bumps(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    u = np.random.default_rng(0).uniform(0, 2 * np.pi, n)
    phi = 2 * np.pi * np.arange(6) / 6
    return u, np.maximum(0.0, np.cos(u[:, None] - phi[None]) - 0.3)


def test_tiling_refuses_non_finite_activations() -> None:
    """One NaN row made every feature "dead" (NaN > 0 is False)."""
    u, A = _bumps()
    A[0] = np.nan
    with pytest.raises(ValueError, match=r"activations must be finite; got nan at index \(0, 0\)"):
        compute_tiling(u, A)
    u[3] = np.inf
    with pytest.raises(ValueError, match="coordinate must be finite; got inf at index 3"):
        compute_tiling(u, np.zeros((len(u), 2)))


def test_tiling_refuses_open_coordinates_outside_the_unit_interval() -> None:
    """closed=False clipped an angle in [0, 2π) to [0, 1] silently."""
    u, A = _bumps()
    with pytest.raises(ValueError, match=r"coordinate must be positions in \[0, 1\] when closed=False"):
        compute_tiling(u, A, closed=False)
    compute_tiling(u / (2 * np.pi), A, closed=False)  # positions: fine


def test_tiling_refuses_non_integer_values_and_misshapen_decoders() -> None:
    """values=1.5 was truncated to 1; W_dec with the wrong row count was a raw IndexError."""
    u, A = _bumps()
    with pytest.raises(TypeError, match="values must hold integers"):
        compute_tiling(u, A, values=np.full(len(u), 1.5), period=7)
    with pytest.raises(ValueError, match=r"W_dec must have shape \(6, d_model\).*got \(3, 4\)"):
        compute_tiling(u, A, np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"values must be integers in \[0, 3\)"):
        compute_tiling(u, A, values=np.full(len(u), 3), period=3)


def test_a_constant_coordinate_reports_undefined_selectivity() -> None:
    """Every feature was reported perfectly selective (selectivity 1) over a single point."""
    _, A = _bumps()
    with pytest.warns(UserWarning, match="coordinate is constant.*selectivity is undefined"):
        res = compute_tiling(np.full(len(A), 1.0), A)
    assert res.live.all() and np.isnan(res.selectivity).all() and np.isnan(res.fraction_selective)
    assert res.summary()["median_selectivity"] is None


# ----------------------------------------------------------------------------- displays (G)
def test_tuning_display_refuses_a_fit_of_another_period(fit7: ManifoldFitResult) -> None:
    """A fit of period 7 on a tiling of period 5 was an IndexError in the heatmap."""
    u, A = _bumps()
    tiling = compute_tiling(u, A, values=np.arange(len(u)) % 5, period=5)
    with pytest.raises(ValueError, match="fit must have the tiling's period 5.*got a fit of period 7"):
        TuningCurvesDisplay.from_tiling(tiling, fit7, style="heatmap")


def test_decoder_map_refuses_indices_outside_w_dec() -> None:
    """999 was an IndexError; -1 silently coloured the last feature."""
    W = np.random.default_rng(0).standard_normal((10, 4))
    for bad in (999, -1, 10):
        with pytest.raises(ValueError, match=rf"family 'x' must list rows of W_dec in \[0, 10\); got {bad}"):
            DecoderMapDisplay.from_decoders(W, {"x": [0, bad]}, method="pca")
    with pytest.raises(ValueError, match=r"preferred must list rows of W_dec in \[0, 10\); got -2"):
        DecoderMapDisplay.from_decoders(W, preferred={-2: 1.0}, method="pca")
    with pytest.raises(TypeError, match="family 'x' must hold integers"):
        DecoderMapDisplay.from_decoders(W, {"x": [0.5]}, method="pca")  # type: ignore[list-item]


def test_a_one_row_decoder_map_draws() -> None:
    """A 1-row PCA map had one column, and plotting it was an IndexError."""
    disp = DecoderMapDisplay.from_decoders(np.ones((1, 4)), {"x": [0]}, method="pca")
    assert disp.embedding.shape == (1, 2)
    assert disp.plot().figure_ is not None


def test_circle_display_refuses_negative_components(fit7: ManifoldFitResult) -> None:
    with pytest.raises(ValueError, match=r"components must be in \[0, \d\)"):
        ManifoldCircleDisplay.from_fit(fit7, components=(-1, 0))


def test_small_boundary_checks_of_fits_displays_and_discovery(tmp_path):
    """A 1-D activation array was one silent row; y without X, or of the wrong length, was ignored; a
    fit file with negative counts loaded."""
    X, y, _ = planted_curve(period=7, n_per_value=3)
    fit = ManifoldFit(period=7).fit(X, y).result_
    with pytest.raises(ValueError, match="y must give one value per row of X"):
        ManifoldCircleDisplay.from_fit(fit, y=y)
    with pytest.raises(ValueError, match=r"y must give one value per row of X \(21\)"):
        ManifoldCircleDisplay.from_fit(fit, X, y[:5])
    path = save_result(fit, tmp_path / "fit.json")
    edit_result_field(path, "n_points", -5)
    with pytest.raises(ValueError, match="class_counts must be whole counts >= 0 summing to n_points"):
        load_result(path, ManifoldFitResult)
    W = np.eye(4)
    with pytest.raises(ValueError, match=r"A must have shape \(n_tokens, n_features\); got \(4,\)"):
        ManifoldDiscovery().fit(np.ones(4), W, {"f": [0, 1, 2, 3]})

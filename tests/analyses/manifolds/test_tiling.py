"""Tiling statistics recover a planted ring of bump-tuned features."""

import dataclasses

import numpy as np
import pytest

from analyses.manifolds import curves
from analyses.manifolds.tiling import TilingResult, compute_tiling
from analyses.results import load_result, save_result
from tests.analyses.manifolds.planted import planted_layer


def _ring():
    A, W, families, theta = planted_layer(n_tokens=4000)
    rows = np.flatnonzero(~np.isnan(theta))
    return theta[rows], A[rows][:, families["ring"]], W[families["ring"]]


def test_planted_ring_is_tiled():
    theta, A, W = _ring()
    values = (np.floor(theta / (2 * np.pi) * 12 + 0.5).astype(int)) % 12
    res = compute_tiling(theta, A, W, features=list(range(100, 112)), values=values, period=12)
    phi = 2 * np.pi * np.arange(12) / 12
    assert np.abs(curves.circular_difference(res.preferred, phi)).max() < 0.05
    assert res.fraction_selective == 1.0 and np.all(res.selectivity > 0.9)
    assert res.coverage == 1.0 and res.covered_values == list(range(12)) and res.value_coverage == 1.0
    assert 0.2 < res.neighbour_overlap < 0.8  # bumps overlap their neighbours (cos - 0.6 spans ~106°)
    assert res.decoder_cosine_r is not None and res.decoder_cosine_r > 0.95
    assert np.allclose(res.width, res.width[0]) and 1.0 < res.width[0] < 2.5
    assert res.summary()["n_live"] == 12 and res.features[0] == 100


def test_open_coordinate_and_dead_features(tmp_path):
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 1, 3000)
    centres = np.array([0.1, 0.5, 0.9])
    A = np.maximum(0.0, 1 - np.abs(u[:, None] - centres[None]) / 0.15)  # three triangular bumps
    A = np.c_[A, np.zeros(3000)]  # a dead feature
    W = np.c_[np.linspace(0, 1, 4), np.ones(4)]
    res = compute_tiling(u, A, W, closed=False, n_bins=100)
    np.testing.assert_allclose(res.preferred[:3], centres, atol=0.01)
    assert np.isnan(res.preferred[3]) and not res.live[3] and res.selectivity[0] > 0.7
    assert res.coverage == pytest.approx(0.45, abs=0.04)  # three bumps of half-height width 0.15 each
    back = load_result(save_result(res, tmp_path / "t.json"), TilingResult)
    np.testing.assert_array_equal(back.tuning, res.tuning)
    assert back.summary() == res.summary()


def test_validation():
    with pytest.raises(ValueError, match="activations must have shape"):
        compute_tiling(np.zeros(5), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="coordinate must be finite"):
        compute_tiling(np.array([0.0, np.nan]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="values must be integers"):
        compute_tiling(np.zeros(3), np.ones((3, 1)), values=np.array([0, 1, 5]), period=3)


def test_value_cover_counts_half_peak_values_and_peaks_apart():
    from analyses.manifolds.tiling import value_cover

    T = np.array([[4.0, 2.5, 0.5, 0.0, 0.0, 1.9],   # peak 0, half-peak at 0, 1
                  [0.0, 0.0, 1.0, 2.0, 1.2, 0.0]])  # peak 3, half-peak at 2, 3, 4
    covered, peaks = value_cover(T)
    assert covered == [0, 1, 2, 3, 4] and peaks == [0, 3]
    assert value_cover(np.zeros((0, 6))) == ([], [])


def test_an_inconsistent_result_is_refused():
    res = compute_tiling(np.linspace(0, 1, 50), np.ones((50, 3)), closed=False, n_bins=5)
    with pytest.raises(ValueError, match=r"TilingResult live must have shape \(3,\)"):
        dataclasses.replace(res, live=res.live[:-1])
    with pytest.raises(ValueError, match=r"TilingResult tuning must have shape \(3, 5\)"):
        dataclasses.replace(res, tuning=res.tuning[:, :4])

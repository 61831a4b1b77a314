"""Manifold displays draw from fitted results (Agg, no pyplot) and save PNG/SVG."""

import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp

from analyses.manifolds.display import (
    DecoderMapDisplay,
    FrequencyR2Display,
    ManifoldCircleDisplay,
    TuningCurvesDisplay,
    embed_2d,
)
from analyses.manifolds.fit import ManifoldFit
from analyses.manifolds.tiling import compute_tiling
from tests.analyses.manifolds.planted import planted_curve, planted_layer


@pytest.fixture(scope="module")
def fitted():
    X, y, _ = planted_curve(period=12, n_per_value=10, second_harmonic=0.8, noise=0.3, seed=0)
    return ManifoldFit(period=12).fit(X, y, value_names=[f"m{i}" for i in range(12)], layer=2), X, y


def test_circle_and_frequency_displays(fitted, tmp_path):
    fit, X, y = fitted
    disp = ManifoldCircleDisplay.from_fit(fit.result_, X, y).plot()
    assert disp.means_2d.shape == (12, 2) and len(disp.ax_.texts) == 12
    assert "k=1" in disp.title
    assert disp.savefig(tmp_path / "circle.svg").read_text().lstrip().startswith("<?xml")
    freq = FrequencyR2Display.from_fit(fit.result_).plot()
    assert freq.frequencies == [1, 5] and freq.chosen == 1
    assert freq.savefig(tmp_path / "freq.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="components must be"):
        ManifoldCircleDisplay.from_fit(fit.result_, components=(0, 9))


def test_tuning_display(fitted, tmp_path):
    fit, X, y = fitted
    A, W, families, theta = planted_layer(n_tokens=1500)
    rows = np.flatnonzero(~np.isnan(theta))
    tiling = compute_tiling(theta[rows], A[rows][:, families["ring"]], W[families["ring"]])
    disp = TuningCurvesDisplay.from_tiling(tiling, fit=fit.result_).plot()
    assert len(disp.ax_.lines) == 12 and len(disp.ax_.get_xticklabels()) == 12
    disp.savefig(tmp_path / "tuning.png")


def test_decoder_map_pca_and_lazy_umap(monkeypatch, tmp_path):
    A, W, families, _ = planted_layer(n_tokens=200)
    disp = DecoderMapDisplay.from_decoders(W, families, preferred={i: 0.5 * i for i in range(12)}, method="pca")
    disp.plot(color_by="family")
    assert len(disp.ax_.get_legend().get_texts()) == 3
    disp.plot(color_by="value").savefig(tmp_path / "map.svg")
    with pytest.raises(ValueError, match="color_by must be"):
        disp.plot(color_by="size")
    calls = {}

    class FakeUMAP:  # umap-learn itself takes minutes to JIT here; check our call into it
        def __init__(self, **kwargs):
            calls.update(kwargs)

        def fit_transform(self, X):
            calls["n"] = len(X)
            return X[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    E = embed_2d(W, method="umap", random_state=3)
    assert E.shape == (30, 2) and calls["metric"] == "cosine" and calls["random_state"] == 3 and calls["n"] == 30
    with pytest.raises(ValueError, match="method must be"):
        embed_2d(W, method="tsne")


def test_discovery_displays(tmp_path):
    from analyses.manifolds.discovery import ManifoldDiscovery
    from analyses.manifolds.display import DiscoveryRankingDisplay, FamilyCloudDisplay
    from analyses.manifolds.irreducibility import IrreducibilityConfig

    A, W, families, theta = planted_layer(n_tokens=3000)
    est = ManifoldDiscovery(metric_points=400, irreducibility=IrreducibilityConfig(n_steps=300)).fit(
        A, W, families, feature_layer=2)
    ranking = DiscoveryRankingDisplay.from_result(est.result_).plot()
    scored = [f.name for f in est.result_.families if f.scored]
    ticks = dict(zip(ranking.ax_.get_yticks(), [t.get_text() for t in ranking.ax_.get_yticklabels()]))
    assert ranking.names == scored and [ticks[y] for y in sorted(ticks, reverse=True)] == scored  # best on top
    assert "transcoder layer 2" in ranking.title
    assert ranking.savefig(tmp_path / "ranking.png").read_bytes()[:4] == b"\x89PNG"
    ring = est.result_.family("ring")
    cloud = FamilyCloudDisplay.from_family(ring, A, W).plot()
    assert cloud.points_2d.shape == (ring.n_strong, 2) and len(cloud.ax_.lines) == 1
    # the recomputed cloud is the one discovery scored: its points sit at their fitted angles on the curve
    angle = np.arctan2(*(cloud.points_2d - cloud.points_2d.mean(0)).T[::-1])
    curve_angle = np.arctan2(*(cloud.curve_2d - cloud.curve_2d.mean(0)).T[::-1])
    at = curve_angle[np.round(cloud.angles / (2 * np.pi) * (len(curve_angle) - 1)).astype(int)]
    assert np.mean(np.cos(angle - at)) > 0.9
    assert cloud.savefig(tmp_path / "cloud.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="A must be the activations discovery was fitted on"):
        FamilyCloudDisplay.from_family(ring, sp.csr_matrix(A.shape), W)
    with pytest.raises(ValueError, match="A and W_dec must be what discovery was fitted on"):
        FamilyCloudDisplay.from_family(ring, A[:10], W)


def test_to_svg_is_inline_deterministic_and_plots_first(fitted):
    est, X, y = fitted
    display = ManifoldCircleDisplay.from_fit(est.result_, X, y)
    assert not hasattr(display, "figure_")
    svg = display.to_svg()  # draws it first
    assert hasattr(display, "figure_")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and "<?xml" not in svg
    assert "<dc:date>" not in svg  # no date: the same figure gives the same text
    assert ManifoldCircleDisplay.from_fit(est.result_, X, y).to_svg() == svg
    assert all(f"<!-- m{i} -->" in svg for i in range(12))  # every value label is drawn


def test_saved_figures_are_deterministic(fitted, tmp_path):
    """The demo report inlines the SVG files written by savefig: they carried a date and random element
    ids, so two identical runs gave different reports."""
    est, X, y = fitted
    for ext in ("svg", "pdf", "png"):
        a, b = (ManifoldCircleDisplay.from_fit(est.result_, X, y).savefig(tmp_path / f"{k}.{ext}") for k in "ab")
        assert a.read_bytes() == b.read_bytes(), ext
    svg = (tmp_path / "a.svg").read_text()
    assert "<dc:date>" not in svg and svg[svg.index("<svg"):] == ManifoldCircleDisplay.from_fit(
        est.result_, X, y).to_svg()


def test_tuning_heatmap_shows_place_cells_as_a_diagonal_band(fitted, tmp_path):
    est, _, _ = fitted
    A, W, families, theta = planted_layer(n_tokens=3000)
    rows = np.flatnonzero(~np.isnan(theta))
    values = (theta[rows] / (2 * np.pi) * 12).astype(int) % 12  # the ring's true value per row
    tiling = compute_tiling(theta[rows], A[rows][:, families["ring"]], W[families["ring"]], values=values, period=12)
    disp = TuningCurvesDisplay.from_tiling(tiling, fit=est.result_, style="heatmap").plot()
    heat, columns = disp.heat, disp.heat_columns
    assert heat is not None and columns is not None
    assert heat.shape == (int(tiling.live.sum()), 12) and len(disp.ax_.images) == 1
    np.testing.assert_allclose(np.nanmax(heat, axis=1), 1.0)  # each row scaled to its own peak
    # rows go by preferred angle, so each row's peak value moves one way round the circle
    peak = np.array([int(columns[j][1:]) for j in heat.argmax(1)])
    steps = np.diff(peak) % 12
    assert np.all((steps <= 3) | (steps >= 9)), peak
    forward = np.sum((steps > 0) & (steps <= 3))
    backward = np.sum(steps >= 9)
    assert min(forward, backward) <= 1 and max(forward, backward) >= 6  # one direction (plus at most one slip)
    assert disp.to_svg().startswith("<svg")
    lines = TuningCurvesDisplay.from_tiling(tiling, fit=est.result_).plot()  # auto: 12 features -> lines
    assert lines.style == "lines" and len(lines.ax_.lines) == 12
    # drawing again on the same Axes replaces the drawing: one image, one colorbar, 12 lines (not stacked)
    assert disp.plot(ax=disp.ax_) is disp and len(disp.ax_.images) == 1 and len(disp.figure_.axes) == 2
    assert len(lines.plot(ax=lines.ax_).ax_.lines) == 12
    with pytest.raises(ValueError, match="style must be"):
        TuningCurvesDisplay.from_tiling(tiling, style="bars")

"""Manifold displays draw from fitted results (Agg, no pyplot) and save PNG/SVG."""

import sys
import types

import numpy as np
import pytest

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

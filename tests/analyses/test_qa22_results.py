"""QA pass 22: a result's JSON and its arrays file are one save. An interrupted re-save (new arrays, old
JSON) loaded as one result: the old fit's metadata with another fit's centre and basis."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analyses.manifolds.fit import ManifoldFit, ManifoldFitResult
from analyses.results import load_result, save_result
from tests.analyses.manifolds.planted import planted_curve


def _fit(seed: int) -> ManifoldFitResult:
    X, y, _ = planted_curve(period=5, n_per_value=3, seed=seed)
    return ManifoldFit(period=5).fit(X, y).result_


def test_arrays_of_another_save_are_refused(tmp_path: Path) -> None:
    old = save_result(_fit(0), tmp_path / "old" / "fit.json")
    new = save_result(_fit(1), tmp_path / "new" / "fit.json")
    back = load_result(old, ManifoldFitResult)
    np.testing.assert_array_equal(back.centre, _fit(0).centre)  # a whole save reads back exactly
    assert json.loads(old.read_text())["arrays_sha256"] != json.loads(new.read_text())["arrays_sha256"]
    shutil.copy(new.with_suffix(".safetensors"), old.with_suffix(".safetensors"))  # the arrays of another save
    with pytest.raises(ValueError, match=r"result arrays must be the file saved with '.*old/fit.json'; got "
                                         r"'.*old/fit.safetensors', whose content differs \(another save"):
        load_result(old, ManifoldFitResult)


def test_a_json_without_the_digest_still_loads(tmp_path: Path) -> None:
    """Results saved before the digest existed stay readable."""
    path = save_result(_fit(0), tmp_path / "fit.json")
    doc = json.loads(path.read_text())
    del doc["arrays_sha256"]
    path.write_text(json.dumps(doc))
    np.testing.assert_array_equal(load_result(path, ManifoldFitResult).centre, _fit(0).centre)


def test_reprs_are_summaries() -> None:
    """The dataclass default printed every array: 34,156 characters for a 7-value fit in 128 dimensions."""
    X, y, _ = planted_curve(period=7, n_per_value=3, d=128, seed=0)
    text = repr(ManifoldFit(period=7).fit(X, y).result_)
    assert len(text) < 1500 and "centre=array(128,) float64" in text and text.startswith("ManifoldFitResult(")


def test_graph_repr_is_a_summary() -> None:
    from tests.helpers_models import random_tokens, tiny_model, tiny_transcoders
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig

    loaded = tiny_model("qwen3")
    graph = attribute(loaded, tiny_transcoders(loaded, "plt", d_transcoder=64), random_tokens(7),
                      AttributionConfig(verbose=False))
    assert repr(graph).startswith(f"Graph(n_nodes={graph.n_nodes}, ") and len(repr(graph)) < 400

"""The token-class scale benchmark (workbench.bench.token_classes_scale), at a small size."""

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.bench.token_classes_scale import main, synthetic_sample


def test_the_synthetic_sample_plants_classes_and_case_variants() -> None:
    d = synthetic_sample(4000, 16, 2000, 500, 4, seed=1)
    assert d["W_U"].shape == (4000, 16) and d["A"].shape == (2000, 500) and d["A"].nnz <= 2000 * 4
    assert d["tokens"].shape == d["next_tokens"].shape == (2000,) and d["next_tokens"][-1] == -1
    sizes = np.bincount(d["planted"][d["planted"] >= 0])
    assert sizes.min() >= 5 and sizes.max() <= 30
    assert d["words"][10] == "W9" and d["words"][9] == "w9" and d["words"][11] == "w11"  # one word, two tokens


def test_the_benchmark_recovers_planted_classes_and_reports_its_cost(tmp_path: Path) -> None:
    out = tmp_path / "tc.json"
    assert main(["--d-vocab", "5000", "--d-model", "64", "--n-rows", "3000", "--n-features", "2000", "--active", "8",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ari_planted_tokens"] > 0.8 and report["n_classes"] > 10
    assert set(report["seconds"]) == {"generate", "energies", "classes", "dominant_class", "feature_roles"}
    rss = report["peak_rss_gib"]
    assert rss["total"] >= rss["token_step"] >= rss["inputs"] > 0
    assert report["n_roles"] > report["n_classes"] and 0 < report["features_with_a_class_role"] <= 2000


def test_bad_sizes_are_one_clear_error(tmp_path: Path) -> None:
    from tracer.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="--active must be <= --n-features"):
        main(["--n-features", "10", "--active", "64", "--out", str(tmp_path / "x.json")])
    with pytest.raises(WorkbenchError, match="--d-vocab must be >= 3000; got 10"):
        main(["--d-vocab", "10", "--out", str(tmp_path / "x.json")])

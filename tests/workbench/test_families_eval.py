"""Scoring FeatureFamilies against a world's per-feature truth (workbench.families_eval)."""

import numpy as np
import pytest

from workbench.families_eval import family_ari, grid_params, score, world_sample
from workbench.paths import world_dir
from workbench.world.truth import FeatureTruth, load_truth


def _truth(families: list[str | None]) -> dict[tuple[int, int], FeatureTruth]:
    return {(0, f): FeatureTruth(layer=0, feature=f, side="output" if fam else "none", family=fam, value=None,
                                 top_logit=None, coverage=0.9, selectivity=None, n_fires=9)
            for f, fam in enumerate(families)}


def test_family_ari_scores_only_family_features() -> None:
    truth = _truth(["day", "day", "day", "month", "month", None, None])
    layer, feature = np.zeros(7, dtype=int), np.arange(7)
    assert family_ari(np.array([0, 0, 0, 1, 1, 0, 1]), layer, feature, truth) == {0: pytest.approx(1.0)}
    # unassigned features are singletons: splitting the day family costs
    assert family_ari(np.array([0, -1, -1, 1, 1, 2, 2]), layer, feature, truth)[0] < 0.5
    rand = family_ari(np.array([0, 0, 0, 1, 1, 2, 2]), layer, feature, truth, shuffle_seed=3)[0]
    assert rand < 1.0


def test_grid_covers_both_evidence_kinds() -> None:
    grid = grid_params()
    assert {p["coactivation"] for p in grid} == {"profile", "jaccard"}
    assert {p["clustering"] for p in grid} == {"average", "hdbscan"}
    assert not any(p["coactivation"] == "jaccard" and p["context"] == "all" for p in grid)


@pytest.mark.slow  # loads the world, runs 400 sentences, fits twice (tens of seconds on 2 busy cores)
@pytest.mark.skipif(not (world_dir() / "feature_truth_clt.jsonl").is_file(), reason="no demo world truth")
def test_coactivation_beats_decoder_only_and_chance_on_the_shipped_clt() -> None:
    sample = world_sample(world_dir(), "clt", n_sentences=400, stream="families-test")
    truth = load_truth(world_dir() / "feature_truth_clt.jsonl")
    assert sample.X.shape == (2048, 4 * 128) and sample.activations.shape[1] == 2048
    co = score(sample, truth, {})
    dec = score(sample, truth, {}, use_activations=False)
    assert co["ari_family"]["mean"] > dec["ari_family"]["mean"] + 0.1
    assert co["ari_family"]["mean"] > co["random_ari_family"] + 0.1
    assert set(co["ari_family"]["per_layer"]) == {0, 1, 2, 3}

"""Scoring FeatureFamilies against a world's per-feature truth (workbench.families_eval)."""

from typing import Any

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


@pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(), reason="needs the shipped demo world")
def test_token_families_do_not_depend_on_the_token_ids() -> None:
    """HDBSCAN breaks ties by the order of its points; in id order, renumbering the vocabulary split the hue
    wheel of this sample. The words now go in by their text: every renumbering gives the same families."""
    from analyses.families import FeatureFamilies
    s = world_sample(world_dir(), "plt", n_sentences=600)

    def families(perm: np.ndarray, **params: Any) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
        new_id = np.argsort(perm)  # old id i is new id new_id[i]; new row j is old row perm[j]
        words = [s.token_words[i] for i in perm]
        est = FeatureFamilies(**params).fit(s.X, layer=s.layer, feature=s.feature, activations=s.activations,
                                    tokens=new_id[s.tokens], next_tokens=np.where(
                                        s.next_tokens >= 0, new_id[np.maximum(s.next_tokens, 0)], -1),
                                    token_vectors=s.token_vectors[perm], token_words=words)
        return sorted((tuple(np.flatnonzero(est.labels_ == f.id).tolist()), tuple(sorted(words[t] for t in f.tokens)))
                      for f in est.result_.families if f.tokens)

    # also unfolded words, and a max_tokens cut through tokens of equal counts (ties broken by content)
    for params in ({}, {"fold_case": False}, {"max_tokens": 100}):
        base = families(np.arange(len(s.token_words)), **params)
        for seed in range(3):
            assert families(np.random.default_rng(seed).permutation(len(s.token_words)), **params) == base, params


@pytest.mark.skipif(not (world_dir() / "feature_truth_plt.jsonl").is_file(), reason="no demo world truth")
def test_the_tuning_scores_token_points_over_word_orders_and_the_spread_reports_them(monkeypatch) -> None:  # noqa: ANN001
    import workbench.families_eval as fe

    sample = world_sample(world_dir(), "plt", n_sentences=300, stream="families-test")
    truth = load_truth(world_dir() / "feature_truth_plt.jsonl")
    monkeypatch.setattr(fe, "GRID", {**fe.GRID, "coactivation": ["profile"], "weighting": ["activation"],
                                     "coactivation_weight": [1.0], "context": ["all"],
                                     "clustering_cut": [("average", 0.6)]})
    monkeypatch.setattr(fe, "TOKEN_GRID", {"token_clustering": [("hdbscan", "leaf"), ("average", 0.4)],
                                           "fold_case": [True], "min_token_class": [5], "min_token_share": [0.3]})
    best, rows = fe.tune({"plt": (sample, truth)})
    assert [r["seeds"] for r in rows] == [[0], list(fe.TUNING_SEEDS), list(fe.TUNING_SEEDS)]
    assert rows[1]["params"]["token_selection"] == "leaf" and rows[2]["params"]["token_cut"] == 0.4
    assert best == max(rows, key=lambda r: r["mean"])["params"]
    spread = fe.order_spread(sample, truth, best, seeds=range(3))
    assert spread["seeds"] == [0, 1, 2] and len(spread["ari"]) == 3
    assert spread["min"] <= spread["mean"] <= spread["max"]
    assert spread["ari"][0] == round(score(sample, truth, best)["ari_family"]["mean"], 4)  # seed 0 is the default

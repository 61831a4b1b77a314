"""workbench.scoring.supernodes: truth keys, purity by hand, prompt choice, summaries."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.scoring.supernodes import (
    SETS,
    affinity_pairs,
    prompts_to_score,
    purity,
    purity_interval,
    random_purity,
    summarize,
    truth_ids,
    truth_key,
    word_shares,
)
from workbench.world.truth import load_truth

CYCLIC = {"day", "month", "hue"}


def _rec(layer: int, feature: int, side: str, family: str | None, value: object, task: str | None = None):
    return SimpleNamespace(layer=layer, feature=feature, side=side, family=family, value=value, task=task)


def test_truth_keys_ignore_cyclic_values_only() -> None:
    day_a, day_b = _rec(0, 1, "output", "day", "Monday"), _rec(0, 2, "output", "day", "Friday")
    teskar, dunhal = _rec(0, 3, "output", "capital", "Teskar"), _rec(0, 4, "output", "capital", "Dunhal")
    assert truth_key(day_a, CYCLIC, level="value") == truth_key(day_b, CYCLIC, level="value")
    assert truth_key(teskar, CYCLIC, level="value") != truth_key(dunhal, CYCLIC, level="value")
    assert truth_key(teskar, CYCLIC, level="family") == truth_key(dunhal, CYCLIC, level="family")
    none_a, none_b = _rec(1, 5, "none", None, None), _rec(1, 6, "none", None, None)
    assert truth_key(none_a, CYCLIC, level="value") == truth_key(none_b, CYCLIC, level="value")
    assert truth_key(none_a, CYCLIC, level="strict") != truth_key(none_b, CYCLIC, level="strict")
    ctx_a, ctx_b = _rec(1, 7, "context", None, None, "two_hop"), _rec(1, 8, "context", None, None, "day_arith")
    assert truth_key(ctx_a, CYCLIC, level="strict") != truth_key(ctx_b, CYCLIC, level="strict")


def test_purity_by_hand() -> None:
    truth = {(0, f): _rec(0, f, "output", "capital", "Teskar" if f < 3 else "Dunhal") for f in range(6)}
    truth[(0, 9)] = _rec(0, 9, "input", None, "is")
    groups = [np.array([[0, 0], [0, 1], [0, 3]]), np.array([[0, 4], [0, 5]]), np.array([[0, 9]])]
    got = purity(groups, truth, CYCLIC, "value")
    assert got["purity"] == pytest.approx((2 / 3 * 3 + 1.0 * 2) / 5)  # singletons do not count
    assert got["groups_pure"] == 0.5 and got["n_groups"] == 2 and got["n_members"] == 5
    assert purity(groups, truth, CYCLIC, "family")["purity"] == 1.0
    assert np.isnan(purity(groups[2:], truth, CYCLIC, "value")["purity"])


def test_random_purity_draws_same_sized_groups_at_the_same_position() -> None:
    truth = {(0, f): _rec(0, f, "output", "capital", "Teskar") for f in range(4)}  # position 1: one key
    truth |= {(1, f): _rec(1, f, "input", None, "is" if f % 2 else "of") for f in range(4)}  # position 2: two
    pool = np.array([[0, 1, f] for f in range(4)] + [[1, 2, f] for f in range(4)])  # (layer, pos, feature)
    whole = random_purity([pool[:4]], pool, truth, CYCLIC)
    assert whole["value"] == 1.0
    at_two = random_purity([pool[4:]], pool, truth, CYCLIC)  # the whole position: always half and half
    assert at_two["value"] == 0.5 and at_two["side"] == 1.0
    assert np.isnan(random_purity([pool[:1]], pool, truth, CYCLIC)["value"])  # singletons do not count
    pairs = random_purity([pool[4:6]], pool, truth, CYCLIC, n_draws=400)
    assert pairs["value"] == pytest.approx(0.5 * 2 / 3 + 1.0 / 3, abs=0.05)  # a pair matches w.p. 1/3


def test_prompts_cover_the_demo_and_every_set(tmp_path) -> None:
    manifest = {"demo_prompts": {"a": "x is", "b": "y is"},
                "prompt_sets": {name: [{"prompt": f"{name} {i}"} for i in range(30)] for name in SETS}}
    prompts = prompts_to_score(manifest, 20)
    assert prompts[:2] == [("demo_a", "x is"), ("demo_b", "y is")]
    for name in SETS:
        picked = [p for s, p in prompts if s == name]
        assert len(picked) == 20 and picked[0] == f"{name} 0" and picked[-1] == f"{name} 29"
    path = tmp_path / "truth.jsonl"
    path.write_text(json.dumps({"layer": 1, "feature": 2, "side": "input", "family": None, "value": "is",
                                "top_logit": None, "coverage": 0.9, "selectivity": None, "n_fires": 7}) + "\n")
    assert load_truth(path)[(1, 2)].value == "is"


def test_summary_pools_purity_by_members_and_flags_targets() -> None:
    def record(p: float, members: int, compression: float, ratio: float) -> dict:
        levels = {lv: {"purity": p, "n_members": members} for lv in ("side", "family", "value", "strict")}
        return {"purity": levels, "purity_random": {lv: p / 2 for lv in levels},
                "compression": compression, "replacement_ratio": ratio,
                "circuit": {"replacement": 0.9, "completeness": 0.9}, "pruned": {"replacement": 1, "completeness": 1},
                "sign_consistency": {"mass_weighted": 0.95}, "seconds_circuit": 0.1}
    s = summarize([record(1.0, 30, 3.0, 1.0), record(0.7, 10, 2.0, 0.95)])
    assert s["purity"]["value"] == pytest.approx((30 + 7) / 40)
    assert s["purity_interval"]["value"][0] <= s["purity"]["value"] <= s["purity_interval"]["value"][1]
    assert s["purity_random"]["value"] == pytest.approx((30 + 7) / 40 / 2)  # weighted by the same members
    assert "pair_separability" not in s
    assert s["compression"] == 2.5 and s["targets_met"] == {"purity": True, "compression": True,
                                                             "replacement_ratio": True}
    one, two = record(1.0, 30, 3.0, 1.0), record(0.7, 10, 2.0, 0.95)
    one["_pairs"] = (np.array([0.9, 0.2]), np.array([True, False]))
    two["_pairs"] = (np.array([0.5, 0.6]), np.array([False, True]))
    sep = summarize([one, two])["pair_separability"]
    assert sep == {"auc": 1.0, "n_pairs": 4, "share_same": 0.5}  # pooled: every same pair above every other


def test_purity_interval_resamples_whole_graphs() -> None:
    def record(p: float, members: int) -> dict:
        return {"purity": {"value": {"purity": p, "n_members": members}}}

    same = purity_interval([record(0.9, 20)] * 10, "value")
    assert same == pytest.approx([0.9, 0.9])  # every resample pools the same graphs
    mixed = [record(1.0, 30), record(0.5, 30), record(float("nan"), 0)] * 10  # a graph without groups adds nothing
    lo, hi = purity_interval(mixed, "value")
    assert 0.6 < lo < 0.75 < hi < 0.9  # around the pooled 0.75, as wide as 20 graphs of two kinds make it


def test_affinity_pairs_are_the_joinable_pairs_with_their_truth() -> None:
    truth = {(0, f): _rec(0, f, "output", "capital", "Teskar" if f < 2 else "Dunhal") for f in range(4)}
    keys = np.array([[0, 1, 0], [0, 1, 1], [0, 1, 2], [0, 2, 3]])  # (layer, pos, feature)
    cannot = np.zeros((4, 4), bool)
    cannot[0, 2] = cannot[2, 0] = True
    affinity = np.arange(16, dtype=np.float32).reshape(4, 4)
    fitted = SimpleNamespace(keys_=keys, cannot_link_=cannot, affinity_=affinity)
    aff, same = affinity_pairs(fitted, truth, CYCLIC)
    assert aff.tolist() == [1.0, 6.0] and same.tolist() == [True, False]  # (0, 1) and (1, 2); (0, 2) cannot


def test_truth_ids_give_one_id_per_target_key() -> None:
    truth = {(0, 1): _rec(0, 1, "output", "day", "Monday"), (0, 2): _rec(0, 2, "output", "day", "Friday"),
             (1, 3): _rec(1, 3, "output", "capital", "Teskar"), (1, 4): _rec(1, 4, "output", "capital", "Dunhal"),
             (2, 5): _rec(2, 5, "none", None, None), (3, 6): _rec(3, 6, "none", None, None)}
    ids = truth_ids(truth, CYCLIC)
    assert ids[(0, 1)] == ids[(0, 2)] and ids[(2, 5)] == ids[(3, 6)]  # cyclic values and "none" alike
    assert len({ids[(0, 1)], ids[(1, 3)], ids[(1, 4)], ids[(2, 5)]}) == 4


def test_word_shares_by_hand() -> None:
    import scipy.sparse as sp

    # rows: "is", "is", "of"; features: (0, 0) fires at "is" only; (0, 1) has energy 2² at "is" and
    # sqrt(2)² at "of", so 4 / 6 at "is"; (0, 2) never fires at "is"
    A = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, np.sqrt(2.0), 5.0]]))
    truth = {(0, 0): _rec(0, 0, "input", None, "is"), (0, 1): _rec(0, 1, "none", None, None),
             (0, 2): _rec(0, 2, "input", None, "of")}
    got = word_shares(A, np.array(["is", "is", "of"]), np.zeros(3, int), np.arange(3), truth, CYCLIC, {"is"})
    assert list(got) == ["input / None / is", "none / None / None"]  # "of" reader: share 0 < 0.2
    assert got["input / None / is"] == {"n_features": 1, "quantiles_10_25_50_75_90": [1.0] * 5}
    assert got["none / None / None"]["quantiles_10_25_50_75_90"] == [0.667] * 5  # rounded to 3 digits


def test_the_oracle_run_is_pure_and_the_headline_is_not_given_the_truth() -> None:
    from workbench.paths import world_dir
    from workbench.scoring.supernodes import score_world

    world = world_dir()
    if not (world / "manifest.json").is_file():
        pytest.skip("data/world is not built")
    report = score_world(world, world, ["plt"], 0, "none", verbose=False, coactivation_sentences=40)["plt"]
    oracle, head = report["oracle_truth_keys"], report["overall"]
    assert oracle["n_graphs"] == head["n_graphs"] == 2  # the two demo prompts
    assert oracle["purity"]["value"] == 1.0 and oracle["compression"] > 1.0
    assert head["purity"]["value"] < 1.0  # the default clustering never sees the truth
    shares = report["answer_word_share"]
    assert shares["words"] == ["is"] and shares["by_truth_key"]
    assert all(0.2 <= q <= 1.0 for row in shares["by_truth_key"].values() for q in row["quantiles_10_25_50_75_90"])


def test_another_sample_stream_draws_another_sample_and_the_truth_s_own_is_refused(tmp_path, capsys) -> None:
    from workbench.cli_safety import run_script
    from workbench.paths import world_dir
    from workbench.scoring.supernodes import coactivation_sample, main

    world = world_dir()
    if not (world / "manifest.json").is_file():
        pytest.skip("data/world is not built")
    _, _, own = coactivation_sample(world, "plt", 20)
    _, _, again = coactivation_sample(world, "plt", 20, stream="families-sample")
    _, _, other = coactivation_sample(world, "plt", 20, stream="s2")
    assert np.array_equal(own.tokens, again.tokens) and not np.array_equal(own.row_word, other.row_word)
    code = run_script(lambda: main(["--out", str(tmp_path / "s.json"), "--sample-stream", "truth", "-q"]), "x")
    err = capsys.readouterr().err
    assert code == 2 and "--sample-stream must name a stream other than the truth's own ('truth')" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s.json").exists()

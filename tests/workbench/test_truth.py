"""The per-feature truth of the demo world: the procedure on planted features, the label check,
and the shipped files in data/world."""

import json

import numpy as np
import pytest
import torch

from tracer.labels import FeatureLabel, load_labels
from tracer.transcoders.base import TranscoderLayer, Transcoders
from workbench.paths import world_dir
from workbench.world import generator as gen
from workbench.world import language as lang
from workbench.world.truth import (
    FeatureTruth,
    TruthConfig,
    direct_logit_effects,
    feature_truth,
    load_truth,
    save_truth,
    token_table,
    tuning_value,
)
from workbench.world.truth_labels import check_claim, reconcile_label, reconcile_labels

FAMILIES = {"day", "month", "hue", "offset", "city", "region", "capital"}


@pytest.fixture(scope="module")
def spec() -> lang.WorldSpec:
    return lang.make_world(0)


def _sentences(spec: lang.WorldSpec) -> list[gen.Sentence]:
    """Arithmetic, two-hop and filler sentences, several of each."""
    sents = [gen.arith_sentence("day", s, o, "after", t) for s in range(7) for o in (2, 3) for t in (0, 1)]
    sents += [gen.two_hop_sentence(spec, c, t) for c in spec.cities[:24] for t in (0, 1)]
    sents += gen.sample_corpus(spec, 60, seed=0, stream="test", mixture={"filler": 1.0})
    return sents


def _planted(spec: lang.WorldSpec) -> tuple[Transcoders, torch.Tensor, object, list[str], torch.Tensor]:
    """One layer whose MLP input is [word one-hot | output-group one-hot | task one-hot] and six
    features with a known truth: 0 Friday token, 1 say <capital of region 0>, 2 'of' token,
    3 filler context, 4 dead, 5 say a day (any day)."""
    table = token_table(_sentences(spec), spec)
    n_w, n_g, n_t = len(table.words), len(table.groups), len(table.tasks)
    d = n_w + n_g + n_t
    X = torch.zeros(1, table.n_rows, d)  # (L, n_rows, d_model)
    rows = torch.arange(table.n_rows)
    X[0, rows, torch.from_numpy(table.word)] = 1.0
    has_out = torch.from_numpy(table.out_group >= 0)
    X[0, rows[has_out], n_w + torch.from_numpy(table.out_group)[has_out]] = 1.0
    X[0, rows, n_w + n_g + torch.from_numpy(table.task)] = 1.0
    capital = spec.capital_of[spec.regions[0]]
    W_enc = torch.zeros(1, 6, d)
    W_enc[0, 0, table.words.index("Friday")] = 1.0
    W_enc[0, 1, n_w + table.groups.index(("capital", capital))] = 1.0
    W_enc[0, 2, table.words.index("of")] = 1.0
    W_enc[0, 3, n_w + n_g + table.tasks.index("filler")] = 1.0
    for i, (family, _) in enumerate(table.groups):
        W_enc[0, 5, n_w + i] = float(family == "day")
    vocab = lang.vocabulary()
    W_U = torch.zeros(len(vocab), d)
    W_dec = torch.zeros(6, d)
    W_dec[1, 0] = 1.0
    W_U[vocab.index(capital), 0] = 3.0
    W_U[vocab.index("<bos>"), 0] = 9.0  # a special token is never the top logit
    layer = TranscoderLayer(W_enc=W_enc[0], b_enc=torch.zeros(6), W_dec=W_dec, b_dec=torch.zeros(d),
                            activation="jumprelu", threshold=torch.full((6,), 0.5))
    tc = Transcoders(kind="plt", layers=(layer,))
    return tc, X, table, vocab, W_U


def test_token_table_reads_the_generator_variables(spec: lang.WorldSpec) -> None:
    s = gen.arith_sentence("day", 4, 2, "after", 0)  # Two days after Friday is Sunday .
    t = token_table([s], spec)
    words = [t.words[i] for i in t.word]
    assert words == list(s.words)
    ins = [t.groups[i] if i >= 0 else None for i in t.in_group]
    outs = [t.groups[i] if i >= 0 else None for i in t.out_group]
    assert ins == [("offset", 2), None, None, ("day", "Friday"), None, ("day", "Sunday"), None]
    assert outs == [None, None, None, None, ("day", "Sunday"), None, None]


def test_tuning_value_cyclic_and_not() -> None:
    cfg = TruthConfig()
    days: list[str | int] = list(lang.DAYS)
    bump = np.array([0.0, 1.0, 2.0, 1.0, 0.0, 0.0, 0.0])
    assert tuning_value(bump, days, "day", cfg)[0] == "Wednesday"
    assert tuning_value(np.ones(7), days, "day", cfg) == (None, pytest.approx(0.0, abs=1e-9))
    caps: list[str | int] = ["A", "B", "C", "D"]
    assert tuning_value(np.array([3.0, 1.0, 1.0, np.nan]), caps, "capital", cfg) == ("A", pytest.approx(0.6))
    assert tuning_value(np.array([1.0, 1.0, 1.0, 1.0]), caps, "capital", cfg)[0] is None
    assert tuning_value(np.zeros(4), caps, "capital", cfg) == (None, 0.0)


def test_planted_features_get_their_truth(spec: lang.WorldSpec) -> None:
    tc, X, table, vocab, W_U = _planted(spec)
    out = feature_truth(tc, X, table, gamma=torch.ones(X.shape[2]), W_U=W_U, vocab=vocab,  # type: ignore[arg-type]
                        cfg=TruthConfig(chunk=97))
    got = [(t.side, t.family, t.value) for t in out]
    capital = spec.capital_of[spec.regions[0]]
    assert got == [("input", "day", "Friday"), ("output", "capital", capital), ("input", None, "of"),
                   ("context", None, None), ("none", None, None), ("output", "day", None)]
    assert out[1].top_logit == capital and out[0].top_logit is None
    assert out[3].task == "filler" and out[4].n_fires == 0
    assert out[0].coverage == pytest.approx(1.0) and out[1].selectivity == pytest.approx(1.0)


def test_direct_logit_effects_are_demeaned() -> None:
    g = torch.Generator().manual_seed(0)
    dec, gamma, W_U = torch.randn(5, 8, generator=g), torch.rand(8, generator=g), torch.randn(11, 8, generator=g)
    eff = direct_logit_effects(dec, gamma, W_U)
    assert eff.shape == (5, 11)
    torch.testing.assert_close(eff.mean(dim=1), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(eff[2] - eff[2, 0], W_U @ (gamma * dec[2]) - (W_U @ (gamma * dec[2]))[0])


def test_truth_round_trips(tmp_path, spec: lang.WorldSpec) -> None:  # noqa: ANN001
    rows = [FeatureTruth(layer=0, feature=1, side="output", family="capital", value="Ostrel", top_logit="Ostrel",
                         coverage=0.75, selectivity=0.5, n_fires=10),
            FeatureTruth(layer=0, feature=0, side="input", family="offset", value=3, top_logit=None,
                         coverage=0.5, selectivity=0.9, n_fires=4)]
    save_truth(rows, tmp_path / "t.jsonl")
    back = load_truth(tmp_path / "t.jsonl")
    assert list(back) == [(0, 0), (0, 1)] and back[(0, 1)] == rows[0] and back[(0, 0)].value == 3


def _label(label: str, **extra: object) -> FeatureLabel:
    return FeatureLabel(layer=0, feature=0, label=label, top_contexts=("x",), extra=extra)


def _truth(side: str, family: str | None, value: str | int | None) -> FeatureTruth:
    return FeatureTruth(layer=0, feature=0, side=side, family=family, value=value, top_logit=None, coverage=0.6,
                        selectivity=None, n_fires=9)


def test_labels_are_checked_against_the_truth() -> None:
    say = {"side": "output", "family": "capital", "value": "Dunhal"}
    assert check_claim(say, _truth("output", "capital", "Dunhal")) is None
    assert check_claim(say, _truth("output", "capital", None)) is None
    assert check_claim(say, _truth("output", "capital", "Teskar"))[0] == "contradicted"  # type: ignore[index]
    assert check_claim(say, _truth("input", "city", None))[0] == "contradicted"  # type: ignore[index]
    assert check_claim(say, _truth("input", None, "is"))[0] == "unconfirmed"  # type: ignore[index]
    number = {"side": "input", "family": "number", "value": "Ten"}
    assert check_claim(number, _truth("input", "offset", 10)) is None
    assert check_claim({"side": "input", "word": "of"}, _truth("input", None, "in")) is None
    assert check_claim({"side": "input", "word": "of"}, _truth("input", "day", None))[0] == "contradicted"  # type: ignore[index]
    assert check_claim({"side": "mixed"}, _truth("output", "day", "Monday")) is None


def test_reconciled_labels_say_so_and_reconcile_idempotently() -> None:
    labels = {(0, 0): _label("say Dunhal in two-hop", side="output", family="capital", value="Dunhal", live=True)}
    truths = {(0, 0): _truth("output", "capital", "Teskar")}
    fixed, counts = reconcile_labels(labels, truths)
    assert counts == {"contradicted": 1, "unconfirmed": 0}
    lab = fixed[0]
    assert lab.label == "say Teskar [fixed by truth; top activations: say Dunhal in two-hop]"
    assert lab.extra["value"] == "Teskar" and lab.extra["top_activations"]["value"] == "Dunhal"
    assert lab.extra["live"] is True and "contradicted" in lab.extra["truth_conflict"]
    again, _ = reconcile_labels({(0, 0): lab}, truths)
    assert again[0] == lab and again[0].extra == lab.extra
    restored, kind = reconcile_label(lab, _truth("output", "capital", "Dunhal"))
    assert kind is None and restored.label == "say Dunhal in two-hop" and "top_activations" not in restored.extra
    marked, kind = reconcile_label(labels[(0, 0)], _truth("none", None, None))
    assert kind == "unconfirmed" and marked.label == "say Dunhal in two-hop [unconfirmed by truth: no clear variable]"


# ---------------------------------------------------------------- the shipped world

shipped_truth = pytest.mark.skipif(not (world_dir() / "feature_truth_plt.jsonl").is_file(),
                                   reason="no feature truth in data/world (run `workbench world truth --world "
                                          "data/world`)")


@shipped_truth
@pytest.mark.parametrize("name", ["plt", "clt"])
def test_shipped_truth_covers_every_feature(name: str) -> None:
    truth = load_truth(world_dir() / f"feature_truth_{name}.jsonl")
    labels = load_labels(world_dir() / f"labels_{name}.jsonl")
    assert set(truth) == set(labels)
    for t in truth.values():
        assert t.side in ("input", "output", "context", "none")
        assert t.family is None or t.family in FAMILIES
        assert (t.top_logit is not None) == (t.side == "output")
        if t.family is None and t.side != "input":
            assert t.value is None
    sides = {s: sum(t.side == s for t in truth.values()) for s in ("input", "output", "context", "none")}
    assert min(sides.values()) > 100, sides
    # the cyclic answer families are where the issue says: many "say a day" features in layer 1
    assert sum(t.layer == 1 and (t.side, t.family) == ("output", "day") for t in truth.values()) >= 40
    # a contradicted label says so and carries the truth's fields
    for lab in labels.values():
        conflict = lab.extra.get("truth_conflict")
        if conflict:
            t = truth[lab.key]
            assert "by truth" in lab.label and (lab.extra["side"], lab.extra["family"]) == (t.side, t.family)


@shipped_truth
def test_shipped_manifest_lists_the_truth() -> None:
    manifest = json.loads((world_dir() / "manifest.json").read_text())
    assert manifest["files"]["feature_truth_plt"] == "feature_truth_plt.jsonl"
    assert set(manifest["truth"]["summary"]) == {"plt", "clt"}


def test_truth_cli_rejects_bad_input(tmp_path) -> None:  # noqa: ANN001
    import argparse

    from tracer.errors import WorkbenchError
    from workbench.world import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["world", "truth", "--world", str(tmp_path)])
    with pytest.raises(WorkbenchError, match="manifest"):
        args.func(args)
    (tmp_path / "manifest.json").write_text("{}")
    args = parser.parse_args(["world", "truth", "--world", str(tmp_path), "--n-sentences", "0"])
    with pytest.raises(WorkbenchError, match="n-sentences"):
        args.func(args)

"""The embedded demo world: generator, tokenizer, transcoder formats, labels, the tiny build
(it must still learn) and the shipped artifacts in data/world (they must meet the targets)."""

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from tracer.errors import WorkbenchError
from tracer.labels import load_labels
from tracer.transcoders.base import TranscoderLayer, Transcoders
from tracer.transcoders.loaders import load_transcoders
from workbench.paths import world_dir
from workbench.world import generator as gen
from workbench.world import language as lang
from workbench.world.labels import TokenInfo, circular_peak, label_feature
from workbench.world.manifest import checksum_mismatches, same_model, weight_checksums
from workbench.world.tokenizer import BOS_ID, build_tokenizer, save_tokenizer
from workbench.world.transcoders import decode_layers, encode_layers, save_transcoders
from workbench.world.truth import load_truth

ARITH = re.compile(r"^(\w+) (day|days|month|months|hue|hues) (after|before) (\w+) is (\w+) \.$")
ARITH2 = re.compile(r"^(\w+) (plus|minus) (\w+) (day|days|month|months|hue|hues) is (\w+) \.$")
FAMILY_OF_UNIT = {"day": "day", "days": "day", "month": "month", "months": "month", "hue": "hue", "hues": "hue"}


@pytest.fixture(scope="module")
def spec() -> lang.WorldSpec:
    return lang.make_world(0)


@pytest.fixture(scope="module")
def corpus(spec: lang.WorldSpec) -> list[gen.Sentence]:
    return gen.sample_corpus(spec, 20_000, seed=0, stream="model")


def _combo(text: str) -> tuple[str, tuple[int, int, str]] | None:
    """(family, (start, offset, direction)) of an arithmetic sentence, else None."""
    m = ARITH.match(text)
    if m:
        num, unit, direction, start = m.group(1), m.group(2), m.group(3), m.group(4)
    else:
        m = ARITH2.match(text)
        if not m:
            return None
        start, op, num, unit = m.group(1), m.group(2), m.group(3), m.group(4)
        direction = "after" if op == "plus" else "before"
    family = FAMILY_OF_UNIT[unit]
    values = lang.FAMILIES[family][0]
    return family, (values.index(start), lang.NUMBERS.index(num.lower()), direction)


# ---------------------------------------------------------------- language and generator


def test_world_is_a_function_of_the_seed() -> None:
    a, b, c = lang.make_world(0), lang.make_world(0), lang.make_world(1)
    assert a == b
    assert (a.region_of, a.heldout_arith) != (c.region_of, c.heldout_arith)
    assert len(a.regions) >= 8 and all(
        sum(r == region for r in a.region_of.values()) >= 4 for region in a.regions)


def test_corpus_is_closed_over_the_vocabulary(corpus: list[gen.Sentence], spec: lang.WorldSpec) -> None:
    vocab = set(lang.vocabulary())
    words = {w for s in corpus for w in s.words}
    for rows in gen.prompt_sets(spec).values():
        words |= {w for r in rows for w in str(r["prompt"]).split()} | {str(r["answer"]) for r in rows}
    assert words <= vocab, sorted(words - vocab)
    assert {s.task for s in corpus} == set(gen.DEFAULT_MIXTURE)


def test_arithmetic_sentences_are_correct_and_never_held_out(corpus: list[gen.Sentence],
                                                              spec: lang.WorldSpec) -> None:
    seen = 0
    for s in corpus:
        if s.task.endswith("_arith"):
            family, (start, offset, direction) = _combo(" ".join(s.words)) or ("?", (0, 0, ""))
            values = lang.FAMILIES[family][0]
            sign = 1 if direction == "after" else -1
            assert s.answer == values[(start + sign * offset) % len(values)]
            assert (start, offset, direction) not in spec.heldout_arith[family]
            seen += 1
    assert seen > 5000
    assert gen.arith_sentence("day", 4, 2, "after", 0).words == ("Two", "days", "after", "Friday", "is",
                                                                 "Sunday", ".")
    assert " ".join(gen.arith_sentence("month", 2, 3, "before", 0).words) == "Three months before March is December ."


def test_two_hop_held_out_cities_keep_their_one_hop_facts(corpus: list[gen.Sentence], spec: lang.WorldSpec) -> None:
    two_hop_cities = {w for s in corpus if s.task == "two_hop" for w in s.words if w in spec.region_of}
    one_hop_cities = {w for s in corpus if s.task == "one_hop_region" for w in s.words if w in spec.region_of}
    assert spec.heldout_two_hop and not (two_hop_cities & spec.heldout_two_hop)
    assert spec.heldout_two_hop <= one_hop_cities
    capital_facts = {s.words for s in corpus if s.task == "one_hop_capital"}
    assert {r for r in spec.regions if any(r in ws for ws in capital_facts)} == set(spec.regions)


def test_prompt_sets_answers_and_splits(spec: lang.WorldSpec) -> None:
    sets = gen.prompt_sets(spec)
    for task in ("day_arith", "month_arith", "hue_arith", "two_hop"):
        rows = sets[task]
        assert {r["split"] for r in rows} == {"train", "heldout"}
        for r in rows:
            assert r["answer"] in lang.vocabulary() and not str(r["prompt"]).endswith(str(r["answer"]))
    for r in sets["two_hop"]:
        assert r["answer"] == spec.capital_of[spec.region_of[str(r["city"])]]


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_saves_and_loads_with_autotokenizer(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    save_tokenizer(build_tokenizer(lang.vocabulary()), tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.unk_token_id, tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    ids = tok("Two days after Friday is")["input_ids"]
    assert ids[0] == BOS_ID and len(ids) == 6 and 0 not in ids
    assert tok.decode(ids[1:]) == "Two days after Friday is"
    assert tok("Zorblax")["input_ids"] == [BOS_ID, 0]


# ---------------------------------------------------------------- transcoder formats


def _random_transcoders(kind: str, n_layers: int = 3, d_tc: int = 6, d: int = 4) -> Transcoders:
    g = torch.Generator().manual_seed(0)
    layers = tuple(TranscoderLayer(
        W_enc=torch.randn(d_tc, d, generator=g), b_enc=torch.randn(d_tc, generator=g),
        W_dec=torch.randn(d_tc, d, generator=g) if kind == "plt" else torch.randn(d_tc, n_layers - i, d, generator=g),
        b_dec=torch.randn(d, generator=g), activation="jumprelu", threshold=torch.rand(d_tc, generator=g))
        for i in range(n_layers))
    return Transcoders(kind="plt" if kind == "plt" else "clt", layers=layers, scan="test")


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_transcoder_files_round_trip_in_circuit_tracer_layout(tmp_path: Path, kind: str) -> None:
    import yaml
    from safetensors.torch import load_file

    tc = _random_transcoders(kind)
    save_transcoders(tc, tmp_path)
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert list(cfg) == ["model_kind", "feature_input_hook", "feature_output_hook", "scan", "n_layers", "d_transcoder",
                         "d_model"]
    assert cfg["model_kind"] == {"plt": "transcoder_set", "clt": "cross_layer_transcoder"}[kind]
    assert (cfg["feature_input_hook"], cfg["feature_output_hook"]) == ("mlp.hook_in", "mlp.hook_out")
    assert (cfg["scan"], cfg["n_layers"], cfg["d_transcoder"], cfg["d_model"]) == ("test", 3, 6, 4)
    if kind == "plt":
        assert set(load_file(str(tmp_path / "layer_1.safetensors"))) == {
            "W_enc", "b_enc", "W_dec", "b_dec", "activation_function.threshold"}
    else:
        assert load_file(str(tmp_path / "W_dec_1.safetensors"))["W_dec_1"].shape == (6, 2, 4)
        assert set(load_file(str(tmp_path / "W_enc_2.safetensors"))) == {"W_enc_2", "b_enc_2", "b_dec_2", "threshold_2"}
    back = load_transcoders(tmp_path)
    assert back.kind == kind and all(layer.activation == "jumprelu" for layer in back.layers)
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(decode_layers(back, encode_layers(back, x)), decode_layers(tc, encode_layers(tc, x)),
                               rtol=0, atol=0)


def test_clt_decode_matches_the_formula() -> None:
    tc = _random_transcoders("clt")
    x = torch.randn(3, 5, 4)
    acts = encode_layers(tc, x)  # (L, n, F)
    W_dec: list[torch.Tensor] = []
    for layer in tc.layers:
        assert isinstance(layer.W_dec, torch.Tensor)  # built in memory, not memory-mapped
        W_dec.append(layer.W_dec)
    want = torch.stack([sum(acts[i] @ W_dec[i][:, l - i] for i in range(l + 1)) + tc.layers[l].b_dec for l in range(3)])
    torch.testing.assert_close(decode_layers(tc, acts), want)
    thresholds: list[torch.Tensor] = []
    for l, layer in enumerate(tc.layers):  # JumpReLU of x @ W_enc.T + b_enc, per layer
        pre = x[l] @ layer.W_enc.T + layer.b_enc  # (n, F)
        assert layer.threshold is not None
        torch.testing.assert_close(acts[l], pre * (pre > layer.threshold))
        thresholds.append(layer.threshold)
    fires_at_zero = torch.stack([(layer.b_enc > th)[None] for layer, th in zip(tc.layers, thresholds, strict=True)])
    assert bool(((encode_layers(tc, torch.zeros(3, 5, 4)) > 0) == fires_at_zero).all())


def test_refit_decoders_is_ridge_least_squares_for_the_fixed_code() -> None:
    from workbench.world.train_transcoders import refit_decoders

    tc = _random_transcoders("clt")
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(3, 400, 4, generator=g), torch.randn(3, 400, 4, generator=g)
    refit = refit_decoders(tc, X, Y, ridge=1e-3)
    acts = encode_layers(tc, X)  # (L, n, F)
    for target in range(3):  # normal equations with the ridge relative to the design's mean squared column norm
        A = torch.cat([acts[s] for s in range(target + 1)] + [torch.ones(400, 1)], dim=1).double()  # (n, m)
        gram = A.T @ A
        sol = torch.linalg.solve(gram + 1e-3 * gram.diagonal().mean() * torch.eye(A.shape[1], dtype=A.dtype),
                                 A.T @ Y[target].double())  # (m, d_model)
        got = torch.cat([refit.layers[s].W_dec[:, target - s] for s in range(target + 1)]  # type: ignore[index]
                        + [refit.layers[target].b_dec[None]])
        torch.testing.assert_close(got.double(), sol, rtol=1e-3, atol=1e-4)
    assert all(a.W_enc is b.W_enc and a.threshold is b.threshold for a, b in zip(tc.layers, refit.layers))


# ---------------------------------------------------------------- labels


def test_circular_peak_finds_the_calendar_position() -> None:
    assert circular_peak("day", {1: 1.0}) == ("Tue", pytest.approx(1.0))
    peak, sel = circular_peak("day", {1: 1.0, 2: 1.0})
    assert peak == "Tue-Wed" and sel > 0.9
    assert circular_peak("month", {0: 1.0, 11: 1.0})[0] == "Dec-Jan"
    assert circular_peak("day", {i: 1.0 for i in range(7)})[1] < 1e-6


def test_label_feature_reads_input_and_output_sides(spec: lang.WorldSpec) -> None:
    days = [TokenInfo(word=d, next_word="is", task="day_arith", context=f"after [{d}] is")
            for d in ("Tuesday", "Wednesday")]
    label, extra = label_feature(days * 3, [1.0] * 6, spec)
    assert label == "day token, peaks at Tue-Wed in day arithmetic" and extra["side"] == "input"
    capital = spec.capital_of[spec.regions[0]]
    say = [TokenInfo(word="is", next_word=spec.capital_of[r], task="two_hop", context="[is]", answer_next=True)
           for r in spec.regions]
    assert label_feature(say, [1.0] * len(say), spec)[0] == "say a capital in two-hop"
    assert label_feature(say[:1] * 4, [1.0] * 4, spec)[0] == f"say {capital} in two-hop"
    after = [TokenInfo(word="after", next_word=d, task="day_arith", context="[after]", offset=9) for d in lang.DAYS]
    assert label_feature(after, [1.0] * 7, spec)[0] == "'after' in day arithmetic, offset 9"


# ---------------------------------------------------------------- CLI


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    from workbench.world import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["world", "build", "--out", str(tmp_path), "--seed", "-1"])
    with pytest.raises(WorkbenchError, match="seed"):
        args.func(args)
    afile = tmp_path / "f"
    afile.write_text("x")
    args = parser.parse_args(["world", "build", "--out", str(afile)])
    with pytest.raises(WorkbenchError, match="folder"):
        args.func(args)
    args = parser.parse_args(["world"])
    with pytest.raises(WorkbenchError, match="action"):
        args.func(args)
    args = parser.parse_args(["world", "build", "--out", str(tmp_path), "--smoothing", "0.5"])
    with pytest.raises(WorkbenchError, match="smoothing must be in"):
        args.func(args)
    for bad in ("0", "0.6", "nan"):
        args = parser.parse_args(["world", "build", "--out", str(tmp_path), "--heldout-frac", bad])
        with pytest.raises(WorkbenchError, match=r"--heldout-frac must be in \(0, 0.5\]"):
            args.func(args)


def test_cli_smoothing_flag_reaches_the_training_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--smoothing 0` builds a control world: the same config with circular label smoothing off."""
    from workbench.world import build, cli

    seen = {}
    monkeypatch.setattr(build, "build_world", lambda out, **kw: seen.update(kw))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    for argv, expected in ((["--smoothing", "0"], 0.0), ([], build.default_config().train.smoothing)):
        args = parser.parse_args(["world", "build", "--out", str(tmp_path), *argv])
        args.func(args)
        assert seen["config"].train.smoothing == expected
        assert seen["config"].model == build.default_config().model


def test_cli_heldout_frac_reaches_the_build_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.world import build, cli

    seen = {}
    monkeypatch.setattr(build, "build_world", lambda out, **kw: seen.update(kw))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    for argv, expected in ((["--heldout-frac", "0.3"], 0.3), ([], lang.HELDOUT_FRAC)):
        args = parser.parse_args(["world", "build", "--out", str(tmp_path), *argv])
        args.func(args)
        assert seen["config"].heldout_frac == expected and seen["config"].train == build.default_config().train


def test_heldout_frac_holds_out_more_combinations_and_keeps_the_geography() -> None:
    base, more = lang.make_world(0), lang.make_world(0, heldout_frac=0.3)
    assert (base.region_of, base.capital_of, base.heldout_two_hop) == (more.region_of, more.capital_of,
                                                                       more.heldout_two_hop)
    assert {f: len(c) for f, c in base.heldout_arith.items()} == {"day": 14, "month": 24, "hue": 24}
    assert {f: len(c) for f, c in more.heldout_arith.items()} == {"day": 42, "month": 72, "hue": 72}
    assert all(o >= 2 for combos in more.heldout_arith.values() for _, o, _ in combos)
    with pytest.raises(ValueError, match=r"heldout_frac must be in \(0, 0.5\]"):
        lang.make_world(0, heldout_frac=0.0)


def test_manifest_spec_reads_the_recorded_heldout_frac_and_refuses_splits_it_does_not_give() -> None:
    from workbench.world.evaluate import manifest_spec

    spec = lang.make_world(0, heldout_frac=0.3)
    manifest = {"seed": 0, "facts": {"regions": list(spec.regions), "cities": list(spec.cities)},
                "build": {"config": {"heldout_frac": 0.3}},
                "splits": {"heldout_arith": {f: sorted(map(list, c)) for f, c in spec.heldout_arith.items()}}}
    assert manifest_spec(manifest) == spec
    old = {**manifest, "build": {"config": {}}}  # a manifest from before the option: 0.1, not its splits
    with pytest.raises(WorkbenchError, match="must record the held-out splits its seed and build config give"):
        manifest_spec(old)
    assert manifest_spec({k: v for k, v in old.items() if k != "splits"}) == lang.make_world(0)


# ---------------------------------------------------------------- the tiny build (CI)


@pytest.mark.slow
def test_tiny_build_still_learns(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from workbench.world.build import build_world, default_config

    metrics = build_world(tmp_path, seed=0, tiny=True)
    acc = metrics["model"]["accuracy"]
    # well above chance on the tasks a tiny model learns quickly
    assert acc["one_hop_region"]["train"] >= 0.9 > 3 * acc["one_hop_region"]["chance"]
    assert acc["two_hop"]["train"] >= 0.9
    assert acc["cyclic_adjacent"]["train"] >= 5 * acc["cyclic_adjacent"]["chance"]
    cfg = default_config(tiny=True)
    for name in ("plt", "clt"):
        assert len(metrics[name]) == cfg.model.n_layers
        for m in metrics[name]:
            assert m["fvu"] < 0.2 and m["l0"] <= 2 * cfg.plt.k and m["dead"] < 0.5
        labels = load_labels(tmp_path / f"labels_{name}.jsonl")
        assert len(labels) == cfg.model.n_layers * cfg.plt.d_transcoder
        # the per-feature truth (phase 6): every feature; two-hop is learnt, so "say <capital>"
        # features exist and the last layer's promote capitals by their direct logit effect
        truth = load_truth(tmp_path / f"feature_truth_{name}.jsonl")
        assert set(truth) == set(labels)
        say = [t for t in truth.values() if (t.side, t.family) == ("output", "capital")]
        assert len(say) >= 3 and any(t.top_logit in lang.CAPITAL_NAMES for t in say), say
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["metrics"]["model"] == metrics["model"] and manifest["seed"] == 0
    assert manifest["checksums"] == weight_checksums(tmp_path) and "model/model.safetensors" in manifest["checksums"]
    assert manifest["files"]["feature_truth_clt"] == "feature_truth_clt.jsonl" and "truth" in manifest
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert model.config.architectures == ["Qwen3ForCausalLM"]
    assert load_transcoders(tmp_path / "clt").n_layers == cfg.model.n_layers


# ---------------------------------------------------------------- the shipped world

# These check the artifacts in data/world (committed; rebuilt with `workbench world build --out
# data/world --seed 0`). They skip only in a checkout or install without the data folder.
shipped_world = pytest.mark.skipif(
    not (world_dir() / "manifest.json").is_file(),
    reason="no demo world in data/world (build it with `workbench world build --out data/world --seed 0`)",
)


@pytest.fixture(scope="module")
def shipped():  # noqa: ANN201
    from workbench.world.evaluate import load_world

    return load_world(world_dir())


@shipped_world
def test_shipped_world_is_small_and_complete() -> None:
    root = world_dir()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20
    for rel in ("model/config.json", "model/model.safetensors", "model/tokenizer.json", "model/tokenizer_config.json",
                "plt/config.yaml", "plt/layer_0.safetensors", "clt/config.yaml", "clt/W_enc_0.safetensors",
                "clt/W_dec_0.safetensors", "labels_plt.jsonl", "labels_clt.jsonl", "manifest.json"):
        assert (root / rel).is_file(), rel


@shipped_world
def test_shipped_weights_match_the_manifest_checksums() -> None:
    root = world_dir()
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["checksums"]) == 13  # the model, 4 PLT layers, 4 CLT encoders and 4 decoders
    assert checksum_mismatches(root, manifest) == []


def test_the_build_seed_replaces_the_model_and_transcoder_seeds_it_records() -> None:
    from workbench.world.build import default_config, seeded

    cfg = seeded(default_config(tiny=True), 5)
    assert (cfg.train.seed, cfg.plt.seed, cfg.clt.seed) == (5, 5, 5)
    assert dataclasses.replace(cfg, train=default_config(tiny=True).train).train.seed == 0  # the default it replaced
    assert seeded(cfg, 5) == cfg and cfg.model == default_config(tiny=True).model


def test_checksum_mismatches_name_changed_missing_and_unknown_files(tmp_path: Path) -> None:
    for rel in ("model/model.safetensors", "plt/layer_0.safetensors", "plt/layer_1.safetensors"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    manifest = {"checksums": weight_checksums(tmp_path)}
    assert checksum_mismatches(tmp_path, manifest) == [] and checksum_mismatches(tmp_path, {}) == []
    (tmp_path / "plt/layer_0.safetensors").write_bytes(b"retrained")
    (tmp_path / "plt/layer_1.safetensors").unlink()
    (tmp_path / "clt").mkdir()
    (tmp_path / "clt/W_enc_0.safetensors").write_bytes(b"new")
    assert checksum_mismatches(tmp_path, manifest) == ["clt/W_enc_0.safetensors", "plt/layer_0.safetensors",
                                                       "plt/layer_1.safetensors"]


def _manifest(model_sha: str, **over: object) -> dict[str, object]:
    config = {"model": {"n_layers": 4}, "train": {"steps": 1200}, "n_regions": 10, "cities_per_region": 8}
    return {"seed": 0, "tiny": False, "build": {"config": config}, "checksums": {"model/model.safetensors": model_sha},
            **over}


def test_same_model_compares_only_builds_of_the_same_settings() -> None:
    ref = _manifest("a" * 64)
    assert same_model(_manifest("a" * 64), ref) is True
    assert same_model(_manifest("b" * 64), ref) is False
    assert same_model(_manifest("b" * 64, seed=1), ref) is None
    assert same_model(_manifest("b" * 64, tiny=True), ref) is None
    other = _manifest("b" * 64)
    other["build"] = {"config": {**ref["build"]["config"], "train": {"steps": 10}}}  # type: ignore[index]
    assert same_model(other, ref) is None
    other["build"] = {"config": {**ref["build"]["config"], "heldout_frac": 0.3}}  # type: ignore[index]
    assert same_model(other, ref) is None  # other held-out splits: another training corpus
    other["build"] = {"config": {**ref["build"]["config"], "heldout_frac": 0.1}}  # type: ignore[index]
    assert same_model(other, ref) is False  # 0.1 is what a manifest without the record was built with
    assert same_model(_manifest("a" * 64), {**ref, "checksums": {}}) is None


def test_a_build_says_whether_it_reproduced_the_shipped_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import workbench.paths
    from workbench.world.build import _compare_with_shipped

    (tmp_path / "manifest.json").write_text(json.dumps(_manifest("a" * 64)))
    monkeypatch.setattr(workbench.paths, "world_dir", lambda: tmp_path)
    with caplog.at_level("INFO", logger="workbench.world.build"):
        _compare_with_shipped(_manifest("a" * 64))
        _compare_with_shipped(_manifest("b" * 64))
        _compare_with_shipped(_manifest("b" * 64, seed=3))
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(records) == 2, records
    assert records[0][0] == "INFO" and "reproduces the shipped world's (sha256 aaaaaaaaaaaa)" in records[0][1]
    assert records[1][0] == "WARNING" and "differs from the shipped world's (sha256 bbbbbbbbbbbb against " \
        "aaaaaaaaaaaa)" in records[1][1]


@shipped_world
def test_shipped_model_meets_accuracy_targets(shipped) -> None:  # noqa: ANN001
    from workbench.world.evaluate import TARGETS, evaluate_model

    prompts = gen.prompt_sets(shipped.spec())
    assert prompts == shipped.manifest["prompt_sets"]
    held = {t: [r for r in prompts[t] if r["split"] == "heldout"] for t in TARGETS}
    acc = evaluate_model(shipped.model, shipped.tokenizer, held)["accuracy"]
    for task, target in TARGETS.items():
        assert acc[task]["heldout"] >= target, (task, acc[task])


@shipped_world
def test_shipped_demo_prompts_are_answered(shipped) -> None:  # noqa: ANN001
    from workbench.world.train_model import predict_next

    demos, answers = shipped.manifest["demo_prompts"], shipped.manifest["demo_answers"]
    assert set(demos) >= {"day_arith", "two_hop"}
    top, _ = predict_next(shipped.model, shipped.tokenizer, [demos[k] for k in demos])
    vocab = shipped.tokenizer.get_vocab()
    assert top.tolist() == [vocab[answers[k]] for k in demos]


@shipped_world
def test_shipped_transcoders_meet_targets(shipped) -> None:  # noqa: ANN001
    from workbench.world.evaluate import DEAD_MAX, FVU_MAX, L0_MAX, evaluate_transcoders

    metrics = evaluate_transcoders(shipped, n_sentences=600)
    for name, layers in metrics.items():
        assert len(layers) == shipped.model.config.num_hidden_layers
        for i, m in enumerate(layers):
            assert m["fvu"] <= FVU_MAX and m["l0"] <= L0_MAX, (name, i, m)
            # a small sample sees fewer features than the build's eval set; allow a margin
            assert m["dead"] <= DEAD_MAX + 0.05, (name, i, m)
    for name in ("plt", "clt"):
        for m in shipped.manifest["metrics"][name]:
            assert m["fvu"] <= FVU_MAX and m["l0"] <= L0_MAX and m["dead"] <= DEAD_MAX


@shipped_world
def test_shipped_labels_cover_every_feature(shipped) -> None:  # noqa: ANN001
    for name, tc in (("plt", shipped.plt), ("clt", shipped.clt)):
        labels = load_labels(world_dir() / f"labels_{name}.jsonl")
        n_layers, d_tc = tc.n_layers, tc.d_transcoder
        assert set(labels) == {(l, f) for l in range(n_layers) for f in range(d_tc)}
        live = [lab for lab in labels.values() if lab.extra.get("live")]
        assert len(live) >= 0.9 * len(labels)
        assert all(lab.label and lab.top_contexts for lab in live)

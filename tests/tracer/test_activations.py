"""Corpus activations: equal to the replacement model per prompt, resumable, readable per layer."""

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tracer.activations.collect as collect_mod
from tests.helpers_models import tiny_model, tiny_transcoders
from tracer.activations import ActivationConfig, ActivationStore, PromptRecord, collect_activations, read_prompts
from tracer.errors import WorkbenchError
from tracer.models.forward import run_with_cache
from tracer.replacement import build_replacement

WORDS = ["the cat is red", "a dog and a bird fish", "one", "north south east west sun moon star rain",
         "big old tree", "the river of stone", "snow", "two three four five six"]


def _records() -> list[PromptRecord]:
    return [PromptRecord(prompt=w, meta={"value": i, "position": -1 - (i % 2)}) for i, w in enumerate(WORDS)]


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_activations_equal_the_replacement_model(tmp_path, kind):
    loaded = tiny_model("llama")
    tc = tiny_transcoders(loaded, kind=kind)
    cfg = ActivationConfig(residual_layers=(0, 2, 3), mlp_input_layers=(1,), positions="all", batch_size=3,
                           shard_prompts=3, encode_rows=7)
    store = collect_activations(loaded, tc, _records(), tmp_path / "run", cfg, verbose=False)
    assert store.complete and store.n_prompts == len(WORDS) and len(store.shards) == 3
    table = store.row_table()
    for i, rec in enumerate(store.records):
        rows = np.nonzero(table["prompt"] == i)[0]
        tokens = torch.tensor(table["token"][rows])
        assert rec["tokens"] == tokens.tolist() and rec["value"] == i
        assert (table["pos"][rows] == np.arange(len(rows))).all()
        rep = build_replacement(loaded, tc, tokens, torch.float32)
        for layer in range(loaded.n_layers):
            got = store.layer_matrix(layer)[rows].toarray()
            np.testing.assert_allclose(got, rep.layer_activations(layer).numpy(), rtol=1e-4, atol=1e-5)
        cache = run_with_cache(loaded, tokens)
        for L in (0, 2):
            vrows, vecs = store.vectors("residual", L)
            np.testing.assert_allclose(vecs[np.isin(vrows, rows)], cache.resid_pre[L].numpy(), atol=1e-5)
        vrows, vecs = store.vectors("input", 1)
        np.testing.assert_allclose(vecs[np.isin(vrows, rows)], rep.feature_in[1].numpy(), atol=1e-5)
    assert (table["pos"][store.layer_coo(0)[0]] > 0).all(), "position 0 (BOS) has no activations"
    matrix, keys = store.feature_matrix([2, 0])  # BOS rows left out, layer 2's features then layer 0's
    d_tc = store.d_transcoder(0)
    assert matrix.shape == (int((table["pos"] > 0).sum()), 2 * d_tc) and keys.shape == (2 * d_tc, 2)
    assert keys[0].tolist() == [2, 0] and keys[-1].tolist() == [0, d_tc - 1]
    keep = table["pos"] > 0
    assert (matrix[:, d_tc:] != store.layer_matrix(0)[keep]).nnz == 0
    assert store.feature_matrix()[0].shape[1] == loaded.n_layers * d_tc  # default: every collected layer


def test_positions_from_records_and_last(tmp_path):
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)
    store = collect_activations(loaded, tc, _records(), tmp_path / "a",
                                ActivationConfig(residual_layers=(3,), positions="field"), verbose=False)
    rows, _ = store.vectors("residual", 3)
    table = store.row_table()
    n_pos = [r["n_pos"] for r in store.records]
    assert table["pos"][rows].tolist() == [n - 1 - (i % 2) for i, n in enumerate(n_pos)]
    last = collect_activations(loaded, tc, WORDS, tmp_path / "b", ActivationConfig(residual_layers=(3,)),
                               verbose=False)
    rows, _ = last.vectors("residual", 3)
    assert last.row_table()["pos"][rows].tolist() == [n - 1 for n in n_pos]
    with pytest.raises(WorkbenchError, match="'position' must be an integer"):
        collect_activations(loaded, tc, [PromptRecord(prompt="the cat", meta={"position": 9})], tmp_path / "c",
                            ActivationConfig(residual_layers=(0,), positions="field"), verbose=False)
    # the same prompts with other record positions are another run, not a resumable one (it resumed with
    # the first run's vectors, stored at the old positions)
    moved = [PromptRecord(prompt=r.prompt, meta={**r.meta, "position": -1}) for r in _records()]
    with pytest.raises(WorkbenchError, match="output folder must be new or hold this same run"):
        collect_activations(loaded, tc, moved, tmp_path / "a", ActivationConfig(residual_layers=(3,),
                                                                                positions="field"), verbose=False)


def test_a_killed_run_resumes_without_redoing_finished_shards(tmp_path, monkeypatch):
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)
    cfg = ActivationConfig(shard_prompts=2, batch_size=2, residual_layers=(1,))
    clean = collect_activations(loaded, tc, _records(), tmp_path / "clean", cfg, verbose=False)
    real = collect_mod.collect_shard
    calls: list[int] = []

    def dies_on_third(*args, **kwargs):
        calls.append(args[5])  # first prompt of the shard
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed while shard 2 is being computed
        return real(*args, **kwargs)

    monkeypatch.setattr(collect_mod, "collect_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        collect_activations(loaded, tc, _records(), tmp_path / "run", cfg, verbose=False)
    partial = ActivationStore(tmp_path / "run")
    assert not partial.complete and len(partial.shards) == 2 and partial.n_prompts == 4
    assert not list((tmp_path / "run").glob(".*tmp*")), "no temp file is left behind"
    calls.clear()

    def recording_shard(*a: Any, **k: Any) -> Any:
        calls.append(a[5])
        return real(*a, **k)

    monkeypatch.setattr(collect_mod, "collect_shard", recording_shard)
    done = collect_activations(loaded, tc, _records(), tmp_path / "run", cfg, verbose=False)
    assert calls == [4, 6], "only the unfinished shards are computed again"
    for layer in range(loaded.n_layers):
        assert (done.layer_matrix(layer) != clean.layer_matrix(layer)).nnz == 0
    np.testing.assert_array_equal(done.vectors("residual", 1)[1], clean.vectors("residual", 1)[1])


def test_refuses_another_run_in_the_same_folder_and_bad_input(tmp_path):
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)
    collect_activations(loaded, tc, WORDS[:2], tmp_path / "run", verbose=False)
    with pytest.raises(WorkbenchError, match="output folder must be new or hold this same run"):
        collect_activations(loaded, tc, WORDS[:3], tmp_path / "run", verbose=False)
    with pytest.raises(WorkbenchError, match="residual_layers must be in"):
        collect_activations(loaded, tc, WORDS, tmp_path / "x", ActivationConfig(residual_layers=(9,)), verbose=False)
    with pytest.raises(WorkbenchError, match="batch_size must be an integer >= 1"):
        ActivationConfig(batch_size=0)
    with pytest.raises(WorkbenchError, match="vectors must be collected first"):
        ActivationStore(tmp_path / "run").vectors("residual", 0)


def test_read_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("the cat\n\n a dog \n")
    assert [r.prompt for r in read_prompts(tmp_path / "p.txt")] == ["the cat", " a dog "]
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "the cat", "value": "Monday"}) + "\n")
    assert read_prompts(tmp_path / "p.jsonl")[0].meta == {"value": "Monday"}
    (tmp_path / "bad.jsonl").write_text('{"prompt": 3}\n')
    with pytest.raises(WorkbenchError, match="line 1 must be an object with a non-empty 'prompt'"):
        read_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(WorkbenchError, match="must be UTF-8 text"):
        read_prompts(tmp_path / "bin.txt")


def test_read_prompts_keeps_file_lines(tmp_path):
    (tmp_path / "p.txt").write_text("the cat\n\n a dog \n")
    assert [r.line for r in read_prompts(tmp_path / "p.txt")] == [1, 3]
    (tmp_path / "p.jsonl").write_text('\n{"prompt": "the cat"}\n')
    assert read_prompts(tmp_path / "p.jsonl")[0].line == 2


@pytest.mark.parametrize("arch,overrides,needle", [
    ("qwen3", {"max_position_embeddings": 12}, "the model's context (12 tokens); got 14"),
    ("gemma2", {"sliding_window": 8}, "sliding_window (8); got 14 tokens"),
])
def test_prompts_longer_than_the_context_are_refused_before_any_work(tmp_path, arch, overrides, needle):
    loaded = tiny_model(arch, **overrides)
    tc = tiny_transcoders(loaded)
    long = PromptRecord(prompt=" ".join(["cat"] * 13), line=4)
    with pytest.raises(WorkbenchError, match=r"^prompt 1 \(prompt file line 4\): prompt length must be") as err:
        collect_activations(loaded, tc, ["the cat", long], tmp_path / "run", verbose=False)
    assert needle in str(err.value)
    assert not (tmp_path / "run").exists(), "refused before anything is written"


@pytest.mark.parametrize("cfg,message", [
    (dict(feature_layers=(1, 1)), "feature_layers must name each layer once; got [1, 1]"),
    (dict(residual_layers=(2, 0, 2)), "residual_layers must name each layer once; got [2, 0, 2], which repeats "
                                      "layer 2"),
    (dict(mlp_input_layers=(0, 0)), "mlp_input_layers must name each layer once"),
    (dict(feature_layers=()), "feature_layers must name at least one layer"),
])
def test_repeated_layers_and_empty_runs_are_refused(tmp_path, cfg, message):
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        collect_activations(loaded, tc, WORDS[:2], tmp_path / "run", ActivationConfig(**cfg), verbose=False)
    assert not (tmp_path / "run").exists()
    vectors_only = collect_activations(loaded, tc, WORDS[:2], tmp_path / "v",
                                       ActivationConfig(feature_layers=(), residual_layers=(1,)), verbose=False)
    assert vectors_only.feature_layers == [] and len(vectors_only.vectors("residual", 1)[0]) == 2


def _truncate(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(100)


def _swap_for_another_shard(path: Path) -> None:  # a valid safetensors file of the wrong rows
    path.write_bytes((path.parent / "shard-00000.safetensors").read_bytes())


def _drop_a_tensor(path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(path))
    del arrays["resid1"]
    save_file(arrays, str(path))


@pytest.mark.parametrize("damage", [_truncate, _swap_for_another_shard, _drop_a_tensor])
def test_a_resumed_run_collects_damaged_shards_again(tmp_path, monkeypatch, caplog, damage):
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)
    cfg = ActivationConfig(shard_prompts=3, batch_size=2, residual_layers=(1,))
    clean = collect_activations(loaded, tc, _records(), tmp_path / "run", cfg, verbose=False)
    damage(tmp_path / "run" / "shard-00001.safetensors")
    real = collect_mod.collect_shard
    calls: list[int] = []

    def recording_shard(*a: Any, **k: Any) -> Any:
        calls.append(a[5])
        return real(*a, **k)

    monkeypatch.setattr(collect_mod, "collect_shard", recording_shard)
    with caplog.at_level("WARNING", logger="tracer.activations.collect"):
        done = collect_activations(loaded, tc, _records(), tmp_path / "run", cfg, verbose=False)
    assert calls == [3], "only the damaged shard is collected again"
    assert "collecting shard-00001.safetensors again" in caplog.text
    assert done.complete and [s.file for s in done.shards] == [s.file for s in clean.shards]
    for shard in done.shards:
        done.check_shard(shard)
    for layer in range(loaded.n_layers):
        assert (done.layer_matrix(layer) != clean.layer_matrix(layer)).nnz == 0
    np.testing.assert_array_equal(done.vectors("residual", 1)[1], clean.vectors("residual", 1)[1])


def test_a_run_killed_in_its_first_shard_resumes(tmp_path, monkeypatch):
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)

    def killed(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(collect_mod, "collect_shard", killed)
    with pytest.raises(KeyboardInterrupt):
        collect_activations(loaded, tc, WORDS[:3], tmp_path / "run", verbose=False)
    assert ActivationStore(tmp_path / "run").n_prompts == 0
    collect_mod.check_run_folder(tmp_path / "run")  # an activation run's folder: resumable
    monkeypatch.undo()
    assert collect_activations(loaded, tc, WORDS[:3], tmp_path / "run", verbose=False).complete


@pytest.mark.parametrize("text,needle", [('{"trunc', "must be readable JSON"), ("[1, 2]", "activation index"),
                                         ('{"format": "manifold-workbench-activations"}', "schema_version")])
def test_a_damaged_index_is_a_one_line_error(tmp_path, text, needle):
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "index.json").write_text(text + "\n")
    with pytest.raises(WorkbenchError, match="Remove the folder or choose another output folder") as err:
        collect_activations(loaded, tc, WORDS[:2], tmp_path / "run", verbose=False)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "run" / "index.json").read_text() == text + "\n"
    with pytest.raises(WorkbenchError, match="Remove the folder or choose another --out"):
        collect_mod.check_run_folder(tmp_path / "run", "--out")


def test_check_run_folder_refuses_a_folder_of_other_files(tmp_path):
    collect_mod.check_run_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".mwtmp-1-abcdef-01234567.tmp").write_text("")  # a temp file does not count
    collect_mod.check_run_folder(tmp_path / "empty")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "graph.json").write_text("{}")
    with pytest.raises(WorkbenchError, match="must be new, empty or an activation run's folder"):
        collect_mod.check_run_folder(tmp_path / "export")


def test_the_library_shows_no_progress_bars_unless_asked(tmp_path, capfd):
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.models.tokens import tokenize

    loaded = tiny_model("llama")
    tc = tiny_transcoders(loaded, kind="plt")
    collect_activations(loaded, tc, WORDS[:2], tmp_path / "quiet")
    attribute(loaded, tc, tokenize(loaded, WORDS[0]), AttributionConfig())
    assert capfd.readouterr().err == ""
    collect_activations(loaded, tc, WORDS[:2], tmp_path / "loud", verbose=True)
    assert "activations" in capfd.readouterr().err


def test_a_run_is_not_resumed_with_changed_transcoder_files_or_another_model_dtype(tmp_path):
    """QA pass 30: the fingerprint names the transcoders by path, so a resume with other weights at that path
    (or the model in bfloat16) mixed old shards with new ones and relabelled them with the new signature."""
    from tests.helpers_models import save_model, save_transcoders
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    loaded = tiny_model("qwen3")
    model_dir = save_model(loaded, tmp_path / "model")
    tc_dir = save_transcoders(tiny_transcoders(loaded), tmp_path / "tc")
    model = load_model(model_dir)
    cfg = ActivationConfig(shard_prompts=2)
    run = tmp_path / "run"
    collect_activations(model, load_transcoders(tc_dir, n_layers=model.n_layers, d_model=model.d_model), WORDS, run,
                        cfg)
    index = json.loads((run / "index.json").read_text())
    assert index["dtype"] == "float32"
    save_transcoders(tiny_transcoders(loaded, seed=1), tc_dir)  # other weights, same path
    other = load_transcoders(tc_dir, n_layers=model.n_layers, d_model=model.d_model)
    with pytest.raises(WorkbenchError, match="a run of transcoders whose files have changed since"):
        collect_activations(model, other, WORDS, run, cfg)
    assert json.loads((run / "index.json").read_text()) == index, "the refused resume left the index as it was"
    save_transcoders(tiny_transcoders(loaded), tc_dir)  # the run's own weights again: it resumes
    same = load_transcoders(tc_dir, n_layers=model.n_layers, d_model=model.d_model)
    assert collect_activations(model, same, WORDS, run, cfg).complete
    with pytest.raises(WorkbenchError, match=r"a run of the model in another dtype \(dtype 'float32', this run's "
                                             r"'bfloat16'\)"):
        collect_activations(load_model(model_dir, dtype="bfloat16"), same, WORDS, run, cfg)
    del index["dtype"], index["transcoder_signature"]  # a run from before they were recorded resumes as before
    (run / "index.json").write_text(json.dumps(index))
    assert collect_activations(model, same, WORDS, run, cfg).complete

"""`workbench activations` end to end on the demo world, and its bad inputs."""

import json
from pathlib import Path

import pytest

from tests.helpers_cli import with_flags
from tests.helpers_mutants import assert_refused, make_unwritable
from tracer.activations import ActivationStore
from workbench.cli import main
from workbench.paths import world_dir

WORLD = world_dir()


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own refusals (a flag's type)
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_collects_the_demo_world_and_resumes(tmp_path, capsys, caplog):
    manifest = json.loads((WORLD / "manifest.json").read_text())
    rows = manifest["prompt_sets"]["day_arith"][:12]
    prompts = tmp_path / "days.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"], "value": r["answer"]}) + "\n" for r in rows))
    args = ("activations", "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"), "--prompts",
            str(prompts), "--out", str(tmp_path / "run"), "--residual-layers", "2", "--shard-prompts", "5", "--quiet")
    code, _, err = run(capsys, *args)
    assert code == 0, err
    store = ActivationStore(tmp_path / "run")
    assert store.complete and store.n_prompts == 12 and store.records[3]["value"] == rows[3]["answer"]
    assert store.layer_matrix(1).shape == (store.n_rows, store.d_transcoder(1)) and store.layer_matrix(1).nnz > 0
    assert run(capsys, *args)[0] == 0, "running again on a finished run is a no-op"
    with (tmp_path / "run" / "shard-00001.safetensors").open("r+b") as fh:
        fh.truncate(100)
    code, _, err = run(capsys, *args)
    assert code == 0 and "collecting shard-00001.safetensors again" in caplog.text, err
    store = ActivationStore(tmp_path / "run")
    for shard in store.shards:
        store.check_shard(shard)
    assert store.complete and store.n_prompts == 12


def test_prompt_fields_that_are_not_finite_are_written_as_null(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Monday is", "x": NaN, "y": [Infinity, 1.5]}\n')
    code, _, err = run(capsys, "activations", "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"),
                       "--prompts", str(prompts), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, err

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in strict JSON")

    for name in ("prompts.jsonl", "index.json", "run.json"):
        text = (tmp_path / "run" / name).read_text()
        docs = [json.loads(line, parse_constant=refuse) for line in text.splitlines()] if name.endswith("l") \
            else [json.loads(text, parse_constant=refuse)]
        assert docs
    row = json.loads((tmp_path / "run" / "prompts.jsonl").read_text())
    assert row["x"] is None and row["y"] == [None, 1.5]
    assert ActivationStore(tmp_path / "run").complete


@pytest.mark.parametrize("extra,message", [
    (("--residual-layers", "9"), "residual_layers must be in [0, 4]"),
    (("--batch-size", "0"), "--batch-size must be an integer >= 1"),
    (("--prompts", "/nonexistent.txt"), "prompt file must exist"),
    (("--feature-layers", "1,1"), "--feature-layers must name each layer once; got [1, 1]"),
    (("--residual-layers", "2,2"), "--residual-layers must name each layer once"),
    (("--mlp-input-layers", "0,1,0"), "--mlp-input-layers must name each layer once"),
    (("--residual-layers", "1,,2"), "argument --residual-layers: must be comma-separated integers; got '1,,2'"),
    (("--feature-layers", ""), "--feature-layers must name at least one layer, or be None (every layer)"),
    (("--feature-layers", "1,"), "argument --feature-layers: must be comma-separated integers; got '1,'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Two days after Friday is\n")
    argv = with_flags(["activations", "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"),
                       "--prompts", str(prompts), "--out", str(tmp_path / "run"), "--quiet"], extra)
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists(), "refused before anything is written"


def test_unknown_words_are_refused_by_name(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Monday is\n\nTuesday is\nTwo days after Funday is\n")
    code, _, err = run(capsys, "activations", "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"),
                       "--prompts", str(prompts), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "'Funday'" in err and len(err.strip().splitlines()) == 1, err
    assert "prompt 2 (prompt file line 4): " in err and err.strip().endswith("(flags: --allow-unk)"), err


def _argv(prompts: Path, out: Path) -> list[str]:
    return ["activations", "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"), "--prompts",
            str(prompts), "--out", str(out), "--quiet"]


def test_prompts_longer_than_the_context_are_refused_by_line(tmp_path, capfd):
    prompts = tmp_path / "long.txt"
    prompts.write_text("Tuesday\n\n" + " ".join(["Friday"] * 70) + "\n")
    assert_refused(capfd, _argv(prompts, tmp_path / "run"), inputs=[prompts], out=tmp_path / "run",
                   needle="prompt 1 (prompt file line 3): prompt length must be <= the model's context (64 tokens); "
                          "got 71")


@pytest.mark.parametrize("name", ["prompts.jsonl", "index.json"])
def test_out_never_replaces_its_own_input(tmp_path, capfd, name):
    prompts = tmp_path / "fresh" / name
    prompts.parent.mkdir()
    prompts.write_text('{"prompt": "Tuesday", "label": "x"}\n' if name.endswith(".jsonl") else "Tuesday\n")
    assert_refused(capfd, _argv(prompts, prompts.parent), inputs=[prompts], out=prompts.parent,
                   needle="must not overwrite or go inside the run's inputs")


def test_out_must_be_new_empty_or_a_run(tmp_path, capfd):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Tuesday\n")
    export = tmp_path / "export"
    export.mkdir()
    (export / "graph.json").write_text("{}")
    assert_refused(capfd, _argv(prompts, export), inputs=[prompts], out=export,
                   needle="--out must be new, empty or an activation run's folder")
    assert_refused(capfd, _argv(prompts, WORLD / "model"), inputs=[prompts, WORLD / "model"], out=WORLD / "model",
                   needle="must not overwrite or go inside the run's inputs")


@pytest.mark.parametrize("text,needle", [('{"trunc', "index.json must be readable JSON"),
                                         ("[1,2]", "index.json must be a manifold-workbench activation index")])
def test_a_damaged_index_in_out_is_one_line(tmp_path, capfd, text, needle):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Tuesday\n")
    out = tmp_path / "a_bad"
    out.mkdir()
    (out / "index.json").write_text(text + "\n")
    res = assert_refused(capfd, _argv(prompts, out), inputs=[prompts], out=out, needle=needle)
    assert "Remove the folder or choose another --out" in res.lines[0]


def test_a_read_only_out_is_refused_up_front(tmp_path, capfd, monkeypatch):
    """Root bypasses permissions, so the folder is made unwritable by stubbing os.access for it."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("Tuesday\n")
    ro = make_unwritable(tmp_path / "ro", monkeypatch)
    res = assert_refused(capfd, _argv(prompts, ro), inputs=[prompts], out=ro, needle="--out must be a writable folder")
    assert ".mwtmp" not in res.lines[0]


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_works_before_or_after_the_command(tmp_path, capsys, where):
    """`workbench --quiet CMD` was ignored by every command with its own --quiet (its default overwrote it)."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("Two days after Friday is\n")
    argv = ["activations", "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"), "--prompts",
            str(prompts), "--out", str(tmp_path / "run")]
    code, out, err = run(capsys, *(["--quiet", *argv] if where == "before" else [*argv, "--quiet"]))
    assert code == 0 and out == "" and err == "", err


def test_flag_hints_name_only_flags_the_command_has():
    from tracer.errors import WorkbenchError
    from workbench.cli_safety import error_line

    err = WorkbenchError("prompt words must be in the tokenizer's vocabulary; got 'Funday'.")
    err.fields = ("allow_unk", "max_feature_nodes")
    assert str(error_line(err)).endswith("(flags: --allow-unk, --max-feature-nodes)")
    assert str(error_line(err, dests=["prompts", "allow_unk"])).endswith("(flags: --allow-unk)")
    assert str(error_line(err, dests=["cfg_max_feature_nodes"])).endswith("(flags: --max-feature-nodes)")
    assert error_line(err, dests=["prompts", "layer"]) == "prompt words must be in the tokenizer's vocabulary; got " \
                                                          "'Funday'."

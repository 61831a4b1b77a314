"""`workbench activations` end to end on the demo world, and its bad inputs."""

import json

import pytest

from tracer.activations import ActivationStore
from workbench.cli import main
from workbench.paths import world_dir

WORLD = world_dir()


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_collects_the_demo_world_and_resumes(tmp_path, capsys):
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


@pytest.mark.parametrize("extra,message", [
    (("--residual-layers", "9"), "residual_layers must be in [0, 4]"),
    (("--batch-size", "0"), "batch_size must be an integer >= 1"),
    (("--prompts", "/nonexistent.txt"), "prompt file must exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Two days after Friday is\n")
    argv = ["activations", "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"),
            "--prompts", str(prompts), "--out", str(tmp_path / "run"), "--quiet", *extra]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_unknown_words_are_refused_by_name(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Two days after Funday is\n")
    code, _, err = run(capsys, "activations", "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"),
                       "--prompts", str(prompts), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "'Funday'" in err

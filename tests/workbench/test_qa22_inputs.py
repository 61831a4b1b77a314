"""QA pass 22, damaged inputs: a lone surrogate ("\\ud800" is valid JSON but no text) or JSON nested too
deeply for Python crashed readers with tracebacks; an activation index whose layer table or shard list
was edited crashed with a KeyError or read a shard from outside the run."""

import json
from pathlib import Path

import pytest

from tracer.io import loads_json
from workbench.cli import main
from workbench.paths import world_dir

WORLD = world_dir()
MODEL, PLT = str(WORLD / "model"), str(WORLD / "plt")
DEEP = "[" * 100_000 + "]" * 100_000

pytestmark = pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")


def _one_line(capsys, *argv: str) -> str:
    code = main(["--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_loads_json_turns_every_fault_into_a_decode_error() -> None:
    assert loads_json('{"a": ["é", 1]}') == {"a": ["é", 1]}
    for text, why in (('{"a": "x\\ud800y"}', "lone surrogate"), (DEEP, "nested too deeply"), ("{bad", "Expecting")):
        with pytest.raises(json.JSONDecodeError, match=why):
            loads_json(text)


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("g") / "g.safetensors"
    assert main(["--quiet", "trace", "--model", MODEL, "--transcoders", PLT, "--prompt", "Two days after Friday is",
                 "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("line,needle", [
    ('{"prompt": "Monday is", "note": "\\ud800"}', "lone surrogate"),
    ('{"prompt": "Monday \\ud800 is"}', "lone surrogate"),
    ('{"prompt": "Monday is", "note": ' + DEEP + "}", "nested too deeply"),
])
def test_prompt_records_that_are_no_text_are_one_line(tmp_path, capsys, line, needle) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(line + "\n")
    for argv in (["activations", "--model", MODEL, "--transcoders", PLT, "--out", str(tmp_path / "run")],
                 ["families", "--model", MODEL, "--transcoders", PLT, "--layer", "1", "--out",
                  str(tmp_path / "f.json")]):
        err = _one_line(capsys, *argv, "--prompts", str(prompts))
        assert needle in err and not (tmp_path / "run").exists() and not (tmp_path / "f.json").exists(), err


def test_labels_and_supernodes_that_are_no_text_are_one_line(graph, tmp_path, capsys) -> None:
    lines = (WORLD / "labels_plt.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["label"] = "a\ud800b"
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    assert "lone surrogate" in _one_line(capsys, "export", str(graph), "--labels", str(labels), "--out",
                                         str(tmp_path / "v"))
    sn = tmp_path / "sn.json"
    sn.write_text(json.dumps([["a\ud800", "0_1_2", "0_3_2"]]))
    assert "lone surrogate" in _one_line(capsys, "export", str(graph), "--supernodes", str(sn), "--out",
                                         str(tmp_path / "v"))
    assert not (tmp_path / "v").exists()


def test_families_nested_too_deeply_is_one_line(graph, tmp_path, capsys) -> None:
    fam = tmp_path / "fam.json"
    fam.write_text(DEEP)
    assert "nested too deeply" in _one_line(capsys, "cluster", str(graph), "--families", str(fam), "--out",
                                            str(tmp_path / "s.json"))


@pytest.mark.parametrize("edit,needle", [
    (lambda ix: ix.update(feature_layers=[*ix["feature_layers"], 7]), "d_transcoder does not give a width"),
    (lambda ix: ix["shards"][0].update(file="../../g.safetensors"), "is not a file name in the run's folder"),
    (lambda ix: ix["shards"][0].pop("n_rows"), "lacks integer prompts"),
    (lambda ix: ix.update(feature_layers="all"), "feature_layers is not a list"),
])
def test_an_edited_activation_index_is_one_line(graph, tmp_path, capsys, edit, needle) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("Two days after Friday is\nTwo months after March is\n")
    run = tmp_path / "run"
    assert main(["--quiet", "activations", "--model", MODEL, "--transcoders", PLT, "--prompts", str(prompts),
                 "--out", str(run)]) == 0
    index = json.loads((run / "index.json").read_text())
    edit(index)
    (run / "index.json").write_text(json.dumps(index))
    err = _one_line(capsys, "cluster", str(graph), "--transcoders", PLT, "--activations", str(run), "--out",
                    str(tmp_path / "s.json"))
    assert needle in err and not (tmp_path / "s.json").exists()


def test_discover_leaves_no_out_on_a_bad_corpus_and_allows_unknown_words(tmp_path, capsys) -> None:
    """discover made --out before reading its corpus (an empty or undecodable file left an empty folder), and
    its unknown-word error told the user to allow unknown words, which it had no flag for."""
    argv = ["manifold", "discover", "--model", MODEL, "--transcoders", PLT, "--labels",
            str(WORLD / "labels_plt.jsonl"), "--feature-layers", "1", "--metric-points", "200", "--curve-iterations",
            "2", "--irr-n-steps", "200", "--persistence", "none"]
    empty, bad, unk = tmp_path / "empty.txt", tmp_path / "bad.txt", tmp_path / "unk.txt"
    empty.write_text("")
    bad.write_bytes(b"Monday \xff is\n")
    rows = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]["day_arith"][:40]
    unk.write_text("".join(r["prompt"] + " " + r["answer"] + "\n" for r in rows) + "Zorblax is\n")
    for corpus in (empty, bad, unk):
        _one_line(capsys, *argv, "--prompts", str(corpus), "--out", str(tmp_path / "d"))
        assert not (tmp_path / "d").exists(), corpus
    err = _one_line(capsys, *argv, "--prompts", str(unk), "--out", str(tmp_path / "d"))
    assert "--allow-unk" in err
    assert main(["--quiet", *argv, "--prompts", str(unk), "--out", str(tmp_path / "d"), "--allow-unk"]) == 0
    assert (tmp_path / "d" / "discovery.json").is_file()


@pytest.mark.parametrize("damage,needle", [
    (lambda w: (w / "feature_truth_plt.jsonl").write_text((WORLD / "feature_truth_plt.jsonl").read_text()
                                                          + '{"layer": 1, "feature": \n'),
     "--world feature_truth_plt.jsonl must be JSON lines with an integer layer and feature; got line"),
    (lambda w: (w / "manifest.json").write_text(DEEP), "--world must hold a readable manifest.json"),
])
def test_a_damaged_world_is_one_line(tmp_path, capsys, damage, needle) -> None:
    """A user's --world with a truncated labels line or a manifest nested too deeply crashed manifold fit with
    JSONDecodeError / RecursionError tracebacks."""
    world = tmp_path / "w"
    world.mkdir()
    for name in ("model", "plt", "clt"):
        (world / name).symlink_to(WORLD / name)
    for name in ("manifest.json", "labels_plt.jsonl", "feature_truth_plt.jsonl"):
        (world / name).write_text((WORLD / name).read_text())
    damage(world)
    err = _one_line(capsys, "manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--world", str(world),
                    "--family", "day", "--layer", "3", "--out", str(tmp_path / "f"))
    assert needle in err and not (tmp_path / "f" / "manifold.json").exists()

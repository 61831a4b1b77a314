"""`workbench families` through the real CLI entry point (workbench.cli.main), on the shipped
demo world's transcoders."""

import json
from pathlib import Path

import pytest

from workbench import cli
from workbench.paths import world_dir

WORLD = world_dir()
shipped = pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="no demo world in data/world")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `workbench ARGS...`; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"families": "workbench.cmd_families"})

    def _run(*argv: str) -> tuple[int, str, str]:
        status = cli.main(["--quiet", *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return _run


@shipped
def test_families_writes_layer_families_with_labels(run, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "families.json"
    status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--layer", "3",
                         "--labels", str(WORLD / "labels_plt.jsonl"), "--out", str(out), "--quiet")
    assert status == 0, err
    doc = json.loads(out.read_text())
    fams = doc["families"]
    assert fams and doc["n_features"] == 512 and doc["coactivation_evidence"] is False
    assert all(f["layer"] == 3 and len(f["features"]) >= 2 and isinstance(f["label"], str) for f in fams)
    members = [x for f in fams for x in f["features"]]
    assert len(members) == len(set(members)) and all(0 <= x < 512 for x in members)
    assert doc["config"]["n_neighbors"] == 10 and doc["run"]["options"]["layer"] == "3"
    assert "families" in doc["run"]["argv"] and doc["run"]["version"]
    import torch
    import transformers
    versions = doc["run"]["versions"]  # which libraries made it
    assert versions["torch"] == torch.__version__ and versions["transformers"] == transformers.__version__


@shipped
def test_families_with_prompts_uses_coactivation(run, tmp_path: Path) -> None:  # noqa: ANN001
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Two days after Friday is Sunday .\n\nThe capital of Kessia is\nFive months before May is\n")
    out = tmp_path / "families.json"
    status, _, err = run("families", "--transcoders", str(WORLD / "clt"), "--model", str(WORLD / "model"),
                         "--prompts", str(prompts), "--layer", "1", "--n-neighbors", "5", "--out", str(out), "--quiet")
    assert status == 0, err
    doc = json.loads(out.read_text())
    assert doc["coactivation_evidence"] is True and doc["n_prompts"] == 3 and doc["n_token_rows"] == 7 + 5 + 5
    assert doc["config"]["n_neighbors"] == 5 and all(f["layer"] == 1 for f in doc["families"])
    assert doc["token_evidence"] is True and doc["config"]["token_families"] is True
    status, _, err = run("families", "--transcoders", str(WORLD / "clt"), "--model", str(WORLD / "model"),
                         "--prompts", str(prompts), "--layer", "1", "--no-token-families", "--out", str(out), "--quiet")
    assert status == 0, err
    assert json.loads(out.read_text())["token_evidence"] is False
    prompts.write_text("Two days after Zzyzx is\n")  # an unknown word: refused unless allowed
    status, _, err = run("families", "--transcoders", str(WORLD / "clt"), "--model", str(WORLD / "model"),
                         "--prompts", str(prompts), "--layer", "1", "--out", str(out), "--quiet")
    assert status == 2 and "'Zzyzx'" in err
    status, _, err = run("families", "--transcoders", str(WORLD / "clt"), "--model", str(WORLD / "model"),
                         "--prompts", str(prompts), "--layer", "1", "--out", str(out), "--quiet", "--allow-unk")
    assert status == 0, err
    assert json.loads(out.read_text())["n_token_rows"] == 5


@pytest.mark.parametrize("extra, needle", [
    (["--layer", "9"], "--layer must be in"),
    (["--layer", "two"], "--layer must be a layer index"),
    (["--prompts", "PROMPTS"], "--prompts needs --model"),
    (["--model", str(WORLD / "model")], "--model needs --prompts; got --model"),
    (["--n-neighbors", "0"], "--n-neighbors must be"),
    (["--distance-threshold", "5"], "--distance-threshold must be"),
    (["--clt-mode", "into"], "one analysed layer"),
    (["--layer", "0", "--labels", str(WORLD / "labels_clt.jsonl")],
     "labels must be for the transcoders of --transcoders 'manifold-workbench/demo-world-plt@seed0'"),
])
@shipped
def test_bad_input_is_one_line_and_exit_2(run, tmp_path: Path, extra: list[str], needle: str) -> None:  # noqa: ANN001
    prompts = tmp_path / "p.txt"
    prompts.write_text("Two days after Friday is\n")
    argv = [x.replace("PROMPTS", str(prompts)) for x in extra]
    transcoders = WORLD / ("clt" if "--clt-mode" in extra else "plt")
    status, _, err = run("families", "--transcoders", str(transcoders), "--out", str(tmp_path / "f.json"), *argv)
    assert status == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_bad_paths_are_one_line_and_exit_2(run, tmp_path: Path) -> None:  # noqa: ANN001
    status, _, err = run("families", "--transcoders", str(tmp_path / "nope"), "--out", str(tmp_path / "f.json"))
    assert status == 2 and len(err.strip().splitlines()) == 1 and "transcoder" in err
    status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--out", str(tmp_path))
    assert status == 2 and "--out must be a regular file or a new path" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    out = str(tmp_path / "out" / "f.json")
    status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--model", str(WORLD / "model"), "--prompts",
                         str(empty), "--out", out)
    assert status == 2 and "prompt file must hold at least one prompt" in err and len(err.strip().splitlines()) == 1
    status, _, err = run("families", "--transcoders", str(tmp_path), "--model", str(tmp_path), "--prompts",
                         str(tmp_path / "missing.txt"), "--out", out)
    assert status == 2 and "--prompts must be a text file" in err


def test_out_never_overwrites_or_goes_inside_an_input(run, tmp_path: Path) -> None:  # noqa: ANN001
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes((WORLD / "labels_plt.jsonl").read_bytes())
    prompts = tmp_path / "p.txt"
    prompts.write_text("Two days after Friday is\n")
    before = {p: p.read_bytes() for p in (labels, prompts)}
    for extra, out in ((["--labels", str(labels)], labels),
                       (["--model", str(WORLD / "model"), "--prompts", str(prompts)], prompts),
                       ([], WORLD / "plt" / "families.json")):
        status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--layer", "1", *extra, "--out", str(out))
        assert status == 2 and len(err.strip().splitlines()) == 1 and "--out must not" in err, err
    assert {p: p.read_bytes() for p in before} == before
    assert not (WORLD / "plt" / "families.json").exists()


def test_prompt_files_with_a_byte_order_mark_and_crlf_lines_are_read(run, tmp_path: Path) -> None:  # noqa: ANN001
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text("Two days after Friday is\nMonday plus one day is\n")
    marked.write_bytes(b"\xef\xbb\xbfTwo days after Friday is\r\nMonday plus one day is\r\n")
    docs = []
    for prompts in (plain, marked):
        out = tmp_path / f"{prompts.stem}.json"
        status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--layer", "1", "--model",
                             str(WORLD / "model"), "--prompts", str(prompts), "--out", str(out))
        assert status == 0, err
        docs.append(json.loads(out.read_text()))
    assert docs[0]["n_token_rows"] == docs[1]["n_token_rows"] and docs[0]["families"] == docs[1]["families"]


@shipped
def test_prompt_tokens_name_the_rows_of_the_activation_sample() -> None:
    """Token-class evidence reads each activation row's token and the next: the two must line up row for row."""
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.cmd_families import prompt_sample

    loaded = load_model(WORLD / "model")
    tc = load_transcoders(WORLD / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    prompts = ["Two days after Friday is Sunday .", "The capital of Kessia is"]
    acts, tokens, nexts = prompt_sample(loaded, tc, prompts, [0] * tc.d_transcoder)
    assert tokens.shape == nexts.shape == (acts.shape[0],) == (7 + 5,)
    from tracer.models import tokenize

    assert tokenize(loaded, "Two days after Friday is Sunday .")[1:].tolist() == tokens[:7].tolist()
    assert nexts[:7].tolist() == [*tokens[1:7].tolist(), -1] and nexts[7:].tolist() == [*tokens[8:].tolist(), -1]


@shipped
def test_token_families_are_named_by_their_tokens(run, tmp_path: Path) -> None:  # noqa: ANN001
    """Without labels a token-class family is labelled by its tokens' text ("reads ..." / "predicts ...")."""
    from workbench.world import generator as gen
    from workbench.world.evaluate import manifest_spec

    spec = manifest_spec(json.loads((WORLD / "manifest.json").read_text()))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(" ".join(s.words) for s in gen.sample_corpus(spec, 300, seed=1, stream="t")) + "\n")
    out = tmp_path / "families.json"
    status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--model", str(WORLD / "model"),
                         "--prompts", str(prompts), "--layer", "1", "--out", str(out), "--quiet")
    assert status == 0, err
    rows = [f for f in json.loads(out.read_text())["families"] if "tokens" in f]
    days = [f for f in rows if "Monday" in f["token_words"]]
    assert len(days) == 1 and sorted(days[0]["token_words"]) == sorted(
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"])
    assert days[0]["label"].startswith(("reads", "predicts")) and "(7 tokens)" in days[0]["label"]
    assert all(len(f["tokens"]) == len(f["token_words"]) >= 3 and f["token_sides"] for f in rows)
    numbers = [f for f in rows if "two" in f["token_words"]]  # the tokenizer's words: case folded
    assert len(numbers) == 1 and {"Two", "Eleven", "eleven"} <= set(numbers[0]["token_words"])
    status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--model", str(WORLD / "model"),
                         "--prompts", str(prompts), "--layer", "1", "--no-fold-case", "--out", str(out), "--quiet")
    assert status == 0, err
    rows = [f for f in json.loads(out.read_text())["families"] if "tokens" in f]
    assert not any({"two", "Two"} <= set(f["token_words"]) for f in rows)


@shipped
def test_token_texts_decode_every_id_with_either_tokenizer() -> None:
    """The native backend's tokenizer has only decode (no len, no batch_decode)."""
    from tracer.models import load_model
    from workbench.cmd_families import token_texts

    native, hf = (load_model(WORLD / "model", backend=b) for b in ("native", "hf"))
    texts = token_texts(native)
    assert texts == token_texts(hf) and len(texts) == native.d_vocab
    assert native.tokenizer is not None
    assert texts[native.tokenizer("Two")["input_ids"][-1]] == "Two"


@shipped
def test_clt_mode_on_per_layer_transcoders_says_it_does_nothing(run, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """QA pass 30: --clt-mode with PLT transcoders was ignored silently."""
    with caplog.at_level("WARNING"):
        status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--layer", "1", "--clt-mode", "sum",
                             "--out", str(tmp_path / "f.json"))
    assert status == 0 and "--clt-mode sum has no effect" in caplog.text, err
    caplog.clear()
    with caplog.at_level("WARNING"):
        status, _, err = run("families", "--transcoders", str(WORLD / "plt"), "--layer", "1", "--out",
                             str(tmp_path / "f.json"))
    assert status == 0 and "--clt-mode" not in caplog.text, err

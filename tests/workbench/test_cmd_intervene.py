"""`workbench intervene` end to end on a tiny saved model + transcoders (in-process)."""

import json

import pytest

from tests.helpers_models import save_model, save_transcoders, tiny_model, tiny_transcoders
from workbench.cli import main
from workbench.cmd_intervene import parse_layers, parse_position


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("intervene")
    loaded = tiny_model("llama")
    save_model(loaded, root / "model")
    save_transcoders(tiny_transcoders(loaded, kind="clt", act="relu"), root / "tc")
    return root


def _run(files, *extra: str) -> int:
    return main(["intervene", "--model", str(files / "model"), "--transcoders", str(files / "tc"), *extra])


def test_set_prints_changes_and_writes_json(files, capsys):
    out = files / "res" / "out.json"
    rc = _run(files, "--token-ids", "1,5,9,12,7,30", "--set", "1:3..:5=20", "--scale", "0:2:1=0",
              "--top-k", "4", "--out", str(out), "--quiet")
    assert rc == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["token_ids"] == [1, 5, 9, 12, 7, 30]
    first = {"layer": 1, "position": "3..", "feature": 5, "value": 20.0, "mode": "set"}
    assert data["interventions"][0] == first
    assert data["interventions"][1]["mode"] == "scale"
    assert data["settings"] == {"freeze_attention": True, "constrained_layers": None}
    assert data["run"]["options"]["specs"][0] == ["set", "1:3..:5=20"] and "--set" in data["run"]["argv"]
    assert data["run"]["options"]["propagate"] is True  # what ran (the default), not the flag's absence
    rows = data["top_changes"]
    assert len(rows) == 4 and abs(rows[0]["delta"]) >= abs(rows[-1]["delta"]) > 0
    assert abs(rows[0]["intervened_prob"] - rows[0]["clean_prob"] - rows[0]["delta"]) < 1e-12
    assert repr(rows[0]["token"]) in printed and f'{rows[0]["token_id"]:>7} ' in printed  # ids tell '�' apart
    assert len(printed.splitlines()) == 1 + 4  # the header and one line per token
    assert not list(out.parent.glob(".*.tmp*"))  # atomic write left nothing behind


def test_token_cells_show_spaces_and_control_characters():
    """Subword vocabularies hold " Tuesday" next to "Tuesday", "\n" and "\r": the table printed them raw
    (a newline split a row, a carriage return overwrote it, the leading space vanished in the alignment)."""
    from workbench.cmd_intervene import token_cell

    assert token_cell(" Tuesday") == "' Tuesday'" and token_cell("Tuesday") == "'Tuesday'"
    assert token_cell("\n") == "'\\n'" and token_cell("\r\t") == "'\\r\\t'"
    assert token_cell(" a-very-long-subword-token") == "' a-very-long-sub…" and len(token_cell("x" * 40)) == 18


def test_prompt_generation_and_options(files, capsys):
    out = files / "gen.json"
    rc = _run(files, "--prompt", "the cat dog", "--add", "2:-1:7=50", "--free-attention",
              "--constrained-layers", "0-2", "--generate", "3", "--out", str(out), "--quiet")
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["token_ids"][0] == 1  # BOS prepended
    assert data["settings"] == {"freeze_attention": False, "constrained_layers": [0, 1, 2]}
    gen = data["generation"]
    assert len(gen["clean"]["token_ids"]) == 3 and isinstance(gen["intervened"]["text"], str)
    assert "intervened:" in capsys.readouterr().out


@pytest.mark.parametrize("args,msg", [
    (["--set", "9:1:0=1"], "intervention layer must be an integer in [0, 3)"),
    (["--set", "0:1:999=1"], "intervention feature must be an integer in [0, 64)"),
    (["--set", "0:40:0=1"], "intervention position must be an integer in [-4, 4)"),
    (["--set", "0:1:0=nan"], "intervention value must be a finite number"),
    (["--set", "0:1:0=1e40"], "intervention value must be a number with |value| <= 1.8e+19; got 1e+40"),
    (["--set", "0:1:0=abc"], "--set value must be a number"),
    (["--set", "garbage"], "--set must be LAYER:POS:FEATURE=VALUE"),
    (["--scale", "0:1-2:0=1"], "intervention position must be N, N..M or N.."),
    (["--set", "0:1:0=1", "--constrained-layers", "3-1"], "--constrained-layers must be"),
    (["--set", "0:1:0=1", "--constrained-layers", "0-7"], "constrained layer must be an integer in [0, 3)"),
    ([], "interventions must be given"),
    (["--set", "0:1:0=1", "--generate", "2", "--sample", "--temperature", "0"],
     "--temperature must be a finite number > 0; got 0.0"),
    (["--set", "0:1:0=1", "--generate", "2", "--temperature", "0.5"],  # was ignored (greedy decoding)
     "--temperature and --seed need --sample (greedy decoding uses neither); got --temperature 0.5 without --sample"),
    (["--set", "0:1:0=1", "--sample"], "--sample needs --generate N"),
])
def test_bad_input_exits_2_with_one_line(files, capsys, args, msg):
    rc = _run(files, "--token-ids", "1,5,9,12", *args)
    err = capsys.readouterr().err
    assert rc == 2
    assert msg in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_paths_exit_2(files, tmp_path, capsys):
    rc = main(["intervene", "--model", str(tmp_path / "none"), "--transcoders", str(files / "tc"),
               "--token-ids", "1,2", "--set", "0:1:0=1"])
    assert rc == 2 and "--model must exist" in capsys.readouterr().err


def test_parsers():
    assert parse_position("3") == 3 and parse_position("-1") == -1
    assert parse_position("2..5") == slice(2, 5) and parse_position("2..") == slice(2, None)
    assert parse_layers("all") == "all" and parse_layers(None) is None
    assert parse_layers("0-2,5") == [0, 1, 2, 5]


def test_an_intervention_that_changes_nothing_is_flagged_and_shows_the_top_predictions(files, caplog):
    """Setting an inactive feature to 0 is a no-op: a warning says so, and the table lists the model's
    top predictions (ties in |delta| go by probability) rather than arbitrary zero-change tokens."""
    from tracer.interventions import prepare
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    loaded = load_model(files / "model")
    tc = load_transcoders(files / "tc", n_layers=loaded.n_layers, d_model=loaded.d_model)
    ids = [1, 5, 9, 12, 7, 30]
    acts = prepare(loaded, tc, ids).activations(0)  # (n_pos, d_transcoder)
    feature = int((acts[3] == 0).nonzero()[0, 0])
    out = files / "noop.json"
    with caplog.at_level("WARNING", logger="workbench.cmd_intervene"):
        assert _run(files, "--token-ids", ",".join(map(str, ids)), "--set", f"0:3:{feature}=0", "--top-k", "5",
                    "--out", str(out), "--quiet") == 0
    assert f"--set 0:3:{feature}=0 changes nothing" in caplog.text
    rows = json.loads(out.read_text())["top_changes"]
    assert all(r["delta"] == 0 for r in rows)
    probs = [r["clean_prob"] for r in rows]
    assert probs == sorted(probs, reverse=True)
    import torch

    with torch.no_grad():
        top = loaded.model(torch.tensor([ids])).logits[0, -1].topk(5).indices.tolist()
    assert [r["token_id"] for r in rows] == top
    # an intervention that does change something is not flagged
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.cmd_intervene"):
        assert _run(files, "--token-ids", ",".join(map(str, ids)), "--set", f"0:3:{feature}=25", "--quiet") == 0
    assert "changes nothing" not in caplog.text


def test_library_warnings_are_one_log_line(files, capsys, caplog):
    with caplog.at_level("WARNING"):
        rc = _run(files, "--token-ids", "1,5,9,12", "--set", "2:1:0=1", "--constrained-layers", "0-1",
                  "--out", str(files / "warned.json"), "--quiet")
    assert rc == 0
    records = [r for r in caplog.records if "writes to no layer in constrained_layers" in r.getMessage()]
    assert len(records) == 1 and records[0].name == "workbench", caplog.text
    assert "\n" not in records[0].getMessage() and "UserWarning" not in capsys.readouterr().err

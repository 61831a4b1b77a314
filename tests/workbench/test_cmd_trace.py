"""`workbench trace` end to end on tiny saved models, and every bad input it must refuse cleanly."""

import json

import numpy as np
import pytest
import torch

from tests.helpers_models import save_model, save_transcoders, tiny_model, tiny_transcoders
from tracer.graph import Graph
from workbench.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("trace")
    loaded = tiny_model("qwen3")
    save_model(loaded, root / "model")
    save_transcoders(tiny_transcoders(loaded, kind="plt", act="jumprelu", skip=True), root / "plt")
    save_transcoders(tiny_transcoders(loaded, kind="clt"), root / "clt")
    other = tiny_model("llama", num_hidden_layers=2)
    save_transcoders(tiny_transcoders(other, kind="plt"), root / "plt_3layers")
    wide = tiny_model("qwen3", hidden_size=48, head_dim=12)
    save_transcoders(tiny_transcoders(wide, kind="plt"), root / "plt_wide")
    return root


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("kind", ["plt", "clt"])
@pytest.mark.parametrize("backend", ["auto", "hf"])
def test_trace_token_ids_npz_equals_python_api(saved, tmp_path, capsys, kind, backend):
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    out = tmp_path / "g.npz"
    code, _, err = run(capsys, "trace", "--model", str(saved / "model"), "--transcoders", str(saved / kind),
                       "--token-ids", "1,5,9,12,7", "--out", str(out), "--quiet", "--model-backend", backend,
                       "--stats-json", str(tmp_path / "s.json"))
    assert code == 0, err
    z = np.load(out)
    assert z["input_tokens"].tolist() == [1, 5, 9, 12, 7]  # used exactly as given
    m = load_model(saved / "model")
    ref = attribute(m, load_transcoders(saved / kind), [1, 5, 9, 12, 7], AttributionConfig(verbose=False))
    scale = ref.adjacency.abs().max()
    assert np.abs(z["adjacency"] - ref.adjacency.numpy()).max() <= 1e-5 * scale
    assert json.loads((tmp_path / "s.json").read_text())["n_nodes"] == ref.n_nodes


def test_trace_prompt_native_format_and_options(saved, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    code, _, err = run(capsys, "trace", "--model", str(saved / "model"), "--transcoders", str(saved / "plt"),
                       "--prompt", "the cat is on", "--out", str(out), "--max-n-logits", "3",
                       "--desired-logit-prob", "0.5", "--max-feature-nodes", "5", "--batch-size", "2",
                       "--device", "cpu", "--dtype", "float64", "--quiet")
    assert code == 0, err
    g = Graph.load(out)
    assert g.input_tokens[0] == 1 and g.input_tokens.shape[0] == 5  # BOS prepended
    assert g.n_selected == min(5, g.active_features.shape[0]) and g.n_logits <= 3
    assert g.adjacency.dtype == torch.float64


BAD = [
    (["--model", "{root}/nope"], "does not exist"),
    (["--model", "{root}/plt"], "config.json"),
    (["--transcoders", "{root}/plt_3layers"], "layer count"),
    (["--transcoders", "{root}/plt_wide"], "d_model"),
    (["--token-ids", "1,5,999999"], "token ids must be in"),
    (["--token-ids", "1,x"], "comma-separated"),
    (["--token-ids", ""], "at least one id"),
    (["--prompt", "   "], "prompt must be non-empty"),
    (["--token-ids", ",".join(["5"] * 5000)], "context"),
    (["--dtype", "float8"], "dtype must be one of"),
    (["--device", "tpu"], "device must be"),
    (["--device", "cuda:7"], "device must be"),
    (["--max-feature-nodes", "0"], "--max-feature-nodes must be"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(saved, tmp_path, capsys, override, message):
    args = {"--model": str(saved / "model"), "--transcoders": str(saved / "plt"), "--token-ids": "1,5,6"}
    pairs = [(override[i], override[i + 1].format(root=saved)) for i in range(0, len(override), 2)]
    for k, v in pairs:
        if k == "--prompt":
            args.pop("--token-ids")
        args[k] = v
    argv = ["trace", *[x for kv in args.items() for x in kv], "--out", str(tmp_path / "g.npz"), "--quiet"]
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_corrupt_safetensors_and_unknown_architecture(saved, tmp_path, capsys):
    import shutil

    bad_tc = tmp_path / "bad_tc"
    shutil.copytree(saved / "plt", bad_tc)
    f = bad_tc / "layer_0.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    out = tmp_path / "o" / "g.npz"
    code, _, err = run(capsys, "trace", "--model", str(saved / "model"), "--transcoders", str(bad_tc),
                       "--token-ids", "1,5", "--out", str(out), "--quiet")
    assert code == 2 and "layer_0.safetensors" in err and len(err.strip().splitlines()) == 1
    bad_model = tmp_path / "bad_model"
    shutil.copytree(saved / "model", bad_model)
    w = next(bad_model.glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[:200])
    code, _, err = run(capsys, "trace", "--model", str(bad_model), "--transcoders", str(saved / "plt"),
                       "--token-ids", "1,5", "--out", str(out), "--quiet")
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1
    cfg = json.loads((bad_model / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["GPT2LMHeadModel"], "gpt2"
    (bad_model / "config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, "trace", "--model", str(bad_model), "--transcoders", str(saved / "plt"),
                       "--token-ids", "1,5", "--out", str(out), "--quiet")
    assert code == 2 and "architecture must be" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_nan_weights_are_reported(saved, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    bad_tc = tmp_path / "nan_tc"
    shutil.copytree(saved / "plt", bad_tc)
    sd = load_file(str(bad_tc / "layer_1.safetensors"))
    sd["W_enc"][:] = float("nan")
    save_file(sd, str(bad_tc / "layer_1.safetensors"))
    code, _, err = run(capsys, "trace", "--model", str(saved / "model"), "--transcoders", str(bad_tc),
                       "--token-ids", "1,5,6", "--out", str(tmp_path / "g.npz"), "--quiet")
    assert code == 2 and "NaN" in err and len(err.strip().splitlines()) == 1


def test_not_enough_disk_exits_2_with_one_line(saved, tmp_path, capsys, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1 << 20))
    code, _, err = run(capsys, "trace", "--model", str(saved / "model"), "--transcoders", str(saved / "plt"),
                       "--token-ids", "1,5,9,12", "--out", str(tmp_path / "g.npz"), "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "free disk space must hold" in err, err
    assert list(tmp_path.iterdir()) == []


def test_trace_process_streams_the_file_and_exits_fast(saved, tmp_path):
    """The real process: the file and the stats (with the phase stamps) are complete at the fast exit."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**__import__("os").environ, "PYTHONPATH": str(root)}
    out, stats = tmp_path / "g.npz", tmp_path / "s.json"
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "trace", "--model", str(saved / "model"),
                           "--transcoders", str(saved / "clt"), "--token-ids", "1,5,9,12,7", "--out", str(out),
                           "--stats-json", str(stats)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stderr  # flushed before the fast exit
    s = json.loads(stats.read_text())
    assert set(s["seconds"]) == {"import", "load", "attribute", "save", "total"}
    stamps = s["timestamps"]
    assert stamps["start"] <= stamps["import"] <= stamps["load"] <= stamps["attribute"]
    assert s["peak_rss_mb"] > 0 and s["out_bytes"] == out.stat().st_size
    assert np.load(out)["adjacency"].shape == (s["n_nodes"],) * 2

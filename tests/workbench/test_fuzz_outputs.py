"""Fuzz-style suite, part 2: output paths, token ids, devices, memory, `.pt` imports, unreadable
inputs, and hypothesis-generated bad inputs, for every CLI command that writes.

The contract is part 1's (``test_fuzz_inputs.py``): exit 2, one stderr line, no traceback,
nothing new at the output path, inputs unchanged. Output paths are refused before any computation:
the cases below would take seconds to compute, and a check after the work would not protect the
device or input they name.
"""

import json
import os
import socket
import stat
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers_mutants import assert_refused, copy_world, make_unwritable, run_cli
from tracer.io import TEMP_NAME_MAX

PROMPT = "Two days after Friday is"
HYP = settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.models import load_model, tokenize
    from tracer.transcoders.loaders import load_transcoders

    root = copy_world(tmp_path_factory.mktemp("world"), parts=("model", "plt", "labels_plt.jsonl", "manifest.json"))
    loaded = load_model(root / "model")
    tc = load_transcoders(root / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    graph = attribute(loaded, tc, tokenize(loaded, PROMPT), AttributionConfig(verbose=False))
    graph.save(root / "graph.safetensors")
    return root


def _trace(world: Path, out: object, *extra: str) -> list[str]:
    return ["trace", "--model", str(world / "model"), "--transcoders", str(world / "plt"), "--prompt", PROMPT,
            "--out", str(out), "-q", *extra]


def _commands(world: Path, out: Path) -> dict[str, list[str]]:
    """Every writing command with `out` as its output (file or folder)."""
    g = str(world / "graph.safetensors")
    return {
        "trace": _trace(world, out),
        "prune": ["prune", g, "--out", str(out), "-q"],
        "export": ["export", g, "--out", str(out), "-q"],
        "import-pt": ["import-pt", str(world / "graph.safetensors"), "--out", str(out), "--trust-pickle", "-q"],
        "intervene": ["intervene", "--model", str(world / "model"), "--transcoders", str(world / "plt"),
                      "--prompt", PROMPT, "--set", "0:1:0=1", "--out", str(out), "-q"],
        "demo": ["demo", "--world", str(world), "--out", str(out), "-q"],
        "world": ["world", "build", "--out", str(out), "--tiny", "-q"],
    }


FOLDER_OUTPUTS = {"export", "demo", "world"}


def _special(kind: str, path: Path) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "chardev":
        if os.geteuid() != 0:
            pytest.skip("creating a device node needs root")
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a second /dev/null, in tmp
        except PermissionError:
            pytest.skip("this container may not create device nodes")
    return path


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
@pytest.mark.parametrize("command", ["trace", "prune", "export", "import-pt", "intervene", "demo", "world"])
def test_special_files_are_never_replaced(world, tmp_path, capfd, command, kind):
    out = _special(kind, tmp_path / "out")
    argv = _commands(world, out)[command]
    assert_refused(capfd, argv, inputs=[world / "graph.safetensors", world / "model", world / "plt"], out=out,
                   needle="--out must be a")


@pytest.mark.parametrize("command", ["trace", "prune", "export", "import-pt", "intervene", "demo", "world"])
def test_parent_is_a_file(world, tmp_path, capfd, command):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub" / "out"
    assert_refused(capfd, _commands(world, out)[command], inputs=[tmp_path / "afile"], out=out,
                   needle="is a file")


@pytest.mark.parametrize("command", ["trace", "prune", "export", "import-pt", "intervene", "demo", "world"])
def test_name_too_long(world, tmp_path, capfd, command):
    out = tmp_path / ("n" * 300)
    assert_refused(capfd, _commands(world, out)[command], inputs=[], out=out, needle="at most 255 bytes")


@pytest.mark.parametrize("command", ["trace", "prune", "export", "import-pt", "intervene", "demo", "world"])
def test_read_only_folder_is_refused_up_front(world, tmp_path, capfd, command, monkeypatch):
    """Root bypasses permissions, so the folder is made unwritable by stubbing os.access for it."""
    ro = make_unwritable(tmp_path / "ro", monkeypatch)
    out = ro / "out"
    assert_refused(capfd, _commands(world, out)[command], inputs=[], out=out, needle="not writable")


@pytest.mark.parametrize("case", ["wrong-kind", "model-weights", "inside-model", "transcoder-layer", "prune-input",
                                  "import-input", "export-into-tokenizer", "demo-into-world", "stats-is-out"])
def test_inputs_are_never_outputs(world, tmp_path, capfd, case):
    g = world / "graph.safetensors"
    cases = {
        "wrong-kind": (_trace(world, tmp_path), tmp_path, "regular file"),
        "model-weights": (_trace(world, world / "model" / "model.safetensors"), world / "model" / "model.safetensors",
                          "inputs"),
        "inside-model": (_trace(world, world / "model" / "g.safetensors"), world / "model" / "g.safetensors",
                         "inside the input"),
        "transcoder-layer": (_trace(world, world / "plt" / "layer_0.safetensors"),
                             world / "plt" / "layer_0.safetensors", "inputs"),
        "prune-input": (["prune", str(g), "--out", str(g)], g, "inputs"),
        "import-input": (["import-pt", str(g), "--out", str(g), "--trust-pickle"], g, "inputs"),
        "export-into-tokenizer": (["export", str(g), "--out", str(world / "model"), "--tokenizer", str(world / "model"),
                                   "--slug", "tokenizer"], world / "model", "input"),
        "demo-into-world": (["demo", "--world", str(world), "--out", str(world / "plt")], world / "plt", "input"),
        "stats-is-out": (_trace(world, tmp_path / "g.npz", "--stats-json", str(tmp_path / "g.npz")), tmp_path / "g.npz",
                         "--stats-json"),
    }
    argv, out, needle = cases[case]
    assert_refused(capfd, argv, inputs=[world / "model", world / "plt", g], out=out, needle=needle)


def test_a_hard_link_to_an_input_is_that_input(world, tmp_path, capfd):
    g = tmp_path / "g.safetensors"
    os.link(world / "graph.safetensors", g)
    hardlink = tmp_path / "hard.safetensors"
    os.link(g, hardlink)
    assert_refused(capfd, ["prune", str(g), "--out", str(hardlink)], inputs=[g], out=hardlink, needle="inputs")


@pytest.mark.parametrize("slug", ["graph-metadata", "../x", ".hidden", "a/b", "x" * 101, "", " "])
def test_export_slugs(world, tmp_path, capfd, slug):
    out = tmp_path / "viewer"
    argv = ["export", str(world / "graph.safetensors"), "--out", str(out), "--slug", slug]
    assert_refused(capfd, argv, inputs=[world / "graph.safetensors"], out=out, needle="--slug")
    assert not (tmp_path / "x.json").exists()


def test_an_empty_scan_is_refused(world, tmp_path, capfd):
    """--scan "" (and --slug "") fell back to the default silently."""
    out = tmp_path / "viewer"
    argv = ["export", str(world / "graph.safetensors"), "--out", str(out), "--scan", ""]
    assert_refused(capfd, argv, inputs=[world / "graph.safetensors"], out=out, needle="--scan must be non-empty")


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--device", "mps", "MPS is not"), ("--device", "quantum", "device must be"),
    ("--dtype", "int8", "dtype must be"), ("--max-n-logits", "0", "--max-n-logits must be"),
    ("--desired-logit-prob", "nan", "--desired-logit-prob must be"), ("--batch-size", "x", "invalid int value"),
    ("--token-ids", "1,2 0,30", "'2 0'"), ("--token-ids", "99999999999999999999", "below 2**63"),
    ("--token-ids", "1,-5", "'-5'"), ("--token-ids", "1,,2", "''"), ("--token-ids", "1,100000", "in [0, 380)"),
    ("--prompt", "Two days after Funday is", "'Funday'"), ("--prompt", "Two days after friday is", "'friday'"),
    ("--prompt", "  ", "prompt"),
])
def test_bad_arguments(world, tmp_path, capfd, flag, value, needle):
    argv = _trace(world, tmp_path / "g.npz")
    if flag in ("--token-ids", "--prompt"):
        i = argv.index("--prompt")
        argv[i:i + 2] = [flag, value]
    else:
        argv += [flag, value]
    assert_refused(capfd, argv, inputs=[world / "model", world / "plt"], out=tmp_path / "g.npz", needle=needle)


def test_allow_unk_traces_with_a_loud_warning(world, tmp_path, capfd):
    out = tmp_path / "g.safetensors"
    argv = ["trace", "--model", str(world / "model"), "--transcoders", str(world / "plt"), "--prompt",
            "Funday is", "--out", str(out), "-q", "--allow-unk"]
    res = run_cli(capfd, argv)
    assert res.code == 0 and "UNKNOWN WORDS" in res.err and "'Funday'" in res.err
    from tracer.graph import Graph

    assert Graph.load(out).input_tokens.tolist()[:2] == [1, 0]  # BOS, then <unk>


def test_graph_bigger_than_memory_streams_and_a_capped_buffer_is_refused(world, tmp_path, capfd, monkeypatch):
    """trace streams the adjacency into its file, so memory does not bound an uncapped graph; a
    capped graph's full-width row buffer stays in memory and is checked before it is allocated."""
    import tracer.memory

    monkeypatch.setattr(tracer.memory, "available_bytes", lambda device="cpu": 10_000)  # the capped row buffer: ~100 KB
    out = tmp_path / "g.npz"
    assert run_cli(capfd, _trace(world, out)).code == 0 and np.load(out)["adjacency"].shape == (427, 427)
    capped = tmp_path / "capped.npz"
    res = assert_refused(capfd, _trace(world, capped, "--max-feature-nodes", "50"), inputs=[world / "model"],
                         out=capped, needle="must fit in memory")
    assert "max_feature_nodes" in res.lines[0] and "--max-feature-nodes, --adjacency-dtype" in res.lines[0]


def test_graph_bigger_than_the_disk_is_refused_before_the_sweep(world, tmp_path, capfd, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1 << 20))
    out = tmp_path / "g.safetensors"
    res = assert_refused(capfd, _trace(world, out), inputs=[world / "model"], out=out,
                         needle="free disk space must hold the graph file")
    assert "--max-feature-nodes, --adjacency-dtype" in res.lines[0]  # the CLI names its flags


def test_pt_describing_a_huge_strided_tensor_is_refused(world, tmp_path, capfd):
    """A few bytes of storage with zero strides can describe 30 GB; the import refuses it up front."""
    big = torch.zeros(1).as_strided((100_000, 100_000), (0, 0))
    pt = tmp_path / "huge.pt"
    torch.save({"adjacency_matrix": big, "cfg": None}, pt)
    assert pt.stat().st_size < 4000
    out = tmp_path / "g.safetensors"
    assert_refused(capfd, ["import-pt", str(pt), "--out", str(out), "--trust-pickle"], inputs=[pt], out=out,
                   needle="must fit in memory")


@pytest.mark.parametrize("content", [b"not a pickle", b"PK\x03\x04", b""])
def test_bad_pt_files(world, tmp_path, capfd, content):
    pt = tmp_path / "g.pt"
    pt.write_bytes(content)
    out = tmp_path / "g.safetensors"
    assert_refused(capfd, ["import-pt", str(pt), "--out", str(out), "--trust-pickle"], inputs=[pt], out=out)


def test_pt_missing_graph_tensors(world, tmp_path, capfd):
    pt = tmp_path / "g.pt"
    torch.save({"adjacency_matrix": torch.zeros(3, 3), "cfg": None}, pt)
    out = tmp_path / "g.safetensors"
    assert_refused(capfd, ["import-pt", str(pt), "--out", str(out), "--trust-pickle"], inputs=[pt], out=out)


def test_unreadable_file_says_so_not_not_found(world, tmp_path, capfd, monkeypatch):
    """Root reads everything, so the label file is made unreadable by stubbing os.access for it."""
    labels = tmp_path / "labels.jsonl"
    labels.write_text((world / "labels_plt.jsonl").read_text())
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == labels and mode & os.R_OK
                        else real_access(p, mode, **kw))
    out = tmp_path / "viewer"
    res = assert_refused(capfd, ["export", str(world / "graph.safetensors"), "--out", str(out), "--labels",
                                 str(labels)], inputs=[labels], out=out, needle="cannot be read")
    assert "not found" not in res.lines[0] and "does not exist" not in res.lines[0]


# ----------------------------------------------------------------------------- hypothesis
_ID_TEXT = st.text(alphabet=string.digits + ", -x\t", min_size=0, max_size=14)


@HYP
@given(text=_ID_TEXT)
def test_token_ids_parse_strictly_or_refuse(world, tmp_path_factory, capfd, text):
    """Either the text is a clean comma list of in-vocabulary ids (and is traced exactly), or exit 2."""
    parts = [p.strip() for p in text.split(",")]
    parts = parts[:-1] if parts and parts[-1] == "" and len(parts) > 1 else parts
    clean = bool(parts) and all(p.isdigit() for p in parts) and all(int(p) < 380 for p in parts)
    tmp = tmp_path_factory.mktemp("ids")
    out = tmp / "g.npz"
    argv = ["trace", "--model", str(world / "model"), "--transcoders", str(world / "plt"), "--token-ids", text,
            "--out", str(out), "-q"]
    if clean:
        return  # a valid id list (traced by test_cmd_trace); only refusals are checked here
    assert_refused(capfd, argv, inputs=[], out=out)


@HYP
@given(name=st.text(min_size=0, max_size=40).filter(
    lambda s: not (s and s[0].isascii() and s[0].isalnum() and all(c.isascii() and (c.isalnum() or c in "._-")
                                                                   for c in s) and ".." not in s)))
def test_manifest_prompt_names_are_validated_before_writing(world, tmp_path_factory, capfd, name):
    w = tmp_path_factory.mktemp("w")
    for part in ("model", "plt"):
        (w / part).symlink_to(world / part)
    manifest = json.loads((world / "manifest.json").read_text())
    manifest["demo_prompts"] = {name: PROMPT}
    (w / "manifest.json").write_text(json.dumps(manifest))
    out = w.with_name(w.name + "-out")
    assert_refused(capfd, ["demo", "--world", str(w), "--out", str(out), "-q"], inputs=[w / "manifest.json"],
                   out=out, needle="demo_prompts name")


_BAD_INT = st.one_of(st.integers(max_value=0), st.text(max_size=5), st.floats(), st.booleans(), st.none(),
                     st.lists(st.integers(), max_size=2))


@HYP
@given(key=st.sampled_from(["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                            "intermediate_size"]), value=_BAD_INT)
def test_config_values_of_the_wrong_type(world, tmp_path_factory, capfd, key, value):
    import shutil

    model = tmp_path_factory.mktemp("m") / "model"
    shutil.copytree(world / "model", model)
    cfg = json.loads((model / "config.json").read_text())
    if value is None:
        cfg.pop(key)
    else:
        cfg[key] = value
    (model / "config.json").write_text(json.dumps(cfg))
    out = model.parent / "g.npz"
    argv = ["trace", "--model", str(model), "--transcoders", str(world / "plt"), "--prompt", PROMPT, "--out",
            str(out), "-q"]
    assert_refused(capfd, argv, inputs=[model], out=out, needle=key)


@HYP
@given(header=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                           max_leaves=8))
def test_random_safetensors_headers(world, tmp_path_factory, capfd, header):
    import shutil

    from tests.helpers_mutants import write_raw

    tc = tmp_path_factory.mktemp("t") / "plt"
    shutil.copytree(world / "plt", tc)
    write_raw(tc / "layer_1.safetensors", header, b"\x00" * 64)
    out = tc.parent / "g.npz"
    argv = ["trace", "--model", str(world / "model"), "--transcoders", str(tc), "--prompt", PROMPT, "--out",
            str(out), "-q"]
    assert_refused(capfd, argv, inputs=[tc], out=out, needle="layer_1")


def test_temp_names_fit_any_file_name(tmp_path):
    """A 255-byte output name works: temp names are short and fixed-length, never name + suffix."""
    from tracer.io import atomic_write_text

    assert TEMP_NAME_MAX < 64
    target = tmp_path / ("n" * 255)
    atomic_write_text(target, "ok")
    assert target.read_text() == "ok"

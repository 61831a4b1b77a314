"""`workbench prune`, `export`, `import-pt` through the real CLI entry point (workbench.cli.main)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tests.helpers_cli import one_line_error
from tests.reference import dense_prune as ref
from tests.tracer.test_ct_import import _save_ct
from tracer.graph import Graph, PruneConfig, graph_scores, load_prune_result, prune_graph
from tracer.labels import FeatureLabel, save_labels
from workbench import cli, cli_parser


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `workbench ARGS...`; returns (exit status, stdout, stderr)."""
    # only this module's commands: the registry's other modules may not exist in every checkout
    monkeypatch.setattr(cli, "SUBCOMMANDS", {k: v for k, v in cli.SUBCOMMANDS.items()
                                             if v == "workbench.cmd_graphtools"})

    def _run(*argv: str) -> tuple[int, str, str]:
        status = cli.main(["--quiet", *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return _run


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    # no model id: export then skips looking for a local tokenizer (and importing transformers)
    graph = dataclasses.replace(ref.random_graph(9, n_pos=6, max_features=5), model_id="")
    return graph.save(tmp_path / "g.safetensors")


@pytest.mark.parametrize("flags, message", [
    (["--node-threshold", "0.5", "--node-threshold", "0.6"], "argument --node-threshold: given twice; give it once"),
    (["--node-threshold=0.5", "--node-threshold", "0.6"], "argument --node-threshold: given twice"),
    (["--out", "OTHER"], "argument --out: given twice"),
])
def test_an_option_given_twice_is_refused(run, graph_file: Path, tmp_path: Path, flags: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.npz"
    argv = [x.replace("OTHER", str(tmp_path / "q.npz")) for x in flags]
    with pytest.raises(SystemExit) as info:
        run("prune", str(graph_file), "--out", str(out), *argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "q.npz").exists()
    assert run("prune", str(graph_file), "--out", str(out), "-q", "-q")[0] == 0  # a repeated switch is harmless


def test_repeats_refused_only_for_options_that_hold_one_value(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    class Collect(argparse.Action):  # like intervene's --set / --scale / --add
        def __call__(self, parser: object, namespace: argparse.Namespace, values: object,
                     option_string: str | None = None) -> None:
            namespace.specs = [*(getattr(namespace, "specs", None) or []), (option_string, values)]

    parser = cli_parser.Parser(prog="t")
    parser.add_argument("--flag", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--fast", action="store_true", dest="speed")
    parser.add_argument("--slow", action="store_false", dest="speed")
    parser.add_argument("--tag", action="append")
    parser.add_argument("--set", action=Collect, dest="specs")
    parser.add_argument("--scale", action=Collect, dest="specs")
    args = parser.parse_args(["--flag", "--flag", "--fast", "--fast", "--tag", "a", "--tag", "b", "--set", "1",
                              "--scale", "2", "--set", "3"])
    assert args.flag and args.speed and args.tag == ["a", "b"] and len(args.specs) == 3
    for argv, message in ((["--flag", "--no-flag"], "argument --no-flag: conflicts with --flag"),
                          (["--fast", "--slow"], "argument --slow: conflicts with --fast")):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_prune_writes_result_and_summary(run, graph_file: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"pruned{suffix}"
    status, stdout, _ = run("prune", str(graph_file), "--out", str(out), "--node-threshold", "0.7")
    assert status == 0
    assert stdout.count("\n") == 1 and stdout.startswith(f"pruned {graph_file}: kept ")
    graph = Graph.load(graph_file)
    want = prune_graph(graph, PruneConfig(node_threshold=0.7))
    got, meta = load_prune_result(out)
    assert torch.equal(got.node_mask, want.node_mask)
    assert torch.equal(got.edge_index, want.edge_index)
    assert torch.equal(got.cumulative_scores, want.cumulative_scores)
    assert meta["scores"]["full"] == graph_scores(graph)._asdict()
    assert meta["node_threshold"] == 0.7 and meta["schema_version"] == 1
    assert meta["run"]["options"]["node_threshold"] == 0.7 and meta["graph_fingerprint"] == graph.node_fingerprint()
    assert set(meta["scores"]["pruned"]) == {"replacement", "completeness"}


def test_prune_bad_input(run, graph_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.npz"
    for argv, needle in [
        (("prune", str(tmp_path / "missing.npz"), "--out", str(out)), "must exist"),
        (("prune", str(graph_file), "--out", str(out), "--edge-threshold", "1.5"),
         "edge_threshold must be in [0, 1]"),
        (("prune", str(graph_file), "--out", str(tmp_path)), "--out must be a regular file or a new path"),
        (("prune", str(tmp_path / "x.pt"), "--out", str(out)), "workbench import-pt"),
    ]:
        status, _, err = run(*argv)
        assert status == 2
        one_line_error(err, "prune")
        assert needle in err
    (tmp_path / "junk.npz").write_bytes(b"junk")
    status, _, err = run("prune", str(tmp_path / "junk.npz"), "--out", str(out))
    assert status == 2
    one_line_error(err, "prune")
    assert not out.exists() and not list(tmp_path.glob(".mwtmp-*"))


def test_export_with_labels_and_supernodes(run, graph_file: Path, tmp_path: Path) -> None:
    graph = Graph.load(graph_file)
    layer, _, feat = graph.active_features[graph.selected_features[0]].tolist()
    labels = tmp_path / "labels.jsonl"
    save_labels([FeatureLabel(layer=layer, feature=feat, label="first feature")], labels)
    groups = tmp_path / "groups.json"
    token = f"E_{int(graph.input_tokens[1])}_1"  # the second token's node
    groups.write_text(json.dumps({"supernodes": [["grp", "E_999_0"]], "pinnedIds": [token]}))
    out = tmp_path / "viewer"
    argv = ("export", str(graph_file), "--format", "neuronpedia", "--out", str(out), "--labels", str(labels),
            "--supernodes", str(groups), "--node-threshold", "1.0")
    status, _, err = run(*argv)  # an id that is no node of the graph: the group would not open
    assert status == 2 and not out.exists()
    one_line_error(err, "export")
    assert "got 1 that are not: E_999_0" in err
    groups.write_text(json.dumps({"supernodes": [["grp", token]], "pinnedIds": [token]}))
    status, stdout, _ = run(*argv)
    assert status == 0 and stdout.startswith("exported ")
    data = json.loads((out / "g.json").read_text())
    assert data["qParams"]["supernodes"] == [["grp", token]] and data["qParams"]["pinnedIds"] == [token]
    clerps = {n["node_id"]: n["clerp"] for n in data["nodes"]}
    first = [k for k in clerps if k.startswith(f"{layer}_{feat}_")]
    assert first and all(clerps[k] == "first feature" for k in first)
    index = json.loads((out / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["g"]


def test_export_reads_a_saved_prune_instead_of_pruning_again(run, graph_file: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A large graph prunes for minutes; `export --prune` reuses `workbench prune`'s result (its thresholds rule)."""
    from tracer.graph import export

    pruned = tmp_path / "p.safetensors"
    assert run("prune", str(graph_file), "--out", str(pruned), "--node-threshold", "0.7")[0] == 0
    assert run("export", str(graph_file), "--out", str(tmp_path / "here"), "--node-threshold", "0.7")[0] == 0
    monkeypatch.setattr(export, "prune_graph", lambda *a, **k: pytest.fail("export pruned again"))
    status, _, err = run("export", str(graph_file), "--out", str(tmp_path / "saved"), "--prune", str(pruned))
    assert status == 0, err
    here, saved = (json.loads((tmp_path / d / "g.json").read_text()) for d in ("here", "saved"))
    assert saved["metadata"]["pruning_settings"]["node_threshold"] == 0.7
    assert saved["nodes"] == here["nodes"] and saved["links"] == here["links"]
    out = tmp_path / "v"
    other = dataclasses.replace(Graph.load(graph_file), input_tokens=Graph.load(graph_file).input_tokens + 1)
    other_prune = tmp_path / "other.safetensors"
    assert run("prune", str(other.save(tmp_path / "other_graph.safetensors")), "--out", str(other_prune))[0] == 0
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"format": "manifold-workbench-supernodes", "schema_version": 1, "supernodes": [],
                                  "prune": {"node_threshold": 0.8, "edge_threshold": 0.98}}))
    for argv, needle in [
        (("--prune", str(pruned), "--node-threshold", "0.8"), "--node-threshold must match the --prune file's 0.7"),
        (("--prune", str(other_prune)), "--prune must be a prune result of GRAPH; got one of another graph"),
        (("--prune", str(pruned), "--supernodes", str(groups)), "--prune must be made at the --supernodes file's "
                                                                 "node_threshold 0.8"),
        (("--prune", str(tmp_path / "none.safetensors")), "--prune file must exist"),
    ]:
        status, _, err = run("export", str(graph_file), "--out", str(out), *argv)
        assert status == 2 and needle in err, err
        one_line_error(err, "export")
    assert not out.exists()


def test_export_bad_input(run, graph_file: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for argv, needle in [
        (("export", str(graph_file), "--out", str(tmp_path / "afile")), "--out must be a folder"),
        (("export", str(graph_file), "--out", str(tmp_path / "v"), "--labels", "nope.jsonl"),
         "--labels file must exist"),
        (("export", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "v")), "must exist"),
        (("export", str(graph_file), "--out", str(tmp_path / "v"), "--slug", "a/b"), "slug must be"),
        (("export", str(graph_file), "--out", str(tmp_path / "v"), "--tokenizer", str(tmp_path / "none")),
         "--tokenizer must be"),
    ]:
        status, _, err = run(*argv)
        assert status == 2
        one_line_error(err, "export")
        assert needle in err
    assert not (tmp_path / "v" / "g.json").exists()


def test_a_prune_result_or_an_npz_without_ids_is_explained(run, graph_file: Path, tmp_path: Path) -> None:
    """A prune result given as the graph said "a safetensors file without graph metadata. Use a file written by
    `workbench trace`" (it was written by `workbench prune`); an .npz graph (arrays only) exported without
    --scan said "Pass a scan name" without saying why the scan was missing."""
    for pruned in (tmp_path / "pruned.safetensors", tmp_path / "pruned.npz"):  # the npz one listed missing keys
        assert run("prune", str(graph_file), "--out", str(pruned))[0] == 0
        for command in (("prune", str(pruned), "--out", str(tmp_path / "again.npz")),
                        ("export", str(pruned), "--out", str(tmp_path / "v"))):
            status, _, err = run(*command)
            assert status == 2 and "a prune result (written by `workbench prune`)" in err, err
            one_line_error(err, command[0])
    arrays = Graph.load(graph_file).save(tmp_path / "g.npz")
    status, _, err = run("export", str(arrays), "--out", str(tmp_path / "v"))
    assert status == 2 and "(an .npz graph records neither)" in err and "--scan" in err, err
    one_line_error(err, "export")
    assert not (tmp_path / "v").exists()
    status, _, err = run("export", str(arrays), "--out", str(tmp_path / "v"), "--scan", "my-scan")
    assert status == 0, err
    assert json.loads((tmp_path / "v" / "g.json").read_text())["metadata"]["scan"] == "my-scan"


def test_import_pt(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = ref.random_graph(3)
    pt = _save_ct(tmp_path, monkeypatch, graph)
    out = tmp_path / "imported.npz"
    status, _, err = run("import-pt", str(pt), "--out", str(out))
    assert status == 2
    one_line_error(err, "import-pt")
    assert "is a pickle; pass --trust-pickle only if you trust its source" in err and not out.exists()
    status, stdout, _ = run("import-pt", str(pt), "--out", str(out), "--trust-pickle")
    assert status == 0 and stdout.startswith("imported ")
    back = Graph.load(out)
    assert torch.equal(back.adjacency, graph.adjacency) and back.n_layers == graph.n_layers
    status, _, err = run("import-pt", str(tmp_path / "missing.pt"), "--out", str(out), "--trust-pickle")
    assert status == 2
    one_line_error(err, "import-pt")

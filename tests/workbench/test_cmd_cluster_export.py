"""`workbench export --supernodes` with `workbench cluster`'s output, and the prune results both read, through the
real CLI entry point."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_cli import one_line_error
from tests.helpers_models import random_tokens, tiny_model, tiny_transcoders
from tracer.attribution import attribute
from tracer.config import AttributionConfig


def test_export_uses_the_pruned_view_the_groups_were_made_from(run, traced, tmp_path: Path) -> None:
    """`export` pruned at its own default (0.8) while the groups came from a 0.95 view: members vanished
    from the viewer with only a warning. It now reads the thresholds the file records, refuses ids that
    are no nodes of the export, and refuses the groups of another prompt's graph."""
    sn = tmp_path / "sn.json"
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(sn), "--transcoders", str(traced["plt"]),
                         "--node-threshold", "0.95")
    assert status == 0, err
    doc = json.loads(sn.read_text())
    assert doc["prune"] == {"node_threshold": 0.95, "edge_threshold": 0.98}
    links = doc["scores"]["links"]  # per supernode link: ends are supernode labels or viewer node ids
    assert links and len(links) == doc["scores"]["sign_consistency"]["n_links"]
    assert min(link["sign_consistency"] for link in links) == pytest.approx(doc["scores"]["sign_consistency"]["min"])
    status, _, err = run("export", str(traced["graph"]), "--supernodes", str(sn), "--out", str(tmp_path / "v"))
    assert status == 0, err
    viewer = json.loads((tmp_path / "v" / "g.json").read_text())
    ids = {n["node_id"] for n in viewer["nodes"]}
    grouped = {i for g in doc["supernodes"] for i in g["node_ids"]}
    assert grouped and grouped <= ids
    assert viewer["metadata"]["pruning_settings"]["node_threshold"] == 0.95
    labels = [g[0] for g in viewer["qParams"]["supernodes"]]
    assert len(labels) == len(set(labels))
    status, _, err = run("export", str(traced["graph"]), "--supernodes", str(sn), "--out", str(tmp_path / "v2"),
                         "--node-threshold", "0.3")
    assert status == 2 and not (tmp_path / "v2").exists()
    one_line_error(err, "export", "must be nodes of the exported (pruned) graph")
    other = dataclasses.replace(attribute(tiny_model("qwen3"), tiny_transcoders(tiny_model("qwen3"), "plt",
                                                                                 d_transcoder=64),
                                          random_tokens(7, seed=3), AttributionConfig(verbose=False)), model_id="")
    other_path = other.save(tmp_path / "other.safetensors")
    status, _, err = run("export", str(other_path), "--supernodes", str(sn), "--out", str(tmp_path / "v3"))
    assert status == 2 and not (tmp_path / "v3").exists()
    one_line_error(err, "export", "--supernodes must be groups of this graph")


def test_prune_result_of_another_graph_with_the_same_node_count_is_refused(run, traced, tmp_path: Path) -> None:
    """Only the node count was compared: the Friday graph's prune mask was applied to the Thursday graph
    (427 nodes each) and the run reported success."""
    from tracer.graph import Graph

    graph = Graph.load(traced["graph"])
    tokens = graph.input_tokens.clone()
    tokens[1] = (int(tokens[1]) + 1) % 11  # another prompt, the same nodes count
    other = dataclasses.replace(graph, input_tokens=tokens)
    assert other.n_nodes == graph.n_nodes and other.node_fingerprint() != graph.node_fingerprint()
    other_path = other.save(tmp_path / "other.safetensors")
    status, _, err = run("prune", str(traced["graph"]), "--out", str(tmp_path / "p.npz"), "--node-threshold", "0.7")
    assert status == 0, err
    status, _, err = run("cluster", str(other_path), "--prune", str(tmp_path / "p.npz"), "--out",
                         str(tmp_path / "s.json"))
    assert status == 2 and not (tmp_path / "s.json").exists()
    one_line_error(err, "cluster", "--prune must be a prune result of GRAPH; got one of another graph")
    status, _, err = run("cluster", str(traced["graph"]), "--prune", str(tmp_path / "p.npz"), "--out",
                         str(tmp_path / "s.json"))
    assert status == 0, err  # its own graph, stored as npz or safetensors alike, passes
    doc = json.loads((tmp_path / "s.json").read_text())  # the thresholds of the view clustered, not the defaults
    assert doc["prune"]["node_threshold"] == doc["config"]["clustering"]["node_threshold"] == 0.7
    # a threshold given beside --prune was silently ignored; it must be the file's (as export --prune wants)
    status, _, err = run("cluster", str(traced["graph"]), "--prune", str(tmp_path / "p.npz"), "--out",
                         str(tmp_path / "t.json"), "--node-threshold", "0.8")
    assert status == 2 and not (tmp_path / "t.json").exists()
    one_line_error(err, "cluster", "--node-threshold must match the --prune file's 0.7; got 0.8")
    status, _, err = run("cluster", str(traced["graph"]), "--prune", str(tmp_path / "p.npz"), "--out",
                         str(tmp_path / "t.json"), "--node-threshold", "0.70", "--edge-threshold", "0.98")
    assert status == 0, err
    npz = tmp_path / "g.npz"
    graph.save(npz)
    assert Graph.load(npz).node_fingerprint() == graph.node_fingerprint()


def test_export_refuses_groups_of_another_graph_of_the_same_prompt(run, traced, tmp_path: Path) -> None:
    """PLT groups exported onto the CLT graph of the same prompt were blamed on the pruning thresholds
    ("Prune with the thresholds the groups were made at"); the file now records its graph's node fingerprint."""
    from tracer.graph import Graph

    sn = tmp_path / "sn.json"
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(sn))
    assert status == 0, err
    graph = Graph.load(traced["graph"])
    assert json.loads(sn.read_text())["graph_fingerprint"] == graph.node_fingerprint()
    feats = graph.active_features.clone()
    feats[:, 2] = (feats[:, 2] + 1) % 64  # the same prompt through other features
    other = dataclasses.replace(graph, active_features=feats).save(tmp_path / "other.safetensors")
    status, _, err = run("export", str(other), "--supernodes", str(sn), "--out", str(tmp_path / "v"))
    assert status == 2 and not (tmp_path / "v").exists()
    one_line_error(err, "export", "--supernodes must be groups of this graph; got groups of another graph in")
    assert "its nodes differ" in err


def test_export_keeps_graphs_of_similar_names_apart(run, traced, tmp_path: Path) -> None:
    """'月曜' and '日曜' (and 'Tag ä' / 'Tag ö', 'day 1' / 'day-1') got one default slug, and the second
    export silently replaced the first graph in the folder's index."""
    import shutil

    from tracer.graph import Graph
    from workbench.cmd_graphtools import default_slug

    names = ["月曜", "日曜", "Tag ä", "Tag ö", "day 1", "day-1", "g"]
    slugs = [default_slug(f"/x/{n}.safetensors") for n in names]
    assert len(set(slugs)) == len(names) and slugs[-2:] == ["day-1", "g"], slugs
    graph = Graph.load(traced["graph"])
    tokens = graph.input_tokens.clone()
    tokens[1] = (int(tokens[1]) + 1) % 11
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = shutil.copy(traced["graph"], tmp_path / "a" / "月曜.safetensors")
    second = dataclasses.replace(graph, input_tokens=tokens).save(tmp_path / "b" / "日曜.safetensors")
    for path in (first, second):
        status, _, err = run("export", str(path), "--out", str(tmp_path / "v"))
        assert status == 0, err
    index = json.loads((tmp_path / "v" / "graph-metadata.json").read_text())
    assert len(index["graphs"]) == 2
    # the same stem in two folders: the second is refused unless a slug is chosen
    other = dataclasses.replace(graph, input_tokens=tokens).save(tmp_path / "b" / "g.safetensors")
    shutil.copy(traced["graph"], tmp_path / "a" / "g.safetensors")
    assert run("export", str(tmp_path / "a" / "g.safetensors"), "--out", str(tmp_path / "v"))[0] == 0
    assert run("export", str(tmp_path / "a" / "g.safetensors"), "--out", str(tmp_path / "v"))[0] == 0  # again
    before = (tmp_path / "v" / "g.json").read_bytes()
    status, _, err = run("export", str(other), "--out", str(tmp_path / "v"))
    assert status == 2 and (tmp_path / "v" / "g.json").read_bytes() == before
    one_line_error(err, "export", "--slug: the default 'g' already names another graph in")
    assert run("export", str(other), "--out", str(tmp_path / "v"), "--slug", "g")[0] == 0  # replaced, as asked
    assert run("export", str(other), "--out", str(tmp_path / "v"), "--slug", "g2")[0] == 0
    assert len(json.loads((tmp_path / "v" / "graph-metadata.json").read_text())["graphs"]) == 4
    # an entry from before fingerprints: its prompt decides; a damaged index is the export's one-line error
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "graph-metadata.json").write_text(json.dumps({"graphs": [{"slug": "g", "prompt": "another prompt"}]}))
    status, _, err = run("export", str(tmp_path / "a" / "g.safetensors"), "--out", str(legacy))
    assert status == 2
    one_line_error(err, "export", "--slug: the default 'g' already names another graph")
    for text in ('{"graphs": 5}', '{"graphs": null}', '{"graphs": [{"slug": "g", "info": "x"}]}',
                 '{"graphs":' + "[" * 100_000 + "]" * 100_000 + "}"):
        (legacy / "graph-metadata.json").write_text(text)
        status, _, err = run("export", str(tmp_path / "a" / "g.safetensors"), "--out", str(legacy))
        assert status in (0, 2) and "Traceback" not in err, (text[:40], err)
        if status == 2:
            one_line_error(err, "export", "graph-metadata.json")


def _prune_mutants() -> dict[str, tuple[Any, str]]:
    import numpy as np

    def rewrite(edit):
        def mutate(path: Path) -> None:
            with np.load(path) as z:
                arrays: dict[str, Any] = {k: np.array(z[k]) for k in z.files}
            edit(arrays)
            with open(path, "wb") as fh:
                np.savez(fh, **arrays)
        return mutate

    def meta(**changes):
        def edit(a):
            m = json.loads(str(a["meta_json"]))
            m.update(changes)
            a["meta_json"] = np.array(json.dumps(m))
        return rewrite(edit)

    return {
        "empty": (lambda p: p.write_bytes(b""), "EOFError"),
        "truncated": (lambda p: p.write_bytes(p.read_bytes()[:300]), "prune result must be a file written by"),
        "meta-not-json": (rewrite(lambda a: a.update(meta_json=np.array("{bad"))), "its metadata is not JSON"),
        "edge-out-of-range": (rewrite(lambda a: a["edge_target"].__setitem__(0, 10**6)),
                              "edge ends must be node indices in"),
        "edge-negative": (rewrite(lambda a: a["edge_source"].__setitem__(0, -1)), "edge ends must be node indices in"),
        "threshold-5": (meta(node_threshold=5.0), "node_threshold must be a number in [0, 1]; got 5.0"),
        "schema-7": (meta(schema_version=7), "schema_version must be 1; got 7"),
        "nan-scores": (rewrite(lambda a: a["cumulative_scores"].__setitem__(0, np.nan)),
                       "cumulative_scores must hold finite real numbers"),
        "mask-2d": (rewrite(lambda a: a.update(node_mask=a["node_mask"][None])), "must be one value per node"),
    }


@pytest.mark.parametrize("name", sorted(_prune_mutants()))
def test_a_damaged_prune_result_is_one_line(run, traced, tmp_path: Path, name: str) -> None:
    """cluster --prune crashed with EOFError / BadZipFile / JSONDecodeError / IndexError tracebacks, named no
    file for a negative edge, and accepted node_threshold 5.0 (export then failed on the supernodes file)."""
    mutate, message = _prune_mutants()[name]
    prune = tmp_path / "p.npz"
    assert run("prune", str(traced["graph"]), "--out", str(prune))[0] == 0
    mutate(prune)
    status, _, err = run("cluster", str(traced["graph"]), "--prune", str(prune), "--out", str(tmp_path / "s.json"))
    assert status == 2 and not (tmp_path / "s.json").exists()
    one_line_error(err, "cluster", message)


def test_a_float16_activation_run_is_usable_as_coactivation(run, traced, tmp_path: Path) -> None:
    """`workbench activations --value-dtype float16` (documented) gave "--Output dtype not compatible with
    inputs." in cluster: scipy's sparse indexing has no float16."""
    from tests.helpers_models import WORDS
    from tracer.activations import ActivationConfig, collect_activations
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    model = load_model(traced["model"])
    tcs = load_transcoders(traced["plt"], n_layers=3, d_model=model.d_model)
    prompts = [" ".join(WORDS[:3]), " ".join(WORDS[3:7])]
    collect_activations(model, tcs, prompts, tmp_path / "a16",
                        ActivationConfig(feature_layers=(0, 1, 2), value_dtype="float16"), verbose=False)
    status, _, err = run("cluster", str(traced["graph"]), "--transcoders", str(traced["plt"]), "--activations",
                         str(tmp_path / "a16"), "--out", str(tmp_path / "s.json"))
    assert status == 0, err
    assert "coactivation" in json.loads((tmp_path / "s.json").read_text())["similarities"]


def test_an_npz_graph_says_its_transcoders_cannot_be_checked(run, traced, tmp_path: Path, caplog) -> None:
    """An .npz graph records no transcoders: clustering it with another set of the same shape passed in
    silence (a .safetensors graph is refused)."""
    from tracer.graph import Graph

    npz = tmp_path / "g.npz"
    Graph.load(traced["graph"]).save(npz)
    with caplog.at_level("WARNING"):
        status, _, err = run("cluster", str(npz), "--transcoders", str(traced["plt"]), "--out",
                             str(tmp_path / "s.json"))
    assert status == 0, err
    assert any("records no transcoders (an .npz graph)" in r.getMessage() for r in caplog.records)


def test_export_supernodes_onto_the_npz_copy_and_of_another_schema(run, traced, tmp_path: Path) -> None:
    """An .npz graph records no prompt: its own groups were refused as "groups of this graph ('')"; a
    supernodes file of schema 99 was read as this one."""
    from tracer.graph import Graph

    sn = tmp_path / "sn.json"
    assert run("cluster", str(traced["graph"]), "--out", str(sn))[0] == 0
    npz = tmp_path / "g.npz"
    Graph.load(traced["graph"]).save(npz)
    status, _, err = run("export", str(npz), "--supernodes", str(sn), "--out", str(tmp_path / "v"), "--scan", "tiny")
    assert status == 0, err
    sn_npz = tmp_path / "sn_npz.json"  # the other way: groups made on the .npz (no prompt) onto the safetensors
    assert run("cluster", str(npz), "--out", str(sn_npz))[0] == 0
    status, _, err = run("export", str(traced["graph"]), "--supernodes", str(sn_npz), "--out", str(tmp_path / "v3"))
    assert status == 0, err
    doc = json.loads(sn.read_text())
    doc["schema_version"] = 99
    sn.write_text(json.dumps(doc))
    status, _, err = run("export", str(traced["graph"]), "--supernodes", str(sn), "--out", str(tmp_path / "w"))
    assert status == 2 and not (tmp_path / "w").exists()
    one_line_error(err, "export", "--supernodes schema_version must be 1; got 99")
    other = tmp_path / "intervene.json"  # another command's JSON said "got 'None'"
    other.write_text(json.dumps({"schema_version": 1, "model": "m", "interventions": []}))
    status, _, err = run("export", str(traced["graph"]), "--supernodes", str(other), "--out", str(tmp_path / "w"))
    assert status == 2 and not (tmp_path / "w").exists()
    one_line_error(err, "export", "a JSON object without 'supernodes' (keys schema_version, model, interventions)")

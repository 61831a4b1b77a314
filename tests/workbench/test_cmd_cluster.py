"""`workbench cluster` (and `export --supernodes` with its output) through the real CLI entry point."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_models import random_tokens, save_model, save_transcoders, tiny_model, tiny_transcoders
from tests.reference import dense_prune as ref
from tracer.attribution import attribute
from tracer.config import AttributionConfig
from tracer.labels import FeatureLabel, save_labels
from workbench import cli
from workbench.paths import world_dir


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `workbench ARGS...`; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", {k: v for k, v in cli.SUBCOMMANDS.items()
                                             if v in ("workbench.cmd_graphtools", "workbench.cmd_cluster",
                                                      "workbench.cmd_families")})

    def _run(*argv: str) -> tuple[int, str, str]:
        status = cli.main(["--quiet", *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return _run


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Qwen3 with PLT and CLT folders, and a PLT graph traced through it."""
    root = tmp_path_factory.mktemp("cluster")
    loaded = tiny_model("qwen3")
    plt = tiny_transcoders(loaded, "plt", d_transcoder=64)
    graph = attribute(loaded, plt, random_tokens(7), AttributionConfig(verbose=False))
    graph = dataclasses.replace(graph, model_id="")  # no tokenizer lookup
    other = tiny_model("qwen3", num_hidden_layers=2)
    return {"model": save_model(loaded, root / "model"), "plt": save_transcoders(plt, root / "plt"),
            "clt": save_transcoders(tiny_transcoders(loaded, "clt", d_transcoder=64), root / "clt"),
            "two_layer": save_transcoders(tiny_transcoders(other, "plt", d_transcoder=64), root / "plt2"),
            "graph": graph.save(root / "g.safetensors")}


def _one_line_error(err: str, command: str, match: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"workbench {command}: error: "), err
    assert match in lines[0], lines[0]


def test_cluster_writes_the_schema_and_export_puts_the_groups_in_qparams(run, traced, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    save_labels([FeatureLabel(layer=layer, feature=f, label=f"L{layer} thing") for layer in range(3)
                 for f in range(64)], labels)
    out = tmp_path / "supernodes.json"
    status, stdout, err = run("cluster", str(traced["graph"]), "--out", str(out), "--model", str(traced["model"]),
                              "--transcoders", str(traced["plt"]), "--labels", str(labels), "--n-random", "3",
                              "--modes", "frozen", "--budget", "4")
    assert status == 0, err
    assert stdout.startswith(f"clustered {traced['graph']}: ") and stdout.count("\n") == 1
    assert "; similarities edge, virtual -> " in stdout
    doc = json.loads(out.read_text())
    assert 1 <= len(doc["supernodes"]) <= 4
    for group in doc["supernodes"]:
        assert group["label"].endswith("thing") and len(group["members"]) == len(group["node_ids"])
        assert all(m["layer"] == int(i.split("_")[0]) for m, i in zip(group["members"], group["node_ids"]))
    scores = doc["scores"]
    for key in ("pruned", "circuit"):
        assert set(scores[key]) == {"replacement", "completeness"}
    assert scores["compression"] >= 1 and "mass_weighted" in scores["sign_consistency"]
    # sign consistency per supernode link (issue 10 point 3), each end a distinct supernode label or a node id
    links = scores["links"]
    names = {g["label"] for g in doc["supernodes"] if len(g["node_ids"]) > 1}
    assert len(links) == scores["sign_consistency"]["n_links"]
    assert all(0 <= link["sign_consistency"] <= 1 and link["mass"] > 0 for link in links)
    assert all(link["source"] in names or link["target"] in names for link in links)
    if links:
        assert min(link["sign_consistency"] for link in links) == pytest.approx(scores["sign_consistency"]["min"])
    assert set(scores["interventions"]["summary"]) == {"frozen"}
    assert doc["config"]["circuit"]["budget"] == 4 and doc["argv"][:2] == ["--quiet", "cluster"]
    assert doc["run"]["argv"] == doc["argv"] and doc["run"]["options"]["budget"] == 4
    status, _, err = run("export", str(traced["graph"]), "--out", str(tmp_path / "viewer"), "--supernodes", str(out),
                         "--slug", "g", "--scan", "tiny")
    assert status == 0, err
    viewer = json.loads((tmp_path / "viewer" / "g.json").read_text())
    multi = [[g["label"], *g["node_ids"]] for g in doc["supernodes"] if len(g["node_ids"]) > 1]
    assert viewer["qParams"]["supernodes"] == multi
    assert viewer["qParams"]["pinnedIds"] == doc["pinnedIds"]


def test_cluster_without_labels_or_model(run, traced, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(out), "--no-labels", "--similarities", "edge")
    assert status == 0, err
    doc = json.loads(out.read_text())
    assert "interventions" not in doc["scores"] and doc["config"]["clustering"]["similarities"] == ["edge"]


@pytest.mark.parametrize("extra, match", [
    (["--budget", "0"], "--budget must be an integer >= 1"),
    (["--similarities", "edge,cosine"], "similarity name must be one of"),
    (["--min-affinity", "2"], "--min-affinity must be a number in"),
    (["--model", "M"], "--model needs --transcoders"),
    (["--activations", "A"], "--activations needs --transcoders"),
])
def test_bad_flags_exit_2_with_one_line(run, traced, tmp_path: Path, extra: list[str], match: str) -> None:
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), *extra)
    assert status == 2
    _one_line_error(err, "cluster", match)
    assert not (tmp_path / "s.json").exists()


@pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(), reason="no demo world in data/world")
def test_each_groups_ablation_row_is_that_groups() -> None:
    """The check ran the groups in the circuit's chosen_ order and the JSON listed them in the coarse graph's:
    rows carried other groups' numbers under their labels. Each row's predicted margin must be its own group's."""
    import numpy as np

    from analyses.supernodes.config import CircuitConfig, ClusteringConfig, InterventionConfig
    from analyses.supernodes.interventions import predicted_effects
    from tracer.models import load_model, tokenize
    from tracer.transcoders.loaders import load_transcoders
    from workbench.cmd_cluster import analyse_circuit, supernodes_document

    world = world_dir()
    loaded = load_model(world / "model")
    tcs = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    graph = attribute(loaded, tcs, tokenize(loaded, "The capital of the region containing Kolt is"),
                      AttributionConfig(verbose=False))
    inputs = {"loaded": loaded, "transcoders": tcs, "labels": None, "families": None, "prune": None}
    configs = {"circuit": CircuitConfig(budget=5), "clustering": ClusteringConfig(),
               "interventions": InterventionConfig(n_random=1, modes=("frozen",))}
    circuit, check = analyse_circuit(graph, inputs, configs, None, verbose=False)
    doc = supernodes_document(circuit, check, graph)
    sel = graph.active_features[graph.selected_features].tolist()
    node_of = {tuple(k): i for i, k in enumerate(sel)}
    members = [np.array([node_of[(m["layer"], m["pos"], m["feature"])] for m in g["members"]])
               for g in doc["supernodes"]]
    order = [circuit.clustering_.groups_[k].tolist() for k in circuit.chosen_]
    assert order != [m.tolist() for m in members]  # the two orders differ here, so a mix-up would show
    pred = predicted_effects(graph, members)  # (n_logits, n_groups)
    ids = graph.logit_token_ids.tolist()
    margin = pred[0] - pred[ids.index(check.runner_up_token)] if check.runner_up_in_graph else pred[0]
    rows = doc["scores"]["interventions"]["groups"]
    assert [r["label"] for r in rows] == [g["label"] for g in doc["supernodes"]]
    np.testing.assert_allclose([r["predicted_margin"] for r in rows], margin, rtol=1e-9, atol=1e-12)


def test_graph_not_matching_the_transcoders_exits_2(run, traced, tmp_path: Path) -> None:
    out = str(tmp_path / "s.json")
    status, _, err = run("cluster", str(traced["graph"]), "--out", out, "--transcoders", str(traced["two_layer"]))
    assert status == 2
    _one_line_error(err, "cluster", "--transcoders must have the graph's 3 layers; got 2")  # not "the model's"
    # another transcoder set of the same shapes: refused by the id both record, before any work
    status, _, err = run("cluster", str(traced["graph"]), "--out", out, "--transcoders", str(traced["clt"]))
    assert status == 2
    _one_line_error(err, "cluster", "--transcoders must be the graph's transcoders 'tiny-plt-relu'; got "
                    "'tiny-clt-relu'")
    # a graph that records no transcoder set: the kind it records tells, else only the model (activations differ)
    from tracer.graph import Graph

    graph = Graph.load(traced["graph"])
    unnamed = dataclasses.replace(graph, scan="").save(tmp_path / "unnamed.safetensors")
    status, _, err = run("cluster", str(unnamed), "--out", out, "--transcoders", str(traced["clt"]))
    assert status == 2
    _one_line_error(err, "cluster", "--transcoders must be the graph's kind of transcoders (plt); got clt")
    extra = {k: v for k, v in graph.extra.items() if k != "transcoder_kind"}
    anonymous = dataclasses.replace(graph, scan="", extra=extra).save(tmp_path / "anonymous.safetensors")
    status, _, err = run("cluster", str(anonymous), "--out", out, "--transcoders", str(traced["clt"]),
                         "--model", str(traced["model"]))
    assert status == 2
    _one_line_error(err, "cluster", "must reproduce the graph's edges")


def test_empty_graph_exits_2(run, tmp_path: Path) -> None:
    graph = dataclasses.replace(ref.random_graph(0, max_features=0), model_id="")
    assert graph.n_selected == 0
    path = graph.save(tmp_path / "empty.safetensors")
    status, _, err = run("cluster", str(path), "--out", str(tmp_path / "s.json"))
    assert status == 2
    _one_line_error(err, "cluster", "at least one feature node")


def test_bad_families_file_exits_2(run, traced, tmp_path: Path) -> None:
    fam = tmp_path / "families.json"
    fam.write_text(json.dumps({"families": [{"features": [1, 2]}]}))
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), "--families", str(fam))
    assert status == 2
    _one_line_error(err, "cluster", "--families entry 0 must have an integer 'layer' and integer 'features'")
    for families in ([{"layer": 1, "features": [3, 1.5]}], [{"layer": "1", "features": [3]}],
                     [{"layer": 1, "features": [True]}]):  # int() once read them as 1, 1, 1
        fam.write_text(json.dumps({"families": families}))
        status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), "--families",
                             str(fam))
        assert status == 2
        _one_line_error(err, "cluster", "--families entry 0 must have an integer 'layer'")
    from tracer.graph import Graph

    active = Graph.load(traced["graph"]).active_features.tolist()  # (layer, pos, feature) rows
    (l0, _, f0), (l1, _, f1) = active[0], active[-1]
    fam.write_text(json.dumps({"families": [{"layer": l0, "features": [f0, 2]}, {"features": [[l1, f1], [2, 4]]}]}))
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), "--families", str(fam))
    assert status == 0, err
    # families of other transcoders: a layer the graph does not have, or none of the graph's features
    for families, message in (([{"layer": 9, "features": [f0]}], "layer 9, feature"),
                              ([{"layer": 0, "features": [-1]}], "layer 0, feature -1"),
                              ([{"layer": l0, "features": [63 - f for f in range(64) if (l0, 63 - f) not in
                                                           {(a, c) for a, _, c in active}][:3]}],
                               "none of the 3 features")):
        fam.write_text(json.dumps({"families": families}))
        status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "t.json"), "--families",
                             str(fam))
        assert status == 2 and not (tmp_path / "t.json").exists()
        _one_line_error(err, "cluster", message)
    fam.write_text(json.dumps({"families": [{"layer": l0, "features": [f0, 99999]}]}))  # beyond the 64 features
    status, _, err = run("cluster", str(traced["graph"]), "--transcoders", str(traced["plt"]), "--out",
                         str(tmp_path / "t.json"), "--families", str(fam))
    assert status == 2
    _one_line_error(err, "cluster", f"layer {l0}, feature 99999")


def test_labels_of_other_transcoders_and_plots_onto_out_are_refused(run, traced, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    save_labels([FeatureLabel(layer=0, feature=f, label="thing", extra={"scan": "tiny-clt-relu"}) for f in range(64)],
                labels)
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), "--labels", str(labels))
    assert status == 2 and not (tmp_path / "s.json").exists()
    _one_line_error(err, "cluster", "labels must be for the graph's transcoders 'tiny-plt-relu'")
    out = tmp_path / "p.json"
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(out), "--plots", str(out), "--no-labels")
    assert status == 2 and not out.exists()
    _one_line_error(err, "cluster", "--plots must differ from --out")
    # --out as one of the plots: the JSON was overwritten by the SVG while success was reported
    out = tmp_path / "plots" / "supernode_graph.svg"
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(out), "--plots", str(tmp_path / "plots"),
                         "--no-labels")
    assert status == 2 and not out.exists()
    _one_line_error(err, "cluster", "--plots file 'supernode_graph.svg' must differ from --out")


def test_inputs_of_another_set_are_refused_where_the_graph_records_none(run, traced, tmp_path: Path) -> None:
    """An .npz graph records no transcoder set: labels were then accepted for another set even where
    --transcoders named one; and transcoders of the other kind passed when their scans happened to match (the
    graph records its kind)."""
    import shutil

    from tracer.graph import Graph

    arrays = Graph.load(traced["graph"]).save(tmp_path / "g.npz")
    labels = tmp_path / "labels.jsonl"
    save_labels([FeatureLabel(layer=0, feature=f, label="thing", extra={"scan": "tiny-clt-relu"}) for f in range(64)],
                labels)
    status, _, err = run("cluster", str(arrays), "--out", str(tmp_path / "s.json"), "--transcoders",
                         str(traced["plt"]), "--labels", str(labels))
    assert status == 2 and not (tmp_path / "s.json").exists()
    _one_line_error(err, "cluster", "labels must be for the transcoders of --transcoders 'tiny-plt-relu'")
    # export's --scan is the viewer's id (a model id will do), not a transcoder set: labels are not held to it
    status, _, err = run("export", str(arrays), "--out", str(tmp_path / "v"), "--scan", "tiny-model", "--labels",
                         str(labels))
    assert status == 0, err
    renamed = shutil.copytree(traced["clt"], tmp_path / "clt")  # a CLT that calls itself the graph's PLT set
    config = renamed / "config.yaml"
    config.write_text(config.read_text().replace("tiny-clt-relu", "tiny-plt-relu"))
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), "--transcoders",
                         str(renamed), "--no-labels")
    assert status == 2 and not (tmp_path / "s.json").exists()
    _one_line_error(err, "cluster", "--transcoders must be the graph's kind of transcoders (plt); got clt")


def test_cluster_writes_the_supernode_graph_and_dendrogram_plots(run, traced, tmp_path: Path) -> None:
    out, plots = tmp_path / "s.json", tmp_path / "plots"
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(out), "--no-labels", "--plots", str(plots))
    assert status == 0, err
    assert sorted(p.name for p in plots.iterdir()) == ["dendrogram.png", "dendrogram.svg", "supernode_graph.png",
                                                        "supernode_graph.svg"]
    assert (plots / "supernode_graph.svg").read_text().rstrip().endswith("</svg>")
    assert (plots / "dendrogram.png").read_bytes()[:4] == b"\x89PNG"  # (numbering: tests/analyses/test_coarse.py)
    # the plots folder may not be an input, and nothing is written when it is refused
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "t.json"), "--plots",
                         str(traced["graph"]))
    _one_line_error(err, "cluster", "--plots")
    assert status == 2 and not (tmp_path / "t.json").exists()


WORLD = world_dir()


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="no demo world in data/world")
def test_cluster_with_prompts_adds_the_coactivation_similarity(run, tmp_path: Path) -> None:
    from tracer.models import load_model, tokenize
    from tracer.transcoders.loaders import load_transcoders

    loaded = load_model(WORLD / "model")
    tcs = load_transcoders(WORLD / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    graph = attribute(loaded, tcs, tokenize(loaded, "Two days after Friday is"), AttributionConfig(verbose=False))
    path = graph.save(tmp_path / "g.safetensors")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("One day after Monday is Tuesday .\nThe capital of the region containing Kolt is\n\n"
                       "Three months before May is February .\n")
    base = ["cluster", str(path), "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"),
            "--n-random", "2", "--modes", "frozen"]
    status, _, err = run(*base, "--out", str(tmp_path / "with.json"), "--prompts", str(prompts))
    assert status == 0, err
    doc = json.loads((tmp_path / "with.json").read_text())
    assert doc["similarities"] == ["edge", "virtual", "coactivation"]
    assert doc["coactivation"]["n_token_rows"] == 7 + 8 + 7  # one row per word (BOS left out)
    assert doc["roles"]["n_features"] > 0 and doc["roles"]["constraint"] is True and doc["roles"]["min_share"] == 0.5
    steadiness = doc["roles"]["split_half"]  # the roles read on prompts 0 and 2 against those read on prompt 1
    assert steadiness["n_features"] > 0 and 0.0 <= steadiness["agreement"] <= 1.0
    assert sum(c["n"] for c in steadiness["changes"]) <= steadiness["n_features"]
    status, _, err = run(*base, "--out", str(tmp_path / "named.json"), "--prompts", str(prompts), "--no-labels")
    assert status == 0, err
    named = json.loads((tmp_path / "named.json").read_text())["supernodes"]
    groups = [sn["label"] for sn in named if len(sn["members"]) > 1]  # members of a group share a role: it names it
    assert groups and all(label.startswith(("reads ", "predicts ", "mixed")) for label in groups)
    status, _, err = run(*base, "--out", str(tmp_path / "without.json"))
    assert status == 0, err
    without = json.loads((tmp_path / "without.json").read_text())
    assert without["similarities"] == ["edge", "virtual"] and without["role_constraint"] is False
    assert "roles" not in without
    assert doc["role_constraint"] is True
    status, _, err = run("cluster", str(path), "--out", str(tmp_path / "bad.json"), "--transcoders",
                         str(WORLD / "plt"), "--prompts", str(prompts))
    assert status == 2 and not (tmp_path / "bad.json").exists()
    _one_line_error(err, "cluster", "--prompts needs --model and --transcoders")
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("Two days after Zzyzx is\n")
    status, _, err = run(*base, "--out", str(tmp_path / "bad.json"), "--prompts", str(unknown))
    assert status == 2 and not (tmp_path / "bad.json").exists()
    _one_line_error(err, "cluster", "'Zzyzx'")
    status, _, err = run(*base, "--out", str(tmp_path / "unk.json"), "--prompts", str(unknown), "--allow-unk")
    assert status == 0, err
    unk = json.loads((tmp_path / "unk.json").read_text())
    assert unk["coactivation"]["n_token_rows"] == 5 and unk["roles"]["split_half"] is None  # one prompt: no halves
    # the same sample read from a `workbench activations` run gives the same groups
    from tracer.activations import ActivationConfig, collect_activations

    collect_activations(loaded, tcs, [line for line in prompts.read_text().splitlines() if line], tmp_path / "acts",
                        ActivationConfig(feature_layers=(0, 1, 2, 3)))
    status, _, err = run(*base, "--out", str(tmp_path / "store.json"), "--activations", str(tmp_path / "acts"))
    assert status == 0, err
    stored = json.loads((tmp_path / "store.json").read_text())
    assert stored["coactivation"]["n_token_rows"] == doc["coactivation"]["n_token_rows"]
    assert stored["supernodes"] == doc["supernodes"] and stored["similarities"] == doc["similarities"]
    assert stored["roles"] == doc["roles"]  # the run's row tokens are the prompts' (the same roles, the same groups)
    from types import SimpleNamespace

    from tracer.activations import ActivationStore
    from tracer.errors import WorkbenchError
    from workbench.corpus_evidence import store_coactivation

    small = SimpleNamespace(W_U=loaded.W_U[:5], model_id="another model", tokenizer=None, d_vocab=5)
    with pytest.raises(WorkbenchError, match=r"--activations must hold token ids of --model's vocabulary: tokens must "
                                             r"be token ids in \[0, 5\)"):
        store_coactivation(ActivationStore(tmp_path / "acts"), loaded=small)
    context, roles, _ = store_coactivation(ActivationStore(tmp_path / "acts"), loaded=loaded)
    assert roles.transcoder_kind == "plt" and roles.transcoder_source == context.transcoder_source
    from analyses.supernodes.clustering import SupernodeClustering

    other = dataclasses.replace(roles, transcoder_kind=None, transcoder_source=str(WORLD / "clt"))
    with pytest.raises(WorkbenchError, match="roles must be made with the transcoders"):
        SupernodeClustering().fit(graph, transcoders=tcs, roles=other)
    (tmp_path / "not-a-run").mkdir()
    status, _, err = run(*base, "--out", str(tmp_path / "bad.json"), "--activations", str(tmp_path / "not-a-run"))
    assert status == 2 and not (tmp_path / "bad.json").exists()
    _one_line_error(err, "cluster", "activation run must have")
    (tmp_path / "blank.txt").write_text("\n  \n")
    status, _, err = run(*base, "--out", str(tmp_path / "bad.json"), "--prompts", str(tmp_path / "blank.txt"))
    assert status == 2
    _one_line_error(err, "cluster", "prompt file must hold at least one prompt")


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="no demo world in data/world")
def test_cluster_role_flags_reach_the_roles_and_are_recorded(run, tmp_path: Path) -> None:
    """--role-min-share and --no-role-predicts-on-word make the roles (fewer features hold 0.9 of their energy
    anywhere: more of them are 'mixed'); the JSON records both; a share out of range is one line naming its flag."""
    from tracer.models import load_model, tokenize
    from tracer.transcoders.loaders import load_transcoders

    loaded = load_model(WORLD / "model")
    tcs = load_transcoders(WORLD / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    graph = attribute(loaded, tcs, tokenize(loaded, "Two days after Friday is"), AttributionConfig(verbose=False))
    path = graph.save(tmp_path / "g.safetensors")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("One day after Monday is Tuesday .\nThree months before May is February .\n" * 3)
    base = ["cluster", str(path), "--model", str(WORLD / "model"), "--transcoders", str(WORLD / "plt"),
            "--n-random", "1", "--modes", "frozen", "--prompts", str(prompts), "--no-labels"]
    docs = {}
    for name, flags in {"default": [], "strict": ["--role-min-share", "0.9", "--no-role-predicts-on-word"]}.items():
        status, _, err = run(*base, "--out", str(tmp_path / f"{name}.json"), *flags)
        assert status == 0, err
        docs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert docs["default"]["roles"]["min_share"] == 0.5 and docs["default"]["roles"]["predicts_on_word"] is True
    assert docs["strict"]["roles"]["min_share"] == 0.9 and docs["strict"]["roles"]["predicts_on_word"] is False
    assert docs["strict"]["config"]["roles"]["min_share"] == 0.9
    labels = {name: [sn["label"] for sn in doc["supernodes"] if len(sn["members"]) > 1] for name, doc in docs.items()}
    assert not any(" on '" in label for label in labels["strict"])
    assert labels["strict"] != labels["default"]
    status, _, err = run(*base, "--out", str(tmp_path / "bad.json"), "--role-min-share", "0")
    assert status == 2 and not (tmp_path / "bad.json").exists()
    _one_line_error(err, "cluster", "--role-min-share must be > 0")
    no_sample = [a for a in base if a not in ("--prompts", str(prompts))]  # the flag would do nothing: refused
    status, _, err = run(*no_sample, "--out", str(tmp_path / "bad.json"), "--no-role-predicts-on-word")
    assert status == 2 and not (tmp_path / "bad.json").exists()
    _one_line_error(err, "cluster", "--role-predicts-on-word needs a corpus sample to read the roles from")
    status, _, err = run(*no_sample, "--out", str(tmp_path / "plain.json"))
    assert status == 0, err
    assert "roles" not in json.loads((tmp_path / "plain.json").read_text())["config"]  # no roles were read


def test_an_activation_run_of_other_transcoders_is_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tracer.errors import WorkbenchError
    from workbench.corpus_evidence import store_coactivation

    def run_of(layers: list[int], width: int) -> SimpleNamespace:
        return SimpleNamespace(feature_layers=layers, d_transcoder=lambda layer: width, directory=tmp_path,
                               complete=True, n_prompts=1, index={"transcoder_kind": "clt"})

    with pytest.raises(WorkbenchError, match="got layer 4 with 64 features"):
        store_coactivation(run_of([0, 4], 64), n_layers=4, d_transcoder=64)
    with pytest.raises(WorkbenchError, match="got layer 0 with 32 features"):
        store_coactivation(run_of([0], 32), n_layers=4, d_transcoder=64)
    with pytest.raises(WorkbenchError, match="has no feature layers"):
        store_coactivation(run_of([], 64), n_layers=4, d_transcoder=64)
    with pytest.raises(WorkbenchError, match=r"graph's transcoders \(plt\); got a run of clt"):
        store_coactivation(run_of([0], 64), n_layers=4, d_transcoder=64, kind="plt")


def test_families_and_activation_runs_of_other_same_shape_transcoders_are_refused(run, traced,
                                                                                  tmp_path: Path) -> None:
    """Only shapes were compared: a families file or an activation run of another transcoder set of the
    same shape changed the clustering silently. Copies of the same transcoders still pass."""
    import shutil

    from tracer.activations import ActivationConfig, collect_activations
    from tracer.errors import WorkbenchError
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    loaded = tiny_model("qwen3")
    other = save_transcoders(tiny_transcoders(loaded, "plt", d_transcoder=64, seed=5), tmp_path / "other")
    copy = Path(shutil.copytree(traced["plt"], tmp_path / "copy"))
    fam = tmp_path / "families.json"
    status, _, err = run("families", "--transcoders", str(other), "--out", str(fam))
    assert status == 0, err
    base = ("cluster", str(traced["graph"]), "--transcoders", str(traced["plt"]))
    status, _, err = run(*base, "--out", str(tmp_path / "bad.json"), "--families", str(fam))
    assert status == 2 and not (tmp_path / "bad.json").exists()
    _one_line_error(err, "cluster", "--families must be made with the transcoders")
    # without --transcoders: checked against the transcoders the graph records (it once passed unchecked)
    from tracer.graph import Graph

    recorded = dataclasses.replace(Graph.load(traced["graph"]), transcoder_id=str(traced["plt"]))
    recorded_path = recorded.save(tmp_path / "recorded.safetensors")
    status, _, err = run("cluster", str(recorded_path), "--out", str(tmp_path / "bad.json"), "--families", str(fam))
    assert status == 2 and not (tmp_path / "bad.json").exists()
    _one_line_error(err, "cluster", "--families must be made with the transcoders")
    status, _, err = run("families", "--transcoders", str(copy), "--out", str(fam))
    assert status == 0, err
    status, _, err = run(*base, "--out", str(tmp_path / "ok.json"), "--families", str(fam))
    assert status == 0, err
    status, _, err = run("cluster", str(recorded_path), "--out", str(tmp_path / "ok2.json"), "--families", str(fam))
    assert status == 0, err
    model = load_model(traced["model"])
    from tests.helpers_models import WORDS

    prompts = [" ".join(WORDS[:3]), " ".join(WORDS[3:7])]
    collect_activations(model, load_transcoders(other, n_layers=3, d_model=model.d_model), prompts,
                        tmp_path / "acts", ActivationConfig(feature_layers=(0, 1, 2)), verbose=False)
    status, _, err = run(*base, "--out", str(tmp_path / "bad.json"), "--activations", str(tmp_path / "acts"))
    assert status == 2 and not (tmp_path / "bad.json").exists()
    _one_line_error(err, "cluster", "--activations must be made with the transcoders")
    from workbench.manifold_discover_run import families_from_json

    status, _, err = run("families", "--transcoders", str(other), "--out", str(fam))
    assert status == 0, err
    with pytest.raises(WorkbenchError, match="--families must be made with the transcoders"):
        families_from_json(fam, 3, 1, 64, str(traced["plt"]))
    assert families_from_json(fam, 3, 1, 64, str(other))


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
    _one_line_error(err, "export", "must be nodes of the exported (pruned) graph")
    other = dataclasses.replace(attribute(tiny_model("qwen3"), tiny_transcoders(tiny_model("qwen3"), "plt",
                                                                                 d_transcoder=64),
                                          random_tokens(7, seed=3), AttributionConfig(verbose=False)), model_id="")
    other_path = other.save(tmp_path / "other.safetensors")
    status, _, err = run("export", str(other_path), "--supernodes", str(sn), "--out", str(tmp_path / "v3"))
    assert status == 2 and not (tmp_path / "v3").exists()
    _one_line_error(err, "export", "--supernodes must be groups of this graph")


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
    _one_line_error(err, "cluster", "--prune must be a prune result of GRAPH; got one of another graph")
    status, _, err = run("cluster", str(traced["graph"]), "--prune", str(tmp_path / "p.npz"), "--out",
                         str(tmp_path / "s.json"))
    assert status == 0, err  # its own graph, stored as npz or safetensors alike, passes
    doc = json.loads((tmp_path / "s.json").read_text())  # the thresholds of the view clustered, not the defaults
    assert doc["prune"]["node_threshold"] == doc["config"]["clustering"]["node_threshold"] == 0.7
    # a threshold given beside --prune was silently ignored; it must be the file's (as export --prune wants)
    status, _, err = run("cluster", str(traced["graph"]), "--prune", str(tmp_path / "p.npz"), "--out",
                         str(tmp_path / "t.json"), "--node-threshold", "0.8")
    assert status == 2 and not (tmp_path / "t.json").exists()
    _one_line_error(err, "cluster", "--node-threshold must match the --prune file's 0.7; got 0.8")
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
    _one_line_error(err, "export", "--supernodes must be groups of this graph; got groups of another graph in")
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
    _one_line_error(err, "export", "--slug: the default 'g' already names another graph in")
    assert run("export", str(other), "--out", str(tmp_path / "v"), "--slug", "g")[0] == 0  # replaced, as asked
    assert run("export", str(other), "--out", str(tmp_path / "v"), "--slug", "g2")[0] == 0
    assert len(json.loads((tmp_path / "v" / "graph-metadata.json").read_text())["graphs"]) == 4
    # an entry from before fingerprints: its prompt decides; a damaged index is the export's one-line error
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "graph-metadata.json").write_text(json.dumps({"graphs": [{"slug": "g", "prompt": "another prompt"}]}))
    status, _, err = run("export", str(tmp_path / "a" / "g.safetensors"), "--out", str(legacy))
    assert status == 2
    _one_line_error(err, "export", "--slug: the default 'g' already names another graph")
    for text in ('{"graphs": 5}', '{"graphs": null}', '{"graphs": [{"slug": "g", "info": "x"}]}',
                 '{"graphs":' + "[" * 100_000 + "]" * 100_000 + "}"):
        (legacy / "graph-metadata.json").write_text(text)
        status, _, err = run("export", str(tmp_path / "a" / "g.safetensors"), "--out", str(legacy))
        assert status in (0, 2) and "Traceback" not in err, (text[:40], err)
        if status == 2:
            _one_line_error(err, "export", "graph-metadata.json")


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
    _one_line_error(err, "cluster", message)


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
    _one_line_error(err, "export", "--supernodes schema_version must be 1; got 99")
    other = tmp_path / "intervene.json"  # another command's JSON said "got 'None'"
    other.write_text(json.dumps({"schema_version": 1, "model": "m", "interventions": []}))
    status, _, err = run("export", str(traced["graph"]), "--supernodes", str(other), "--out", str(tmp_path / "w"))
    assert status == 2 and not (tmp_path / "w").exists()
    _one_line_error(err, "export", "a JSON object without 'supernodes' (keys schema_version, model, interventions)")


@pytest.mark.parametrize("command, module", [("cluster", "workbench.cmd_cluster"),
                                             ("families", "workbench.cmd_families")])
def test_threads_flag_sets_torch_threads_for_the_run_only(run, traced, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          command: str, module: str) -> None:
    """cluster and families run the model (ablations, co-activation): --threads sets torch's count for the run (it
    was 297 s with torch's default against 16 s with one thread on a loaded machine); torch's default otherwise."""
    import importlib

    import torch

    mod = importlib.import_module(module)
    seen: list[int] = []
    def fake_run(args: object) -> int:
        seen.append(torch.get_num_threads())
        return 0

    monkeypatch.setattr(mod, f"run_{command}", fake_run)
    head = [str(traced["graph"])] if command == "cluster" else ["--transcoders", str(traced["plt"])]
    before = torch.get_num_threads()
    assert run(command, *head, "--out", str(tmp_path / "o.json"), "--threads", "1")[0] == 0
    assert run(command, *head, "--out", str(tmp_path / "o.json"))[0] == 0
    assert seen == [1, before] and torch.get_num_threads() == before
    status, _, err = run(command, *head, "--out", str(tmp_path / "o.json"), "--threads", "0")
    assert status == 2
    _one_line_error(err, command, "--threads must be an integer in [1, ")


def test_families_that_cannot_be_checked_say_so(traced, tmp_path: Path, caplog) -> None:
    """QA pass 30: an .npz graph (no recorded transcoders) with --families and no --transcoders took any
    families file silently (labels and transcoders warn in that case)."""
    from tracer.graph import Graph
    from workbench.cmd_cluster import read_families

    graph = Graph.load(traced["graph"])
    fam = tmp_path / "families.json"
    fam.write_text(json.dumps({"families": [{"layer": 0, "features": [0, 1]}]}))
    with caplog.at_level("WARNING"):
        assert read_families(str(fam), dataclasses.replace(graph, transcoder_id="", scan="")) == {(0, 0): 0, (0, 1): 0}
    assert "cannot be checked against the graph's transcoders; pass --transcoders" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        read_families(str(fam), graph, str(traced["plt"]))
    assert "cannot be checked" not in caplog.text

"""`workbench cluster` (and `export --supernodes` with its output) through the real CLI entry point."""

import dataclasses
import json
from pathlib import Path

import pytest

from tests.helpers_cli import one_line_error
from tests.helpers_models import save_transcoders, tiny_model, tiny_transcoders
from tests.reference import dense_prune as ref
from tracer.attribution import attribute
from tracer.config import AttributionConfig
from tracer.labels import FeatureLabel, save_labels
from workbench.paths import world_dir


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
    one_line_error(err, "cluster", match)
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
    one_line_error(err, "cluster", "--transcoders must have the graph's 3 layers; got 2")  # not "the model's"
    # another transcoder set of the same shapes: refused by the id both record, before any work
    status, _, err = run("cluster", str(traced["graph"]), "--out", out, "--transcoders", str(traced["clt"]))
    assert status == 2
    one_line_error(err, "cluster", "--transcoders must be the graph's transcoders 'tiny-plt-relu'; got "
                    "'tiny-clt-relu'")
    # a graph that records no transcoder set: the kind it records tells, else only the model (activations differ)
    from tracer.graph import Graph

    graph = Graph.load(traced["graph"])
    unnamed = dataclasses.replace(graph, scan="").save(tmp_path / "unnamed.safetensors")
    status, _, err = run("cluster", str(unnamed), "--out", out, "--transcoders", str(traced["clt"]))
    assert status == 2
    one_line_error(err, "cluster", "--transcoders must be the graph's kind of transcoders (plt); got clt")
    extra = {k: v for k, v in graph.extra.items() if k != "transcoder_kind"}
    anonymous = dataclasses.replace(graph, scan="", extra=extra).save(tmp_path / "anonymous.safetensors")
    status, _, err = run("cluster", str(anonymous), "--out", out, "--transcoders", str(traced["clt"]),
                         "--model", str(traced["model"]))
    assert status == 2
    one_line_error(err, "cluster", "must reproduce the graph's edges")


def test_empty_graph_exits_2(run, tmp_path: Path) -> None:
    graph = dataclasses.replace(ref.random_graph(0, max_features=0), model_id="")
    assert graph.n_selected == 0
    path = graph.save(tmp_path / "empty.safetensors")
    status, _, err = run("cluster", str(path), "--out", str(tmp_path / "s.json"))
    assert status == 2
    one_line_error(err, "cluster", "at least one feature node")


def test_bad_families_file_exits_2(run, traced, tmp_path: Path) -> None:
    fam = tmp_path / "families.json"
    fam.write_text(json.dumps({"families": [{"features": [1, 2]}]}))
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), "--families", str(fam))
    assert status == 2
    one_line_error(err, "cluster", "--families entry 0 must have an integer 'layer' and integer 'features'")
    for families in ([{"layer": 1, "features": [3, 1.5]}], [{"layer": "1", "features": [3]}],
                     [{"layer": 1, "features": [True]}]):  # int() once read them as 1, 1, 1
        fam.write_text(json.dumps({"families": families}))
        status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), "--families",
                             str(fam))
        assert status == 2
        one_line_error(err, "cluster", "--families entry 0 must have an integer 'layer'")
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
        one_line_error(err, "cluster", message)
    fam.write_text(json.dumps({"families": [{"layer": l0, "features": [f0, 99999]}]}))  # beyond the 64 features
    status, _, err = run("cluster", str(traced["graph"]), "--transcoders", str(traced["plt"]), "--out",
                         str(tmp_path / "t.json"), "--families", str(fam))
    assert status == 2
    one_line_error(err, "cluster", f"layer {l0}, feature 99999")


def test_labels_of_other_transcoders_and_plots_onto_out_are_refused(run, traced, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    save_labels([FeatureLabel(layer=0, feature=f, label="thing", extra={"scan": "tiny-clt-relu"}) for f in range(64)],
                labels)
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(tmp_path / "s.json"), "--labels", str(labels))
    assert status == 2 and not (tmp_path / "s.json").exists()
    one_line_error(err, "cluster", "labels must be for the graph's transcoders 'tiny-plt-relu'")
    out = tmp_path / "p.json"
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(out), "--plots", str(out), "--no-labels")
    assert status == 2 and not out.exists()
    one_line_error(err, "cluster", "--plots must differ from --out")
    # --out as one of the plots: the JSON was overwritten by the SVG while success was reported
    out = tmp_path / "plots" / "supernode_graph.svg"
    status, _, err = run("cluster", str(traced["graph"]), "--out", str(out), "--plots", str(tmp_path / "plots"),
                         "--no-labels")
    assert status == 2 and not out.exists()
    one_line_error(err, "cluster", "--plots file 'supernode_graph.svg' must differ from --out")


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
    one_line_error(err, "cluster", "labels must be for the transcoders of --transcoders 'tiny-plt-relu'")
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
    one_line_error(err, "cluster", "--transcoders must be the graph's kind of transcoders (plt); got clt")


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
    one_line_error(err, "cluster", "--plots")
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
    one_line_error(err, "cluster", "--prompts needs --model and --transcoders")
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("Two days after Zzyzx is\n")
    status, _, err = run(*base, "--out", str(tmp_path / "bad.json"), "--prompts", str(unknown))
    assert status == 2 and not (tmp_path / "bad.json").exists()
    one_line_error(err, "cluster", "'Zzyzx'")
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
    one_line_error(err, "cluster", "activation run must have")
    (tmp_path / "blank.txt").write_text("\n  \n")
    status, _, err = run(*base, "--out", str(tmp_path / "bad.json"), "--prompts", str(tmp_path / "blank.txt"))
    assert status == 2
    one_line_error(err, "cluster", "prompt file must hold at least one prompt")


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
    one_line_error(err, "cluster", "--role-min-share must be > 0")
    no_sample = [a for a in base if a not in ("--prompts", str(prompts))]  # the flag would do nothing: refused
    status, _, err = run(*no_sample, "--out", str(tmp_path / "bad.json"), "--no-role-predicts-on-word")
    assert status == 2 and not (tmp_path / "bad.json").exists()
    one_line_error(err, "cluster", "--role-predicts-on-word needs a corpus sample to read the roles from")
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
    one_line_error(err, "cluster", "--families must be made with the transcoders")
    # without --transcoders: checked against the transcoders the graph records (it once passed unchecked)
    from tracer.graph import Graph

    recorded = dataclasses.replace(Graph.load(traced["graph"]), transcoder_id=str(traced["plt"]))
    recorded_path = recorded.save(tmp_path / "recorded.safetensors")
    status, _, err = run("cluster", str(recorded_path), "--out", str(tmp_path / "bad.json"), "--families", str(fam))
    assert status == 2 and not (tmp_path / "bad.json").exists()
    one_line_error(err, "cluster", "--families must be made with the transcoders")
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
    one_line_error(err, "cluster", "--activations must be made with the transcoders")
    from workbench.manifold_discover_run import families_from_json

    status, _, err = run("families", "--transcoders", str(other), "--out", str(fam))
    assert status == 0, err
    with pytest.raises(WorkbenchError, match="--families must be made with the transcoders"):
        families_from_json(fam, 3, 1, 64, str(traced["plt"]))
    assert families_from_json(fam, 3, 1, 64, str(other))


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
    one_line_error(err, command, "--threads must be an integer in [1, ")


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

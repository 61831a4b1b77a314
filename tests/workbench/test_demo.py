"""`workbench demo` writes a real report: graphs, labels, scores, viewer JSON."""

import json
import re
from html import escape

import pytest

from tracer.labels import load_labels
from workbench.cli import main
from workbench.paths import world_dir


def test_demo_writes_report_graphs_and_viewer_json(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", "--no-analyses"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["graphs"]
    printed = capsys.readouterr()  # the scores on stdout, --quiet or not (as prune's); "wrote ..." only without it
    assert printed.out.splitlines() == [line for line in printed.out.splitlines() if ": answer " in line]
    assert all(f"{name}: answer" in printed.out for name in summary["graphs"]) and not printed.err
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "replacement" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "<script" not in html  # self-contained
    for name, stats in summary["graphs"].items():
        assert name in html
        assert 0.0 < stats["replacement_score"] <= 1.0 and 0.0 < stats["completeness_score"] <= 1.0
        assert stats["kept_nodes"] > 0 and stats["kept_edges"] > 0
        viewer = json.loads((out / "viewer" / f"demo-{name}.json").read_text())
        assert viewer["nodes"] and viewer["links"]
        assert (out / "graphs" / f"{name}.safetensors").is_file()
        assert "circuit" not in stats
    assert not (out / "supernodes").exists() and not (out / "manifold").exists() and "manifolds" not in summary
    assert "Readable circuit" not in html and "Manifold:" not in html


@pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(), reason="data/world is not built")
def test_a_demo_with_a_bad_prompt_writes_nothing_over_an_earlier_run(tmp_path, capsys):
    """QA pass 30: each prompt's graph was saved as it was traced, so an unknown word in the second prompt left
    the first one's new graph beside the earlier run's report."""
    from tests.helpers_mutants import copy_world

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", "--no-analyses"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    world = copy_world(tmp_path / "world", parts=("model", "clt", "labels_clt.jsonl", "manifest.json"))
    manifest = json.loads((world / "manifest.json").read_text())
    last = list(manifest["demo_prompts"])[-1]
    manifest["demo_prompts"][last] = "The capital of the region containing Zzqxy is"
    (world / "manifest.json").write_text(json.dumps(manifest))
    argv = ["demo", "--world", str(world), "--transcoder", "clt", "--out", str(out), "--quiet", "--no-analyses"]
    assert main(argv) == 2  # the CLT's first graph differs from the earlier PLT one: it must not be written
    assert "'Zzqxy'" in capsys.readouterr().err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_demo_bad_world_exits_2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--world", str(tmp_path / "nowhere"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json" in err[0]


@pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(),
                    reason="no demo world in data/world (build with `workbench world build --out data/world`)")
def test_demo_on_the_shipped_world_answers_and_meets_the_replacement_target(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", "--no-analyses"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "the embedded demo world"
    assert set(summary["graphs"]) >= {"day_arith", "two_hop"}
    html = (out / "report.html").read_text()
    labels = {lab.label for lab in load_labels(world_dir() / "labels_plt.jsonl").values()}
    for name, stats in summary["graphs"].items():
        assert stats["top_prediction"].strip() == stats["expected"], (name, stats)
        assert stats["replacement_score"] >= 0.6, (name, stats)
        viewer = json.loads((out / "viewer" / f"demo-{name}.json").read_text())
        # kept feature nodes carry the world's labels, in the viewer JSON and in the report
        feats = [n for n in viewer["nodes"] if n["feature_type"] == "cross layer transcoder"]
        assert feats and all(n["clerp"] in labels for n in feats)
        assert all(escape(n["clerp"]) in html for n in feats), name


@pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(), reason="data/world is not built")
def test_demo_analyses_readable_circuits_and_the_day_circle(tmp_path, capsys):
    """Each graph's readable circuit (supernodes JSON that `workbench export --supernodes` reads, scores
    next to the pruned graph's, ablations against random groups) and the day circle: k = 1 in calendar
    order, substitution in the fitted subspace beats a random one, and steering Friday along the word
    circle to each day makes the model answer that day + 2."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    html = (out / "report.html").read_text()
    assert "<script" not in html and html.count("<svg") >= 2 + 2 + 3  # graphs, supernode graphs, circles + tuning
    assert re.search(r"tuning of the \d+ live &#x27;day&#x27; features of transcoder layer 1 ", html), "tuning caption"
    for name, stats in summary["graphs"].items():
        circuit = stats["circuit"]
        doc = json.loads((out / "supernodes" / f"{name}.json").read_text())
        assert doc["supernodes"] and doc["scores"]["n_groups"] == circuit["n_groups"] <= 25
        assert circuit["circuit"]["replacement"] >= 0.9 * circuit["pruned"]["replacement"]
        assert circuit["compression"] > 1 and set(circuit["interventions"]) == {"frozen", "free"}
        assert circuit["similarities"] == doc["similarities"] == ["edge", "virtual", "coactivation"]
        assert circuit["role_constraint"] is doc["role_constraint"] is True  # the corpus sample's roles
        assert all(escape(g["label"]) in html for g in doc["supernodes"])
        assert main(["export", stats["graph"], "--supernodes", str(out / "supernodes" / f"{name}.json"),
                     "--format", "neuronpedia", "--out", str(tmp_path / f"np-{name}"), "--quiet"]) == 0
    assert "Readable circuit" in html and "Manifold: days on a circle" in html
    # why the held-out R² is what it is: the held-out points' radius and their R² at the circle's radius
    assert re.search(r"held-out points&#x27; distance from the centre.*?<td class=num>0\.\d\d / 0\.9\d\d</td>", html)
    assert "from signed edge profiles, virtual weights, co-activation over 2000 corpus sentences" in html
    day = summary["manifolds"]["day"]
    for where in ("answer", "word"):
        assert day[where]["frequency"] == 1 and day[where]["order_matches"], (where, day[where])
        assert day[where]["causal"]["fitted_success"] >= 0.9 and day[where]["causal"]["random_success"] <= 0.1
    assert day["answer"]["layer"] == 4 and day["word"]["layer"] == 0
    steer = day["steering_demo_prompt"]
    assert {k: steer[k] for k in ("prompt", "hits", "n")} == {"prompt": "Two days after Friday is", "hits": 7, "n": 7}
    # the report's steering table is in the JSON too: one row per target day, the answer that day + 2
    assert [r["target"] for r in steer["rows"]] == ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                                  "Saturday", "Sunday"]
    assert all(r["answer"].strip() == r["expected"] and 0 < r["probability"] <= 1 for r in steer["rows"])
    assert steer["rows"][0]["expected"] == "Wednesday"
    from workbench.demo import headline

    lines = headline(summary["graphs"], summary["manifolds"])  # what the terminal shows without --quiet
    n_groups = summary["graphs"]["day_arith"]["circuit"]["n_groups"]
    assert len(lines) == 4 and f"in {n_groups} groups" in lines[0] and lines[2].endswith("7/7 answers follow")
    # discovery, at the layer whose day features were tiled: the three cyclic families first, without values
    disc = summary["manifolds"]["discovery"]
    assert disc["feature_layer"] == day["tiling_feature_layer"] == 1
    assert disc["persistence"] is True  # ripser: test extra
    assert {name.split("/")[0] for name in disc["ranking"][:3]} == {"day", "month", "hue"}
    assert disc["cyclic_first"] == 3 and disc["cyclic_above_all_other"]
    assert "Which families are rings?" in html and (out / "manifold" / "discovery.json").is_file()
    # the saved fits are what `workbench manifold steer --fit` reads
    steer = tmp_path / "steer.json"
    assert main(["manifold", "steer", "--fit", str(out / "manifold" / "day_word" / "manifold.json"), "--world",
                 str(world_dir()), "--family", "day", "--out", str(steer), "--quiet"]) == 0
    assert json.loads(steer.read_text())["success_rate"] >= 0.8
    # a demo prompt outside the family's prompt set is steered at its family word all the same
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.demo_analyses import steer_demo_prompt
    from workbench.manifold_world import world_inputs

    loaded = load_model(world_dir() / "model")
    tcs = load_transcoders(world_dir() / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    inputs = world_inputs(loaded, world_dir(), "day", "value", loaded.n_layers)
    kw = {"prompt": "Two days after Friday is", "start": "Friday"}
    found = steer_demo_prompt(loaded, tcs, out / "manifold" / "day_word", inputs, scratch=tmp_path / "a", **kw)
    inputs.records[:] = [r for r in inputs.records if r.prompt != kw["prompt"]]
    rebuilt = steer_demo_prompt(loaded, tcs, out / "manifold" / "day_word", inputs, scratch=tmp_path / "b", **kw)
    assert list(rebuilt.top_token) == list(found.top_token) and rebuilt.value == found.value == 4
    # a tracing-only run into the same folder leaves no supernodes or manifolds of the full run beside it
    (out / "graphs" / "notes.txt").write_text("a file of the user's in a demo folder is kept (it was removed)")
    (out / "mine.txt").write_text("a file of the user's next to the demo folders is kept")
    assert main(["demo", "--out", str(out), "--quiet", "--no-analyses"]) == 0
    assert not (out / "supernodes").exists() and not (out / "manifold").exists()
    assert sorted(p.name for p in (out / "graphs").iterdir()) == sorted(
        [f"{n}.safetensors" for n in summary["graphs"]] + ["notes.txt"])
    assert (out / "mine.txt").is_file() and "circuit" not in json.loads((out / "summary.json").read_text())["graphs"][
        "day_arith"]


@pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(), reason="data/world is not built")
def test_demo_discovery_without_ripser_says_so_instead_of_warning(tmp_path, monkeypatch, caplog):
    """The README's demo command installs no extras: discovery then ranks without persistent H1, and
    the report says so (no warning on a user's first run)."""
    import analyses.manifolds.discovery as discovery
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.demo_analyses import discovery_view

    monkeypatch.setattr(discovery, "ripser_available", lambda: False)
    world = world_dir()
    loaded = load_model(world / "model")
    tcs = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    manifest = json.loads((world / "manifest.json").read_text())
    with caplog.at_level("WARNING"):
        view, stats = discovery_view(loaded, tcs, world, manifest, world / "labels_plt.jsonl", 1, tmp_path,
                                     tmp_path / "scratch")
    assert view is not None and stats["persistence"] is False and "ripser" not in caplog.text
    assert "ripser is not installed" in view.description and all(r.h1 is None for r in view.rows)
    assert {r.name.split("/")[0] for r in view.rows[:3]} == {"day", "month", "hue"}  # still first, without H1


def test_demo_without_a_world_traces_and_clusters_a_random_model(tmp_path, monkeypatch):
    """No demo world installed: the demo says so, traces a small random model, and still builds and checks
    its readable circuit (no manifold or discovery section: there is no family to fit)."""
    import workbench.paths as paths

    monkeypatch.setattr(paths, "world_dir", lambda: tmp_path / "no-world")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "random model (no demo world installed)" and "manifolds" not in summary
    (name, stats), = summary["graphs"].items()
    assert stats["circuit"]["n_groups"] >= 1 and (out / "supernodes" / f"{name}.json").is_file()
    assert stats["circuit"]["similarities"] == ["edge", "virtual"]  # no corpus without a world
    html = (out / "report.html").read_text()
    assert "Readable circuit" in html and "Manifold:" not in html and "Which families are rings?" not in html


def test_demo_threads_default_to_one_and_zero_is_refused(tmp_path, capsys) -> None:
    from workbench.cli import build_parser

    assert build_parser().parse_args(["demo"]).threads == 1  # two threads made it ten times slower under load
    assert main(["demo", "--threads", "0", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "--threads must be an integer in [1, " in err and not (tmp_path / "d").exists()
    assert main(["demo", "--threads", "100000", "--out", str(tmp_path / "d")]) == 2  # crashed torch's pools
    assert "got 100000." in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_cyclic_first_needs_higher_scores_not_an_order_of_ties() -> None:
    """QA pass 30: with every ring score 0 (no ring evidence) the input order made the cyclic families "first"."""
    from types import SimpleNamespace as Row

    from workbench.demo_analyses import cyclic_first

    tied = [Row(score=0.0, cyclic=True), Row(score=0.0, cyclic=True), Row(score=0.0, cyclic=False)]
    assert cyclic_first(tied) is False
    assert cyclic_first([Row(score=0.3, cyclic=True), Row(score=0.1, cyclic=False)]) is True
    assert cyclic_first([Row(score=0.3, cyclic=True), Row(score=None, cyclic=False)]) is None

"""`workbench demo` writes a real report: graphs, labels, scores, viewer JSON."""

import json
from html import escape

import pytest

from tracer.labels import load_labels
from workbench.cli import main
from workbench.paths import world_dir


def test_demo_writes_report_graphs_and_viewer_json(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["graphs"]
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


def test_demo_bad_world_exits_2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--world", str(tmp_path / "nowhere"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json" in err[0]


@pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(),
                    reason="no demo world in data/world (build with `workbench world build --out data/world`)")
def test_demo_on_the_shipped_world_answers_and_meets_the_replacement_target(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
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

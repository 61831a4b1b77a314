"""`workbench manifold fit | steer | discover` end to end on the demo world, and their bad inputs."""

import json
import math
from pathlib import Path

import pytest

from tests.helpers_cli import with_flags
from workbench.cli import main
from workbench.paths import world_dir

WORLD = world_dir()
MODEL, PLT = str(WORLD / "model"), str(WORLD / "plt")
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

pytestmark = pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def day_records(n_per_day: int = 12) -> list[dict]:
    """Day arithmetic prompts at the answer: value = the answer."""
    rows = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]["day_arith"]
    picked: dict[str, list[dict]] = {}
    for r in rows:
        if len(picked.setdefault(r["answer"], [])) < n_per_day:
            picked[r["answer"]].append({"prompt": r["prompt"], "value": r["answer"]})
    return [r for day in DAYS for r in picked[day]]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(scope="module")
def month_fit(tmp_path_factory):
    out = tmp_path_factory.mktemp("month")
    code = main(["manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--world", str(WORLD), "--family",
                 "month", "--layer", "3", "--out", str(out), "--causal-prompts", "6", "--causal-targets", "1"])
    assert code == 0
    return out


def test_fit_on_a_world_family_writes_the_manifold(month_fit):
    rep = json.loads((month_fit / "manifold.json").read_text())
    assert rep["frequency"] == 1 and rep["order_matches"] and rep["layer"] == 3 and rep["position"] == "last"
    assert rep["order"][0] in rep["values"] and sorted(rep["order"]) == sorted(rep["values"])
    assert set(rep["angles"]) == set(rep["values"]) and rep["n_components"] >= 2 and rep["explained_variance"] > 0.9
    assert rep["n_fit"] == 480 and rep["heldout"]["n"] == 48 and rep["heldout"]["r2"] > 0.8
    assert rep["tiling"]["value_coverage"] >= 0.9  # months: 11 of 12 at plt2
    assert rep["tiling"]["feature_layer"] == 2 and "layer" not in rep["tiling"]  # a transcoder layer, named so
    rows = rep["tiling"]["per_feature"]  # each member's tuning (issue 11 point 3; only summaries were written)
    assert [r["feature"] for r in rows] == rep["tiling"]["features"] and len(rows) == rep["tiling"]["n_features"]
    live = [r for r in rows if r["live"]]
    assert live and all(0 <= r["preferred"] < 2 * math.pi and r["width"] > 0 and 0 <= r["peak_value"] < 12
                        for r in live)
    assert rep["angle_rmse"] == rep["coordinate_rmse"] < 0.35  # radians, under the issue's name too
    c = rep["causal"]
    assert c["how"] == "held-out records" and c["n_prompts"] == 6
    assert c["fitted_success"] > 0.8 and c["random_success"] < 0.2 and c["mediates"]
    for name in ("circle.png", "circle.svg", "frequency.png", "tuning.svg", "fit.json"):
        assert (month_fit / name).is_file(), name
    run_rec = rep["run"]  # what made it: the command line and every option, defaults included
    assert run_rec["argv"][:2] == ["manifold", "fit"] and run_rec["options"]["family"] == "month"
    assert run_rec["options"]["causal_prompts"] == 6 and "seed" in run_rec["options"]


def test_steer_moves_prompts_along_the_fitted_circle(month_fit, tmp_path, capsys):
    rows = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]["month_arith"][:3]
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": r["prompt"]} for r in rows])  # values unknown
    out = tmp_path / "steer.json"
    code, _, err = run(capsys, "manifold", "steer", "--fit", str(month_fit / "manifold.json"), "--prompts", prompts,
                       "--out", str(out))
    assert code == 0, err
    rep = json.loads(out.read_text())
    assert rep["n"] == 3 * 11 and rep["n_prompts"] == 3 and rep["success_rate"] >= 0.8
    assert rep["success_rate_ci"][0] <= rep["success_rate"] <= rep["success_rate_ci"][1]
    assert rep["run"]["options"]["fit"] == str(month_fit / "manifold.json")  # which fit it steered with
    assert rep["model"] == rep["fit_model"] == str(Path(MODEL).resolve())
    assert rep["transcoders"] == str(Path(PLT).resolve())  # the fit's, recorded (it was not)


def test_steer_on_another_model_than_the_fit_says_so(month_fit, tmp_path, capsys, caplog):
    """A fit made on one model steered another of the same width with no word about it."""
    import shutil

    rows = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]["month_arith"][:1]
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": r["prompt"]} for r in rows])
    other = shutil.copytree(MODEL, tmp_path / "other_model")
    with caplog.at_level("WARNING"):
        code, _, err = run(capsys, "manifold", "steer", "--fit", str(month_fit / "manifold.json"), "--prompts",
                           prompts, "--model", str(other), "--out", str(tmp_path / "s.json"))
    assert code == 0, err
    assert f"--model {other} is not the model the fit was made on" in caplog.text
    rep = json.loads((tmp_path / "s.json").read_text())
    assert rep["model"] == str(other.resolve()) and rep["fit_model"] == str(Path(MODEL).resolve())
    # a manifold.json that records no model (then --model is needed) steers as before: the check crashed on it
    fit = shutil.copytree(month_fit, tmp_path / "fit")
    doc = json.loads((fit / "manifold.json").read_text())
    del doc["model"]
    (fit / "manifold.json").write_text(json.dumps(doc))
    code, _, err = run(capsys, "manifold", "steer", "--fit", str(fit / "manifold.json"), "--prompts", prompts,
                       "--model", MODEL, "--transcoders", PLT, "--out", str(tmp_path / "t.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "t.json").read_text())["fit_model"] is None


def test_fit_from_a_prompt_file_cross_fits_the_causal_check(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "days.jsonl", day_records(8))
    code, _, err = run(capsys, "manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts,
                       "--values", ",".join(DAYS), "--layer", "2", "--out", str(tmp_path / "fit"),
                       "--causal-prompts", "4", "--causal-targets", "1", "--features", "1,2,3")
    assert code == 0, err
    rep = json.loads((tmp_path / "fit" / "manifold.json").read_text())
    assert rep["frequency"] == 1 and rep["n_fit"] == 56 and rep["causal"]["how"] == "cross-fitted"
    assert rep["tiling"]["features"] == [1, 2, 3] and rep["tiling"]["feature_layer"] == 1
    assert (tmp_path / "fit" / "tuning.svg").is_file()
    # a re-fit without tiling (one feature) leaves no tuning plot of the earlier fit beside its new files
    code, _, err = run(capsys, "manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts,
                       "--values", ",".join(DAYS), "--layer", "2", "--out", str(tmp_path / "fit"),
                       "--causal-prompts", "4", "--causal-targets", "1", "--features", "1", "-q")
    assert code == 0, err
    rep = json.loads((tmp_path / "fit" / "manifold.json").read_text())
    assert rep["tiling"] is None and not any("tuning" in p for p in rep["plots"])
    assert not list((tmp_path / "fit").glob("tuning.*"))


def test_a_fit_whose_causal_check_cannot_run_keeps_its_keys(tmp_path, capsys):
    """One record per value fits, but leaves nothing to check by substitution: causal held only "skipped"."""
    prompts = write_jsonl(tmp_path / "p.jsonl", day_records(1))
    code, _, err = run(capsys, "manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts,
                       "--values", ",".join(DAYS), "--layer", "4", "--out", str(tmp_path / "fit"), "-q")
    assert code == 0, err
    causal = json.loads((tmp_path / "fit" / "manifold.json").read_text())["causal"]
    assert causal["fitted_success"] is None and causal["random_success"] is None
    assert "fewer than 2 points" in causal["skipped"] and "--min-points-per-value 2" in causal["skipped"]


@pytest.mark.parametrize("records,extra,message", [
    ([{"prompt": "Two days after Friday is", "value": "Funday"}], (),
     "prompt 0 (prompt file line 1)'s value must be one of the variable's values"),
    ([{"prompt": "Two days after Friday is", "value": "Friday", "position": 99}]
     + [{**r, "position": -2} for r in day_records(2)],
     ("--position", "value"), "prompt 0 (prompt file line 1): 'position' must be an integer in [-6, 6)"),
    (None, ("--values", "Monday,Tuesday"), "period must be >= 3"),
    (None, ("--layer", "9"), "--layer must be in [0, 4]"),
    (None, ("--layer", "last"), "--layer must be an integer residual layer or 'auto'"),
    (None, ("--min-points-per-value", "20"), "every value needs at least 20 fit record(s); got 2 for 'Monday' and "
                                             "6 more short value(s)"),
    (None, ("--position", "value"), "prompt 0 (prompt file line 1) must have an integer 'position'"),
    (None, ("--frequency", "9"), "--frequency must be <= 3 (half the 7 values)"),
    (None, ("--values", "Monday,,Tuesday,Wednesday"), "--values must be comma-separated entries, none empty"),
    (None, ("--values", "Monday,Tuesday,Monday"), "--values must name each entry once; got 'Monday' twice"),
    (None, ("--features", "1,1,2"), "--features must name each entry once; got '1' twice"),
    (None, ("--features", "1,,2"), "--features must be comma-separated entries, none empty; got '1,,2'"),
    ([r for r in day_records(2) if r["value"] != "Monday"], (), "got 0 for 'Monday'"),
    ([{**r, "split": "held-out"} for r in day_records(2)], (),
     "prompt 0 (prompt file line 1)'s 'split' must be \"train\" or \"heldout\" (or absent: train); got 'held-out'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, records, extra, message):
    prompts = write_jsonl(tmp_path / "p.jsonl", records or day_records(2))
    argv = with_flags(["manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts, "--values",
                       ",".join(DAYS), "--layer", "2", "--out", str(tmp_path / "fit"), "--causal-prompts", "0"], extra)
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "fit" / "activations").exists(), "refused before any activations are collected"


def _damage_arrays(edit):
    """Edit the arrays and record their new digest in fit.json (a consistent hand-edit, which the fit's own
    checks must catch; arrays that do not match their JSON are refused before, tests/analyses/test_qa22_results.py)."""
    def mutate(folder):
        import hashlib

        from safetensors.numpy import load_file, save

        arrays = load_file(str(folder / "fit.safetensors"))
        edit(arrays)
        data = save(arrays)
        (folder / "fit.safetensors").write_bytes(data)
        doc = json.loads((folder / "fit.json").read_text())
        doc["arrays_sha256"] = hashlib.sha256(data).hexdigest()
        (folder / "fit.json").write_text(json.dumps(doc))
    return mutate


def _damage_json(edit):
    def mutate(folder):
        doc = json.loads((folder / "fit.json").read_text())
        edit(doc["result"])
        (folder / "fit.json").write_text(json.dumps(doc))
    return mutate


def _damage_index(edit):
    def mutate(folder):
        doc = json.loads((folder / "manifold.json").read_text())
        edit(doc)
        (folder / "manifold.json").write_text(json.dumps(doc))
    return mutate


def _narrow(arrays):  # a consistent fit in 64 dimensions: fine as a file, wrong for this model
    import numpy as np

    for name in ("result.centre", "result.basis", "result.class_means"):
        a = arrays[name]
        arrays[name] = (a[:64] if name != "result.class_means" else a[:, :64]).copy()
    arrays["result.basis"] = np.linalg.qr(arrays["result.basis"])[0].astype(arrays["result.basis"].dtype)


@pytest.mark.parametrize("mutate,message", [
    (_damage_arrays(lambda a: a["result.basis"].__setitem__((0, 0), float("nan"))), "basis must be finite"),
    (_damage_arrays(lambda a: a.update({"result.coefficients": a["result.coefficients"][:, :1].copy()})),
     "coefficients must have shape"),
    (_damage_json(lambda r: r.update(value_names=r["value_names"][:5])), "value_names must name all 12 values"),
    (_damage_json(lambda r: r.update(period=0)), "period must be an integer >= 2"),
    (_damage_arrays(_narrow), "fitted on this model's residual stream (d_model 128)"),
    (_damage_arrays(lambda a: a["result.basis"].__setitem__(slice(None), 0.0)), "basis must have orthonormal columns"),
    (_damage_index(lambda d: d.update(model=None)), "whose 'model' is None, not a folder path. Pass --model"),
])
def test_steer_refuses_a_damaged_fit(month_fit, tmp_path, capsys, mutate, message):
    """A hand-edited or damaged fit result is refused in one line (these once steered with 5 of 12 value
    names, or failed with numpy's matmul message)."""
    import shutil

    fit = tmp_path / "fit"
    shutil.copytree(month_fit, fit)
    mutate(fit)
    out = tmp_path / "steer.json"
    code, _, err = run(capsys, "manifold", "steer", "--fit", str(fit / "manifold.json"), "--world", str(WORLD),
                       "--family", "month", "--out", str(out), "-q")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_discover_ranks_label_families(tmp_path, capsys, caplog):
    rows = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]["hue_arith"][:60]
    prompts = write_jsonl(tmp_path / "corpus.jsonl", [{"prompt": r["prompt"] + " " + r["answer"]} for r in rows])
    with caplog.at_level("INFO"):
        code, _, err = run(capsys, "manifold", "discover", "--model", MODEL, "--transcoders", PLT, "--prompts",
                           prompts, "--labels", str(WORLD / "labels_plt.jsonl"), "--out", str(tmp_path / "disc"),
                           "--feature-layers", "1,2", "--metric-points", "300", "--curve-iterations", "3",
                           "--irr-n-steps", "300")
    assert code == 0, err
    rep = json.loads((tmp_path / "disc" / "discovery.json").read_text())
    # one summary line per layer (not one line per family: 282 of them at scale), then where it wrote
    lines = [r.getMessage() for r in caplog.records if r.name == "workbench.cmd_manifold"]
    first = rep["feature_layers"]["1"]["ranking"][0]
    assert lines[0].startswith(f"feature layer 1: {len(rep['feature_layers']['1']['ranking'])} families ranked; "
                               f"first {first} (") and lines[-1].endswith("discovery.json"), lines
    assert not [r for r in caplog.records if r.getMessage().startswith("family ")]
    assert rep["families_from"] == "labels (truth)" and set(rep["feature_layers"]) == {"1", "2"}
    assert rep["run"]["options"]["metric_points"] == 300 and rep["run"]["argv"][:2] == ["manifold", "discover"]
    layer1 = rep["feature_layers"]["1"]
    assert "hue/output" in layer1["ranking"] and layer1["families"]["hue/output"]["scored"]
    assert layer1["persistence"]  # ripser is in the test extra
    assert layer1["families"]["hue/output"]["h1_persistence"] is not None
    assert (tmp_path / "disc" / "discovery_feature_layer1.json").is_file()
    plots = {f"{kind}_feature_layer1.{ext}" for kind in ("ranking", "top_family") for ext in ("png", "svg")}
    assert set(layer1["plots"]) == plots
    assert (tmp_path / "disc" / "top_family_feature_layer1.png").read_bytes()[:4] == b"\x89PNG"
    # a re-run leaves no file of the earlier run (a layer-1 plot beside a layer-2-only index), and an
    # interrupted re-run leaves the earlier run whole (it once left an old index over new per-layer files)
    import workbench.manifold_discover_run as run_mod

    argv = ["manifold", "discover", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts, "--labels",
            str(WORLD / "labels_plt.jsonl"), "--out", str(tmp_path / "disc"), "--metric-points", "300",
            "--curve-iterations", "3", "--irr-n-steps", "300", "--persistence", "none"]
    before = {p.name: p.read_bytes() for p in (tmp_path / "disc").iterdir() if p.is_file()}
    calls = []
    real = run_mod.discover_layer

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_mod, "discover_layer", interrupted)
        assert run(capsys, *argv, "--feature-layers", "1,2")[0] == 130
    assert {p.name: p.read_bytes() for p in (tmp_path / "disc").iterdir() if p.is_file()} == before
    # no family scored (all NaN) is an error that leaves the earlier run as it was (it replaced it, exit 0)
    code, _, err = run(capsys, *argv, "--feature-layers", "1", "--min-points", "100000")
    assert code == 2 and "discovery must score at least one family; got none of" in err and "Lower --min-points" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "disc").iterdir() if p.is_file()} == before
    code, _, err = run(capsys, *argv, "--feature-layers", "2")
    assert code == 0, err
    files = {p.name for p in (tmp_path / "disc").iterdir() if p.is_file()}
    assert not any("layer1" in f for f in files) and "discovery_feature_layer2.json" in files, files


def test_discover_finds_its_families_on_the_corpus_without_labels(tmp_path, capsys):
    """The issue's command line (--transcoders --model --prompts --out, no --families / --labels) was refused; it
    now finds the families on the corpus as `workbench families` does, and the cyclic token families rank
    first at feature layer 1."""
    sets = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]
    lines = [r["prompt"] + " " + r["answer"] for k in ("day_arith", "month_arith", "hue_arith", "two_hop")
             for r in sets[k][:100]]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, "manifold", "discover", "--model", MODEL, "--transcoders", PLT, "--prompts",
                       str(corpus), "--out", str(tmp_path / "disc"), "--feature-layers", "1", "--persistence", "none",
                       "-q")
    assert code == 0, err
    rep = json.loads((tmp_path / "disc" / "discovery.json").read_text())
    assert rep["families_from"].startswith("found on the corpus") and set(rep["feature_layers"]) == {"1"}
    top = rep["feature_layers"]["1"]["ranking"][:3]
    for word in ("January, February", "Monday, Tuesday", "red, orange"):
        assert sum(word in name for name in top) == 1, top


def test_discover_reads_the_families_that_workbench_families_writes(tmp_path, capsys):
    """`workbench families` -> `workbench manifold discover --families` (the documented pipeline: its
    output document was once refused as "entry 0 must be an object ...")."""
    rows = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]["hue_arith"][:60]
    text = tmp_path / "corpus.txt"
    text.write_text("".join(r["prompt"] + " " + r["answer"] + "\n" for r in rows))
    code, _, err = run(capsys, "families", "--transcoders", PLT, "--model", MODEL, "--prompts", str(text),
                       "--layer", "1", "--out", str(tmp_path / "families.json"), "-q")
    assert code == 0, err
    argv = ["manifold", "discover", "--model", MODEL, "--transcoders", PLT, "--prompts", str(text),
            "--families", str(tmp_path / "families.json"), "--feature-layers", "1", "--metric-points", "300",
            "--curve-iterations", "3", "--irr-n-steps", "300", "--persistence", "none"]
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "disc"))
    assert code == 0, err
    rep = json.loads((tmp_path / "disc" / "discovery.json").read_text())
    assert set(rep["feature_layers"]) == {"1"} and rep["feature_layers"]["1"]["ranking"]
    bad = tmp_path / "bad.json"
    for families, message in (({"families": [{"layer": 1, "features": [1, 2, 3, 4, 99999]}]}, "got 99999"),
                              ([{"layer": 1, "features": [1, 2, 3, "x", 5]}], "got 'x'"),
                              ([{"layer": 7, "features": [1, 2, 3, 4, 5]}], "layer must be in [0, 3]")):
        bad.write_text(json.dumps(families))
        argv[argv.index("--families") + 1] = str(bad)
        code, _, err = run(capsys, *argv, "--out", str(tmp_path / "bad"))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_discover_persistence_ripser_without_ripser_is_one_line(tmp_path, capsys, monkeypatch):
    import workbench.manifold_discover_run as run_mod

    monkeypatch.setattr(run_mod, "ripser_available", lambda: False)
    prompts = write_jsonl(tmp_path / "corpus.jsonl", [{"prompt": "Two days after Friday is Sunday"}])
    code, _, err = run(capsys, "manifold", "discover", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts,
                       "--labels", str(WORLD / "labels_plt.jsonl"), "--out", str(tmp_path / "disc"),
                       "--persistence", "ripser")
    assert code == 2 and "pip install ripser" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run(capsys, "manifold", "discover", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts,
                       "--labels", str(WORLD / "labels_plt.jsonl"), "--out", str(tmp_path / "disc"),
                       "--persistence", "sometimes")
    assert code == 2 and "persistence must be one of" in err and len(err.strip().splitlines()) == 1, err


def test_fit_with_cross_layer_transcoders_tiles_their_own_family_features(tmp_path, capsys):
    """--world takes the family's features from the labels of the transcoders given (labels_clt for a
    CLT), not the PLT's feature ids (which name other features of a CLT layer)."""
    from workbench.manifold_world import family_features

    out = tmp_path / "clt"
    assert main(["manifold", "fit", "--model", MODEL, "--transcoders", str(WORLD / "clt"), "--world", str(WORLD),
                 "--family", "day", "--layer", "4", "--out", str(out), "--causal-prompts", "0", "--quiet"]) == 0
    tiling = json.loads((out / "manifold.json").read_text())["tiling"]
    clt = family_features(WORLD / "labels_clt.jsonl", "day", 4, "output")[3]
    plt = family_features(WORLD / "labels_plt.jsonl", "day", 4, "output")[3]
    assert clt != plt and tiling["feature_layer"] == 3 and tiling["features"] == clt
    assert tiling["n_live"] == len(clt)  # the CLT's day features fire at the answer


def test_fit_layer_auto_scans_the_residual_layers_on_fit_prompts(tmp_path, capsys):
    """--layer auto fits every residual layer on the training split and keeps the largest between-class
    share: for the months that is the last layer, L4 (the world scorer's headline too)."""
    out = tmp_path / "auto"
    code, _, err = run(capsys, "manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--world", str(WORLD),
                       "--family", "month", "--layer", "auto", "--out", str(out), "--causal-prompts", "0")
    assert code == 0, err
    rep = json.loads((out / "manifold.json").read_text())
    scan = rep["layer_scan"]
    assert [r["layer"] for r in scan] == [0, 1, 2, 3, 4]
    assert "error" in scan[0]  # L0 at the answer position is the token "is": it does not vary with the month
    fitted = [r for r in scan if "error" not in r]
    best = max(fitted, key=lambda r: r["between_class_fraction"])
    assert rep["layer"] == best["layer"] == 4 and rep["frequency"] == 1 and rep["order_matches"]
    assert abs(rep["between_class_fraction"] - best["between_class_fraction"]) < 1e-12


def _strict_json(path):
    """The file parsed by a strict JSON reader (NaN / Infinity are not JSON)."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_discover_writes_strict_json_and_checks_layers(tmp_path, capsys):
    """raw_score is NaN without --raw-cloud-metrics: it was written as a bare NaN, which JSON parsers refuse."""
    rows = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]["hue_arith"][:40]
    prompts = write_jsonl(tmp_path / "corpus.jsonl", [{"prompt": r["prompt"] + " " + r["answer"]} for r in rows])
    argv = ["manifold", "discover", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts, "--labels",
            str(WORLD / "labels_plt.jsonl"), "--metric-points", "300", "--curve-iterations", "3", "--irr-n-steps",
            "300", "--persistence", "none"]
    code, _, err = run(capsys, *argv, "--feature-layers", "1", "--out", str(tmp_path / "disc"))
    assert code == 0, err
    rep = _strict_json(tmp_path / "disc" / "discovery.json")
    assert any(f["raw_score"] is None for f in rep["feature_layers"]["1"]["families"].values())
    range_error = "--feature-layers must be comma-separated transcoder layers in [0, 3]"
    for layers, want in (("4", range_error), ("-1", range_error), ("x", "must be comma-separated integers"),
                         (",", "none empty"), ("1,,2", "none empty"), ("1,1", "must name each entry once")):
        code, _, err = run(capsys, *argv, "--feature-layers", layers, "--out", str(tmp_path / "bad"))
        assert code == 2 and want in err, (layers, err)
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    code, _, err = run(capsys, *argv, "--feature-layers", "1", "--out", str(WORLD / "model" / "disc"))
    assert code == 2 and "--out must not" in err and not (WORLD / "model" / "disc").exists(), err
    clt_labels = [str(WORLD / "labels_clt.jsonl") if a.endswith("labels_plt.jsonl") else a for a in argv]
    code, _, err = run(capsys, *clt_labels, "--out", str(tmp_path / "other"))  # the CLT's labels, PLT transcoders
    assert code == 2 and "labels must be for the transcoders of --transcoders" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "other").exists()


def test_a_failed_fit_writes_nothing_and_leaves_an_earlier_fit_whole(month_fit, tmp_path, capsys):
    import shutil

    earlier = tmp_path / "earlier"
    shutil.copytree(month_fit, earlier, ignore=shutil.ignore_patterns("activations"))
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    base = ["manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--world", str(WORLD), "--family", "day",
            "--layer", "1", "--position", "value", "--causal-prompts", "0"]
    for out in (earlier, tmp_path / "new"):
        code, _, err = run(capsys, *base, "--features", "9999", "--out", str(out))
        assert code == 2 and "--features must be in [0, 512) for transcoder layer 0; got 9999" in err, err
    code, _, err = run(capsys, *base, "--values", ",".join(DAYS), "--out", str(earlier))  # was ignored
    assert code == 2 and "--values is for --prompts; got --values 'Monday," in err, err
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
    assert not (tmp_path / "new").exists()
    # a fit that fails after the activations are collected (the answer position of the embedding holds
    # the same token in every prompt: no circle) leaves the earlier fit whole too
    failing = with_flags(base, ["--layer", "0", "--position", "last"])
    code, _, err = run(capsys, *failing, "--out", str(earlier))
    assert code == 2 and "class means must span" in err, err
    assert {p.name: p.read_bytes() for p in earlier.iterdir() if p.name != "activations"} == before
    code, _, err = run(capsys, *base, "--out", str(WORLD / "plt" / "fit"))
    assert code == 2 and "--out must not" in err and not (WORLD / "plt" / "fit").exists(), err


def test_steer_names_what_a_wrong_fit_file_is(month_fit, tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text('{"r2": 0.9}')
    for path, what in ((month_fit / "fit.json", "which is a fit result (pass the manifold.json next to it)"),
                       (other, "which is JSON without a 'fit_file'")):
        code, _, err = run(capsys, "manifold", "steer", "--fit", str(path), "--world", str(WORLD), "--family",
                           "month", "--out", str(tmp_path / "s.json"))
        assert code == 2 and what in err and len(err.strip().splitlines()) == 1, err


def test_steer_refuses_another_family_and_its_own_inputs_as_output(month_fit, tmp_path, capsys):
    fit = str(month_fit / "manifold.json")
    before = (month_fit / "manifold.json").read_bytes()
    code, _, err = run(capsys, "manifold", "steer", "--fit", fit, "--world", str(WORLD), "--family", "day", "--out",
                       str(tmp_path / "s.json"))
    assert code == 2 and "--family must be the fitted variable; got 'day'" in err, err
    for out in (month_fit / "manifold.json", month_fit / "fit.json"):
        code, _, err = run(capsys, "manifold", "steer", "--fit", fit, "--world", str(WORLD), "--family", "month",
                           "--out", str(out))
        assert code == 2 and "--out must not" in err and len(err.strip().splitlines()) == 1, err
    assert (month_fit / "manifold.json").read_bytes() == before and not (tmp_path / "s.json").exists()


def test_short_value_names_with_answers_in_every_record(tmp_path, capsys):
    """--values Mon,...,Sun (not tokens of the model) with each record's own 'answers' was refused: the
    value names were made answer tokens before any record was read, even when no record needed them."""
    short = [d[:3] for d in DAYS]
    records = [{"prompt": r["prompt"], "value": r["value"][:3], "answers": DAYS} for r in day_records(4)]
    prompts = write_jsonl(tmp_path / "days.jsonl", records)
    argv = ["manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts, "--values",
            ",".join(short), "--layer", "4", "--causal-prompts", "2", "--causal-targets", "1"]
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "fit"))
    assert code == 0, err
    rep = json.loads((tmp_path / "fit" / "manifold.json").read_text())
    assert rep["values"] == short and rep["frequency"] == 1 and rep["causal"]["n_prompts"] == 2
    assert rep["causal"]["answer_tokens"] == {s: [d] for s, d in zip(short, DAYS)}  # what the check compared with
    records[0].pop("answers")  # a record that needs the value names as answers: refused by name
    prompts = write_jsonl(tmp_path / "days2.jsonl", records)
    code, _, err = run(capsys, *argv[:7], prompts, *argv[8:], "--out", str(tmp_path / "fit2"))
    assert code == 2 and "value 'Mon' must continue the prompt as one known token" in err, err


def test_a_position_that_misses_the_value_word_is_warned_about(tmp_path, capsys, caplog):
    days = ("Monday", "Tuesday", "Wednesday", "Thursday")
    records = [{"prompt": f"{n} days after {d} is", "value": d, "position": 4}
               for d in days for n in ("Two", "Three", "Four", "Five")]
    for name, recs in (("good", records), ("off", [{**r, "position": 2} if k == 5 else r
                                                   for k, r in enumerate(records)])):
        caplog.clear()
        with caplog.at_level("WARNING", logger="workbench.manifold_fit_run"):
            code, _, err = run(capsys, "manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts",
                               write_jsonl(tmp_path / f"{name}.jsonl", recs), "--values", ",".join(days),
                               "--position", "value", "--layer", "0", "--causal-prompts", "0",
                               "--out", str(tmp_path / name))
        assert code == 0, err
        warned = "1 of 16 prompt records have a token other than their value's word at 'position' (prompt 5: " \
                 "a token of 'days' for 'Tuesday')"
        assert (warned in caplog.text) == (name == "off"), caplog.text
    # steer checks its records' positions as fit does (it did not)
    offsets = {"Two": 2, "Three": 3, "Four": 4, "Five": 5}
    off = [{**r, "position": 2 if k == 5 else 4,
            "answers": [DAYS[(DAYS.index(d) + offsets[str(r["prompt"]).split()[0]]) % 7] for d in days]}
           for k, r in enumerate(records)]
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.manifold_fit_run"):
        code, _, err = run(capsys, "manifold", "steer", "--fit", str(tmp_path / "good" / "manifold.json"), "--model",
                           MODEL, "--transcoders", PLT, "--prompts", write_jsonl(tmp_path / "steer.jsonl", off),
                           "--out", str(tmp_path / "steer.json"), "--quiet")
    assert code == 0, err
    assert warned in caplog.text, caplog.text


def test_fit_keeps_a_users_activation_run_and_replaces_only_its_own_cache(month_fit, tmp_path, capsys, caplog):
    """A `workbench activations` run at OUT/activations was deleted (a warning, exit 0) and replaced by the fit's
    own points: the fit may replace only a cache it made itself."""
    assert (month_fit / "activations" / "workbench-cache.json").is_file()  # the fit's own cache is marked
    out = tmp_path / "fit"
    prompts = tmp_path / "corpus.txt"
    prompts.write_text("Two days after Friday is\nTwo days after Monday is\n")
    code, _, err = run(capsys, "activations", "--model", MODEL, "--transcoders", PLT, "--prompts", str(prompts),
                       "--out", str(out / "activations"), "--quiet")
    assert code == 0, err
    index = (out / "activations" / "index.json").read_bytes()
    records = write_jsonl(tmp_path / "days.jsonl", day_records(2))
    argv = ["manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts", records, "--values",
            ",".join(DAYS), "--layer", "2", "--out", str(out), "--causal-prompts", "2", "--causal-targets", "1",
            "--quiet"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert ("holds an activation run of other prompts or settings without the mark of a manifold command's cache "
            "(workbench-cache.json: a run of `workbench activations`, or a cache from before the mark), so it is "
            "kept. Move or delete it, or choose another --out.") in err
    assert (out / "activations" / "index.json").read_bytes() == index and not (out / "manifold.json").exists()
    (out / "activations").rename(tmp_path / "mine")  # moved away as told: the fit makes its own cache
    assert run(capsys, *argv)[0] == 0 and (out / "activations" / "workbench-cache.json").is_file()
    other = write_jsonl(tmp_path / "days3.jsonl", day_records(3))
    with caplog.at_level("WARNING"):
        code, _, err = run(capsys, *[other if a == records else a for a in argv])
    assert code == 0, err
    assert any("replacing the stale activation run" in r.getMessage() for r in caplog.records)


def test_a_refused_prompt_leaves_no_empty_out_folder(tmp_path, capsys):
    """A prompt refused while collecting (a word the tokenizer does not know) left an empty --out behind."""
    records = day_records(3)
    records[5] = {**records[5], "prompt": records[5]["prompt"].replace("days", "zorbles")}
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    out = tmp_path / "new" / "fit"
    code, _, err = run(capsys, "manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts,
                       "--values", ",".join(DAYS), "--layer", "3", "--out", str(out), "-q")
    assert code == 2 and "zorbles" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # '..' in --out: mkdir made 'kept/new' on the way and it stayed behind
    code, _, err = run(capsys, "manifold", "fit", "--model", MODEL, "--transcoders", PLT, "--prompts", prompts,
                       "--values", ",".join(DAYS), "--layer", "3", "--out", str(tmp_path / "kept/new/../x"), "-q")
    assert code == 2 and list((tmp_path / "kept").iterdir()) == [], err

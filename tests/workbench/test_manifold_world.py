"""The shipped demo world's months lie on a k = 1 circle in calendar order, and substituting or steering
along it moves the answer (a small, fast subset of `python -m workbench.manifold_world`)."""

import json
import re

import numpy as np
import pytest

from workbench.paths import world_dir

shipped_world = pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(),
                                   reason="data/world is not built (workbench world build --out data/world)")


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.manifold_points import collect_points, prompt_records
    from workbench.manifold_world import world_family

    world = world_dir()
    manifest = json.loads((world / "manifest.json").read_text())
    loaded = load_model(world / "model", backend="auto")
    tcs = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    fam, rows = world_family(loaded, world, manifest, "month", tcs.n_layers)
    pts = collect_points(loaded, tcs, prompt_records(rows), tmp_path_factory.mktemp("acts"),
                         residual_layers=range(tcs.n_layers + 1))
    return loaded, tcs, fam, pts


@shipped_world
def test_points_come_from_the_activation_store(month):
    import torch

    from tracer.models.forward import run_with_cache
    from tracer.replacement import encode

    loaded, tcs, fam, pts = month
    assert pts.n_prompts == 528 and fam.heldout.sum() == 48
    i = 7
    tokens = pts.records[i]["tokens"]
    cache = run_with_cache(loaded, torch.tensor(tokens))
    v = int(fam.positions["value"][i])
    np.testing.assert_allclose(pts.residual(2, fam.positions["value"])[i], cache.resid_pre[2, v].numpy(), atol=1e-4)
    acts = encode(tcs.layers[1], cache.mlp_input[1]).numpy()  # (n_pos, d_tc)
    np.testing.assert_allclose(pts.activations(1, fam.positions["last"])[i].toarray()[0], acts[-1], atol=1e-4)
    feats = fam.features["output"][2]
    rec = pts.reconstruction(tcs, 2, feats, fam.positions["last"])[i]
    W = tcs.layers[2].decoder_rows(torch.tensor(feats), torch.float32).numpy()  # (n_f, d_model)
    np.testing.assert_allclose(rec, encode(tcs.layers[2], cache.mlp_input[2]).numpy()[-1, feats] @ W, atol=1e-4)
    # answers[position][i, v']: the answer when the variable there is v' (the true value gives the true answer)
    for key, values in (("value", fam.start), ("last", fam.answer)):
        assert np.array_equal(fam.answers[key][np.arange(528), values], fam.answers["last"][np.arange(528), fam.answer])


@shipped_world
def test_month_circle_held_out_both_ways_and_on_the_real_model(month):
    from workbench.manifold_scoring import FitSpec, cases_for, crossfit, model_heldout, real_model_scores

    loaded, tcs, fam, pts = month
    X = pts.residual(3, fam.positions["last"])
    spec = FitSpec(period=12, names=fam.names, layer=3, position="last", source="residual")
    held = model_heldout(spec, X, fam.answer, fam.heldout)
    cross = crossfit(spec, X, fam.answer, 5)
    fit = held.fits[0]
    assert fit.frequency == 1 and fit.order_matches_values() and fit.layer == 3
    assert held.scores["n"] == 48 and cross.scores["n"] == 528 and cross.scores["frequencies"] == [1] * 5
    for s in (held.scores, cross.scores):
        assert s["r2"] > 0.9 and s["angle_rmse"] < 0.35 and s["r2_ci"][0] <= s["r2"] <= s["r2_ci"][1]
    tokens = [r["tokens"] for r in pts.records]
    cases = cases_for(tokens, fam.positions["last"], fam.answer, fam.answers["last"], X, 1)
    use = np.zeros(len(tokens), bool)
    use[::66] = True  # 8 prompts
    rep = real_model_scores(loaded, tcs, cross, cases, use=use)
    assert rep["n_prompts"] == 8 and rep["fitted_success"] >= 0.85 and rep["random_success"] <= 0.15
    assert rep["steering_success"] >= 0.85 and rep["mediates"]


@shipped_world
def test_family_word_circle_lives_in_the_embedding_only(month):
    from workbench.manifold_scoring import FitSpec, cases_for, crossfit, real_model_scores

    loaded, tcs, fam, pts = month
    tokens = [r["tokens"] for r in pts.records]
    use = np.zeros(len(tokens), bool)
    use[3::88] = True  # 6 prompts
    out = {}
    for L in (0, 2):
        X = pts.residual(L, fam.positions["value"])
        spec = FitSpec(period=12, names=fam.names, layer=L, position="value", source="residual")
        cross = crossfit(spec, X, fam.start, 5)
        cases = cases_for(tokens, fam.positions["value"], fam.start, fam.answers["value"], X, 1)
        out[L] = real_model_scores(loaded, tcs, cross, cases, use=use)
    assert out[0]["fitted_success"] >= 0.8 and out[0]["steering_success"] >= 0.8 and out[0]["mediates"]
    assert out[2]["full_success"] <= 0.2 and not out[2]["mediates"]  # attention read the word at layer 0


@shipped_world
def test_the_scoring_takes_the_family_features_from_the_truth_by_default() -> None:
    """The scoring command names a family's features by the world's per-feature truth (the labels are
    heuristic); the hues of PLT layer 0 have 12 output-side features there, 10 by their labels."""
    from tracer.models import load_model
    from workbench.manifold_world import WorldScoreConfig, world_family

    world = world_dir()
    manifest = json.loads((world / "manifest.json").read_text())
    truth = [json.loads(line) for line in (world / "feature_truth_plt.jsonl").read_text().splitlines() if line]
    want = sorted(r["feature"] for r in truth if r["layer"] == 0 and r["family"] == "hue" and r["side"] == "output")
    assert WorldScoreConfig().family_source == "truth"
    loaded = load_model(world / "model")
    by_truth, _ = world_family(loaded, world, manifest, "hue", 4)  # the default, as the scoring's, the demo's
    by_labels, _ = world_family(loaded, world, manifest, "hue", 4, source="labels")
    assert by_truth.features["output"][0] == want and len(want) == 12 and len(by_labels.features["output"][0]) == 10
    with pytest.raises(ValueError, match="family_source must be one of"):
        WorldScoreConfig(family_source="guess")


@shipped_world
def test_a_world_without_its_truth_is_one_clear_error(tmp_path) -> None:
    from tracer.errors import WorkbenchError
    from tracer.models import load_model
    from workbench.manifold_world import world_family

    world = world_dir()
    manifest = json.loads((world / "manifest.json").read_text())
    with pytest.raises(WorkbenchError, match="--world must hold its per-feature truth.*--family-source labels"):
        world_family(load_model(world / "model"), tmp_path, manifest, "hue", 4)


@shipped_world
@pytest.mark.parametrize("extra, message", [
    (["--map-layer", "5"], "--map-layer must be a PLT layer in [0, 3]; got 5"),
    (["--map-layer", "-1"], "--map-layer must be a PLT layer in [0, 3]; got -1"),
    (["--discovery", "NOTJSON"], "--discovery must be a readable discovery.json"),
    (["--discovery", "OTHERJSON"], "--discovery must be a discovery.json of `workbench manifold discover`"),
])
def test_bad_map_layer_and_discovery_files_are_refused_before_any_fit(tmp_path, extra, message) -> None:
    """QA pass 30: --map-layer 5 failed after every fit (IndexError), -1 read the last layer, and a discovery
    file that was not one ended in KeyError / JSONDecodeError."""
    from tracer.errors import WorkbenchError
    from workbench.manifold_world import main

    (tmp_path / "NOTJSON").write_text("not json")
    (tmp_path / "OTHERJSON").write_text('{"x": 1}')
    argv = [str(tmp_path / x) if x in ("NOTJSON", "OTHERJSON") else x for x in extra]
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        main(["--out", str(tmp_path / "out"), "--families", "day", "--no-causal", *argv])
    assert not (tmp_path / "out").exists()


def test_points_drawn_towards_the_centre_show_in_the_radius_ratio_not_in_the_angle() -> None:
    """The days' model-held-out miss (R² 0.89) is the points' radius: the diagnostics must tell a shrunk circle
    (right angles, smaller radius) apart from scattered angles."""
    from tests.analyses.manifolds.planted import planted_curve
    from workbench.manifold_scoring import FitSpec, crossfit, model_heldout

    X, y, _ = planted_curve(period=7, n_per_value=24, noise=0.05, seed=3)
    held = np.arange(len(y)) % 4 == 0
    centre = np.stack([X[~held & (y == v)].mean(0) for v in range(7)]).mean(0)  # (d,)
    spec = FitSpec(period=7, names=[str(v) for v in range(7)], layer=0, position="last", source="planted")
    for shrink in (1.0, 0.6):
        Xs = X.copy()
        Xs[held] = centre + shrink * (X[held] - centre)
        s = model_heldout(spec, Xs, y, held).scores
        assert abs(s["radius_ratio"] - shrink) < 0.03 and s["radius_ratio_ci"][0] <= s["radius_ratio"]
        assert s["r2_radius_matched"] > 0.98 and s["angle_rmse"] < 0.1, s
        assert s["r2_radius_matched_ci"][0] <= s["r2_radius_matched"] <= s["r2_radius_matched_ci"][1]
        assert (s["r2"] > 0.98) == (shrink == 1.0), s  # a shrunk circle loses R², not its angles
    cross = crossfit(spec, X, y, 5).scores
    assert abs(cross["radius_ratio"] - 1) < 0.02 and cross["r2_radius_matched"] > 0.98


def _truth_line(layer: int, feature: int, side: str, family: str | None) -> str:
    return json.dumps({"layer": layer, "feature": feature, "side": side, "family": family, "value": None,
                       "top_logit": None, "coverage": 0.9, "selectivity": None, "n_fires": 10})


def test_discovery_scores_the_truth_s_families_by_side_and_refuses_a_truth_of_other_transcoders(tmp_path) -> None:
    from types import SimpleNamespace

    from tracer.errors import WorkbenchError
    from workbench.manifold_world_discovery import families_from_truth, world_families

    rows = [_truth_line(1, f, "output", "day") for f in (9, 3, 5)] + [_truth_line(1, 7, "input", "day"),
                                                                       _truth_line(1, 8, "context", None),
                                                                       _truth_line(0, 2, "output", "city")]
    (tmp_path / "feature_truth_plt.jsonl").write_text("\n".join(rows) + "\n")
    assert families_from_truth(tmp_path / "feature_truth_plt.jsonl", 1) == {
        0: {"city/output": [2]}, 1: {"day/input": [7], "day/output": [3, 5, 9]}}
    assert families_from_truth(tmp_path / "feature_truth_plt.jsonl", 2) == {0: {}, 1: {"day/output": [3, 5, 9]}}
    assert world_families(tmp_path, "truth", 3, SimpleNamespace(n_layers=2, d_transcoder=16)) == {
        0: {}, 1: {"day/output": [3, 5, 9]}}
    with pytest.raises(WorkbenchError, match="must describe its PLT transcoders; got feature 9 of layer 1"):
        world_families(tmp_path, "truth", 3, SimpleNamespace(n_layers=2, d_transcoder=8))
    with pytest.raises(WorkbenchError, match="feature_truth_plt.jsonl"):
        world_families(tmp_path / "nowhere", "truth", 3, SimpleNamespace(n_layers=2, d_transcoder=16))


def test_held_out_scores_of_points_that_coincide_are_undefined_not_minus_1e31() -> None:
    """QA 2026-12-04: a world whose month input features never fire on the unseen prompts scored those points (all
    one point) with R² -1.4e31; the R², its interval and the radius-matched R² are undefined (null) instead."""
    from workbench.manifold_scoring import summarize
    from workbench.scoring.bootstrap import interval

    n = 12
    scores = {"res2": np.full(n, 2.0), "tot2": np.full(n, 1e-33), "err2": np.full(n, 0.5), "correct": np.zeros(n),
              "radius_ratio": np.full(n, 0.9), "res2_matched": np.full(n, 2.0), "tot2_matched": np.zeros(n)}
    got = summarize(scores)
    assert np.isnan(got["r2"]) and all(np.isnan(got["r2_ci"])) and np.isnan(got["r2_radius_matched"])
    assert got["angle_rmse"] == pytest.approx(np.sqrt(0.5)) and got["n"] == n
    assert interval(np.array([np.nan, np.inf, 1.0, 3.0])) == [pytest.approx(1.05), pytest.approx(2.95)]
    assert all(np.isnan(interval(np.full(4, np.nan))))


def test_the_report_says_how_well_the_model_answers_the_prompts_it_is_scored_on() -> None:
    from workbench.manifold_world import model_accuracy

    manifest = json.loads((world_dir() / "manifest.json").read_text())
    assert model_accuracy(manifest, "day") == {"train": 1.0, "heldout": pytest.approx(0.9643)}
    assert model_accuracy(manifest, "hue")["heldout"] == 1.0
    assert model_accuracy({}, "day") == {"train": None, "heldout": None}  # a manifest without the build's metrics

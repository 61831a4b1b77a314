"""The shipped demo world's months lie on a k = 1 circle in calendar order (a small, fast subset)."""

import json

import numpy as np
import pytest

from workbench.paths import world_dir

shipped_world = pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(),
                                   reason="data/world is not built (workbench world build --out data/world)")


@shipped_world
def test_month_circle_at_the_answer_position():
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.manifold_world import collect, family_features, fit_family, heldout_scores

    world = world_dir()
    manifest = json.loads((world / "manifest.json").read_text())
    names = manifest["families"]["month"]["values"]
    prompts = [r for r in manifest["prompt_sets"]["month_arith"]
               if r["split"] == "heldout" or (r["offset"] <= 3 and r["template"] == 0)]  # 36 train + 48 held out
    loaded = load_model(world / "model")
    tcs = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    feats = family_features(world / "labels_plt.jsonl", "month", tcs.n_layers)
    pts = collect(loaded, tcs, prompts, "month", names, feats)
    assert pts.resid["last"].shape == (len(prompts), loaded.n_layers + 1, loaded.d_model)
    rows, fits = fit_family(pts)
    assert "error" in rows["residual"]["last/L0"]  # the last token is always "is": nothing to fit
    fit = fits["residual/last/L2"]
    assert fit.frequency == 1 and fit.order_matches_values() and fit.layer == 2
    held = heldout_scores(fit, pts.resid["last"][pts.heldout, 2], pts.answer[pts.heldout])
    assert held["accuracy"] > 0.9 and held["angle_rmse"] < 0.35
    assert held["r2_ci"][0] <= held["r2"] <= held["r2_ci"][1]
    emb = fits["residual/value/L0"]  # the month words' embeddings: a learned k = 1 circle
    assert emb.frequency == 1 and emb.order_matches_values() and emb.r2_fundamental > 0.7
    assert np.isfinite(rows["reconstruction"]["last/plt2"]["heldout"]["r2"])
    _substitution_moves_the_answer(loaded, tcs, fits["residual/last/L3"], manifest, names)


def _substitution_moves_the_answer(loaded, tcs, fit, manifest, names):
    """Class-mean substitution in the fitted subspace moves the answer; a random subspace does not."""
    from analyses.manifolds.causal import SubstitutionCase, causal_check
    from tracer.models import tokenize

    ids = [loaded.tokenizer.convert_tokens_to_ids(n) for n in names]
    held = [r for r in manifest["prompt_sets"]["month_arith"] if r["split"] == "heldout"][:8]
    cases = []
    for r in held:
        v = names.index(r["answer"])
        cases.append(SubstitutionCase(tokens=tokenize(loaded, r["prompt"]).tolist(), position=-1, value=v,
                                      targets={(v + 3) % 12: ids[(v + 3) % 12], (v + 7) % 12: ids[(v + 7) % 12]}))
    res = causal_check(loaded, tcs, fit, cases)
    assert res.n == 16 and res.fitted_success >= 0.9 and res.random_success <= 0.1 and res.mediates

"""Pure helpers of the class-mean substitution check; steering one prompt on the shipped world (the
substitution and steering checks' model runs are tested end to end in tests/workbench)."""

from typing import Any

import numpy as np
import pytest
import torch

from analyses.manifolds.causal import CausalResult, SteeringResult, projector, random_basis, substitution_vectors
from analyses.manifolds.fit import ManifoldFit
from tests.analyses.manifolds.planted import planted_curve
from workbench.paths import world_dir


def test_projectors_and_substitution_vectors():
    rng = np.random.default_rng(0)
    R = random_basis(20, 3, rng)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    P = projector(R)
    np.testing.assert_allclose(P @ P, P, atol=1e-12)
    assert abs(np.trace(P) - 3) < 1e-9
    X, y, _ = planted_curve(period=7, n_per_value=5, seed=1)
    fit = ManifoldFit(period=7).fit(X, y).result_
    vecs = substitution_vectors(fit, 2, 5, projector(random_basis(64, fit.n_components, rng)))
    full = fit.class_means[5] - fit.class_means[2]
    np.testing.assert_allclose(vecs["full"], full)
    np.testing.assert_allclose(vecs["fitted"], fit.basis @ fit.basis.T @ full, atol=1e-12)
    # the fitted subspace holds the class-mean difference; a random 2-dim one of 64 dims almost none of it
    assert np.linalg.norm(vecs["fitted"]) > 0.95 * np.linalg.norm(full)
    assert np.linalg.norm(vecs["random"]) < 0.8 * np.linalg.norm(full)


WORLD = world_dir()


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")
def test_steer_prompt_rotates_the_start_day_on_the_shipped_world(tmp_path):
    """"Two days after Friday is": moving Friday's embedding along the fitted day circle to day v makes
    the model answer v + 2 (the issue's example: Monday -> Wednesday); the clean run answers Sunday."""
    from analyses.manifolds.causal import steer_prompt, steered_logits
    from tracer.interventions import prepare
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.manifold_points import collect_points
    from workbench.manifold_world import world_inputs

    loaded = load_model(WORLD / "model")
    tcs = load_transcoders(WORLD / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    inputs = world_inputs(loaded, WORLD, "day", "value", loaded.n_layers)
    pts = collect_points(loaded, tcs, inputs.records, tmp_path / "acts", residual_layers=(0,), positions="field")
    positions = np.array([int(r.meta["position"]) for r in inputs.records])
    X = pts.residual(0, positions)  # (n, d_model)
    train = ~inputs.heldout
    fit = ManifoldFit(period=7).fit(X[train], inputs.values[train], layer=0, position="value").result_
    i = next(k for k, r in enumerate(inputs.records) if r.prompt == "Two days after Friday is")
    tokens = list(pts.records[i]["tokens"])
    res = steer_prompt(loaded, tcs, fit, tokens, int(positions[i]), X[i])
    names = inputs.names
    assert loaded.tokenizer is not None
    decode = loaded.tokenizer.decode
    assert res.value == names.index("Friday") and decode([res.clean_token]) == "Sunday"
    assert [decode([int(t)]) for t in res.top_token] == [names[(v + 2) % 7] for v in range(7)]
    assert np.all(res.top_prob > 0.3)
    # a zero vector is the clean run
    with torch.no_grad():
        clean = steered_logits(loaded, tcs, prepare(loaded, tcs, tokens), 0, int(positions[i]), np.zeros(X.shape[1]))
        expected = loaded.model(torch.tensor([tokens])).logits[0, -1]
    torch.testing.assert_close(clean.float(), expected.float(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="targets must be values in"):
        steer_prompt(loaded, tcs, fit, tokens, int(positions[i]), X[i], targets=[7])
    for bad in ([2.5], ["3"]):  # refused, not truncated to 2 or read as 3
        with pytest.raises(TypeError, match="targets must hold integers"):
            steer_prompt(loaded, tcs, fit, tokens, int(positions[i]), X[i], targets=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x must be one residual vector"):
        steer_prompt(loaded, tcs, fit, tokens, int(positions[i]), X[:2])


def test_inconsistent_results_are_refused():
    ok = np.zeros((2, 3), dtype=bool)
    common: dict[str, Any] = {"fitted_success": 0.0, "random_success": 0.0, "full_success": 0.0, "n_cases": 1,
                              "n_components": 2, "layer": 1, "mediates": False,
                              "case_index": np.zeros(2, dtype=np.int64)}
    CausalResult(n=2, outcomes=ok, **common)
    with pytest.raises(ValueError, match=r"CausalResult outcomes must have shape \(3, 3\); got \(2, 3\)"):
        CausalResult(n=3, outcomes=ok, **common)
    with pytest.raises(ValueError, match=r"SteeringResult case_index must have shape \(2,\); got \(1,\)"):
        SteeringResult(success_rate=0.5, n=2, n_cases=1, layer=1, outcomes=np.zeros(2, dtype=bool),
                       case_index=np.zeros(1, dtype=np.int64))

"""Pure helpers of the class-mean substitution check (the model run is tested on the shipped world)."""

import numpy as np

from analyses.manifolds.causal import projector, random_basis, substitution_vectors
from analyses.manifolds.fit import ManifoldFit
from tests.analyses.manifolds.planted import planted_curve


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

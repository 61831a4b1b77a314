"""Feature manifolds: supervised fits, unsupervised discovery, irreducibility, tiling, displays.

* :mod:`analyses.manifolds.curves` -- Fourier curves (circle, helix, interval): pure numpy math.
* :mod:`analyses.manifolds.irreducibility` -- Engels' ε-mixture and separability indices.
* :mod:`analyses.manifolds.fit` -- :class:`~analyses.manifolds.fit.ManifoldFit`: class means of a
  known variable, a PCA subspace and a Fourier curve with a frequency search.
* :mod:`analyses.manifolds.discovery` -- :class:`~analyses.manifolds.discovery.ManifoldDiscovery`:
  families' reconstruction clouds ranked by irreducibility, loop tests, principal curves.
* :mod:`analyses.manifolds.tiling` -- tuning curves, preferred values, coverage and overlap.
* :mod:`analyses.manifolds.display` -- circle, tuning-curve, frequency and decoder-map plots.
* :mod:`analyses.manifolds.causal` -- class-mean substitution in the fitted vs a random subspace
  vs full patching, and steering along the fitted curve, on the real model through
  ``tracer.interventions``.

Import the module you use; this package import stays light.
"""

__all__: list[str] = []

"""Supernodes: group the features of an attribution graph that play one role.

* :mod:`analyses.supernodes.config` -- the frozen configs (one source of defaults, API and CLI);
* :mod:`analyses.supernodes.similarity` -- edge-profile, virtual-weight, family, co-activation and label
  similarities;
* :mod:`analyses.supernodes.linkage` -- cannot-link constraints and deterministic complete linkage;
* :mod:`analyses.supernodes.clustering` -- :class:`SupernodeClustering`, its result and dendrogram.
"""

__all__: list[str] = []

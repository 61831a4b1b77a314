"""Attribution graphs: circuit-tracer 0.5.0's graph through a model's transcoders.

Pipeline (one module per phase): :mod:`.context` (phase 0: the replacement model of the prompt
and the sweep's folded weights), :mod:`.targets` (phase 1: salient logits), :mod:`.sweep` (the
explicit backward), :mod:`.engine` (phases 2-3: logit and feature rows, parallel workers),
:mod:`.greedy` (``max_feature_nodes`` selection), :mod:`.rows` (where rows go: a matrix in
memory, or a graph file being written, :mod:`tracer.graph.stream`), :mod:`.packaging` (phase 4:
the Graph), :mod:`.settings` (the config's resolved values, shared by both engines), and
:mod:`.reference` (the autograd oracle, ``engine="autograd"``).
"""

import os

from torch import Tensor

from tracer.attribution.engine import attribute_fast
from tracer.attribution.reference import reference_attribute
from tracer.attribution.settings import as_config
from tracer.config import AttributionConfig
from tracer.graph.core import Graph
from tracer.models.loaded import LoadedModel
from tracer.transcoders.base import Transcoders


def attribute(loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | list[int],
              config: AttributionConfig | None = None, *, out: str | os.PathLike[str] | None = None) -> Graph:
    """The attribution graph of ``tokens`` (BOS included, used exactly as given).

    ``config.engine`` picks the explicit-backward engine ("fast", default) or the autograd
    reference ("autograd", slow, for checking).

    With ``out`` (a path: ``.npz`` writes the npz of the design notes, anything else the native
    format) the graph is also written there, atomically, and the fast engine streams each row
    into the preallocated, memory-mapped file as the sweep produces it, so resident memory stays
    independent of the graph's size (N x N); the disk must hold the file (checked up front). The
    returned graph is the same, its adjacency memory-mapped from the file (read-only: a write into
    it kills the process with SIGSEGV, so ``.clone()`` it first; see :meth:`tracer.graph.Graph.load`
    with ``mmap=True``), and its ``extra``
    also holds ``finish_seconds`` (the time to complete the file; not stored in it).
    """
    cfg = as_config(config)
    if cfg.engine == "autograd":
        graph = reference_attribute(loaded, transcoders, tokens, cfg)
        if out is not None:
            graph.save(out)
        return graph
    return attribute_fast(loaded, transcoders, tokens, cfg, out=out)


__all__ = ["AttributionConfig", "attribute", "attribute_fast", "reference_attribute"]

"""tracer: fast, exact attribution graphs through transcoders for Hugging Face models.

Dimension glossary (used in shape comments and docstrings throughout):

    batch         rows of a backward sweep (one per target node)
    n_pos         prompt positions, BOS included
    d_model       residual stream width
    d_vocab       vocabulary size
    n_layers      transformer layers
    d_transcoder  features per transcoder layer
    n_active      active (layer, pos, feature) triples
    n_nodes       graph nodes: selected features, errors, tokens, logits
    n_targets     rows being computed (logits or features)

Node order and adjacency orientation are documented in :mod:`tracer.graph`.

The package import is light on purpose (no torch), so that the CLI's help and errors are fast:
import what you use, e.g. ``from tracer.graph import Graph`` or ``from tracer.attribution import
attribute``.
"""

from tracer.errors import ArchitectureError, TranscoderFormatError, WorkbenchError

__version__ = "0.1.0"

__all__ = ["ArchitectureError", "TranscoderFormatError", "WorkbenchError", "__version__"]

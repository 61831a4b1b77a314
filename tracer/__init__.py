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
"""

from tracer.errors import ArchitectureError, TranscoderFormatError, WorkbenchError
from tracer.graph import Graph

__version__ = "0.1.0"

__all__ = ["ArchitectureError", "Graph", "TranscoderFormatError", "WorkbenchError", "__version__"]

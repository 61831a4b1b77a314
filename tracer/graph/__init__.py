"""Attribution graphs: the :class:`Graph` type and its pipeline.

:mod:`.core` (the Graph, its node order and file formats), :mod:`.nodes` (viewer node ids),
:mod:`.influence` (influence on the logits), :mod:`.prune` (circuit-tracer's pruning),
:mod:`.scores` (replacement, completeness and Neuronpedia's subgraph scores), :mod:`.export`
(Neuronpedia / circuit-tracer viewer JSON, supernode edges) and :mod:`.ct_import` (circuit-tracer
``.pt`` graphs, only with explicit consent).
"""

from tracer.config import PruneConfig
from tracer.graph.core import NODE_ERROR, NODE_FEATURE, NODE_LOGIT, NODE_TOKEN, Graph, load_npz
from tracer.graph.influence import compute_influence, compute_partial_influences, logit_weights, normalize_matrix
from tracer.graph.nodes import cantor_pairing, node_ids
from tracer.graph.prune import (
    PruneResult,
    ViewerSubgraph,
    load_prune_result,
    prune_graph,
    save_prune_result,
    viewer_subgraph,
)
from tracer.graph.scores import GraphScores, SubgraphScorer, graph_scores, subgraph_scores

__all__ = ["NODE_ERROR", "NODE_FEATURE", "NODE_LOGIT", "NODE_TOKEN", "Graph", "GraphScores", "PruneConfig",
           "PruneResult", "ViewerSubgraph", "cantor_pairing", "compute_influence", "compute_partial_influences",
           "graph_scores", "load_npz", "load_prune_result", "logit_weights", "node_ids", "normalize_matrix",
           "prune_graph", "save_prune_result", "subgraph_scores", "SubgraphScorer", "viewer_subgraph"]

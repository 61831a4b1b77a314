"""Graph scores: circuit-tracer's replacement and completeness, and Neuronpedia's subgraph scores.

* **replacement** = T / (T + E): T, E the total influence of token and error nodes;
* **completeness** = sum_i (1 - sum_{e in errors} Â[i, e]) (infl_i + w_i) / sum_i (infl_i + w_i);
* **subgraph scores** (Neuronpedia ``score.worker.ts``; circuit-tracer PR #42): on the pruned graph
  the viewer shows, every unpinned feature is merged into the error node of its (layer, pos), then
  both scores are recomputed (float64, like the viewer).
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from tracer.config import PruneConfig
from tracer.errors import WorkbenchError
from tracer.graph.core import Graph
from tracer.graph.influence import _abs_row_sums, _power_series, _row_blocks, logit_weights
from tracer.graph.nodes import node_ids
from tracer.graph.prune import PruneResult, prune_graph, viewer_subgraph
from tracer.mapped import release_all, release_rows


class GraphScores(NamedTuple):
    """circuit-tracer's graph scores (higher = more of the computation explained by features)."""

    replacement: float
    """Fraction of the token-to-logit influence that does not pass through error nodes."""
    completeness: float
    """Influence-weighted fraction of the nodes' inputs that do not come from error nodes."""



def graph_scores(graph: Graph) -> GraphScores:
    """circuit-tracer's ``compute_graph_scores`` on the full graph, without a normalised copy."""
    adjacency, weights = graph.adjacency, logit_weights(graph)
    denom = _abs_row_sums(adjacency, None, 1e-10)  # (n_nodes,)
    influence = _power_series(adjacency, denom, weights, None, 1000)  # (n_nodes,)
    errors = slice(graph.error_start, graph.token_start)
    token_influence = influence[graph.token_start:graph.logit_start].sum()
    error_influence = influence[errors].sum()
    replacement = token_influence / (token_influence + error_influence)
    error_fraction = torch.empty_like(influence)  # (n_nodes,)
    for r0, r1 in _row_blocks(graph.n_nodes, graph.n_nodes):  # whole-row blocks: a mapped file is read by rows
        block = adjacency[r0:r1, errors].abs().to(torch.float32).div_(denom[r0:r1, None])  # (rows, n_err)
        error_fraction[r0:r1] = block.sum(dim=-1)
        release_rows(adjacency, r0, r1)
    output = influence + weights  # (n_nodes,)
    completeness = ((1 - error_fraction) * output).sum() / output.sum()
    return GraphScores(float(replacement), float(completeness))


def _pinned_mask(graph: Graph, pinned: Sequence[str | int]) -> Tensor:
    mask = torch.zeros(graph.n_nodes, dtype=torch.bool)  # (n_nodes,)
    names = [p for p in pinned if isinstance(p, str)]
    for p in pinned:
        if not isinstance(p, str) and not 0 <= int(p) < graph.n_nodes:
            raise WorkbenchError(f"pinned node indices must be in [0, {graph.n_nodes}); got {p!r}. "
                                 "Pass node ids such as '3_1234_5' or valid indices.")
        if not isinstance(p, str):
            mask[int(p)] = True
    if names:
        wanted = set(names)
        mask |= torch.tensor([i in wanted for i in node_ids(graph)], dtype=torch.bool)
    return mask


def _merge_unpinned(graph: Graph, used: Tensor, pinned: Tensor, edges: Tensor,
                    weights: Tensor) -> tuple[Tensor, Tensor]:
    """Neuronpedia's subgraph surgery on the link list: each unpinned feature's outgoing links
    move to the error node of its (layer, pos) (dropped if that node is not in the graph); its
    incoming links go. Parallel links are summed."""
    n_features, n_pos = graph.n_selected, graph.n_pos
    node_layer = torch.from_numpy(graph.node_layer()).long()
    node_pos = torch.from_numpy(graph.node_pos()).long()
    merged = torch.zeros(graph.n_nodes, dtype=torch.bool)  # (n_nodes,)
    merged[:n_features] = used[:n_features] & ~pinned[:n_features]
    redirect = torch.arange(graph.n_nodes)  # (n_nodes,)
    redirect[:n_features] = graph.error_start + node_layer[:n_features] * n_pos + node_pos[:n_features]
    targets, sources = edges
    new_sources = torch.where(merged[sources], redirect[sources], sources)  # (n_edges,)
    keep = ~merged[targets] & used[new_sources]
    flat = targets[keep] * graph.n_nodes + new_sources[keep]  # (n_kept,)
    unique, inverse = torch.unique(flat, return_inverse=True)
    summed = torch.zeros(unique.numel(), dtype=weights.dtype).index_add_(0, inverse, weights[keep])
    return torch.stack([unique // graph.n_nodes, unique % graph.n_nodes]), summed


def _scores_from_links(graph: Graph, edges: Tensor, weights: Tensor) -> GraphScores:
    """Replacement and completeness of the graph made of these links, in float64 (Neuronpedia)."""
    targets, sources = edges
    magnitude = weights.abs()  # (n_edges,)
    row_sums = torch.zeros(graph.n_nodes, dtype=torch.float64).index_add_(0, targets, magnitude)
    normalized = magnitude / row_sums[targets].clamp(min=1e-10)  # (n_edges,)
    logit_w = logit_weights(graph).cpu().double()  # (n_nodes,)

    def step(x: Tensor) -> Tensor:
        return torch.zeros_like(x).index_add_(0, sources, x[targets] * normalized)

    current = step(logit_w)
    influence = current.clone()
    for _ in range(1000):
        if not bool(current.any()):
            break
        current = step(current)
        influence += current
    else:
        raise WorkbenchError("influence must converge within 1000 iterations; it did not. "
                             "The graph must be acyclic.")
    token_influence = influence[graph.token_start:graph.logit_start].sum()
    error_influence = influence[graph.error_start:graph.token_start].sum()
    from_error = (sources >= graph.error_start) & (sources < graph.token_start)  # (n_edges,)
    error_fraction = torch.zeros_like(influence).index_add_(0, targets[from_error], normalized[from_error])
    output = influence + logit_w
    replacement = float(token_influence / (token_influence + error_influence))
    completeness = float(((1 - error_fraction) * output).sum() / output.sum())
    return GraphScores(*(0.0 if value != value else value for value in (replacement, completeness)))


def subgraph_scores(graph: Graph, pinned: Sequence[str | int] = (), *,
                    prune_result: PruneResult | None = None,
                    config: PruneConfig | None = None) -> GraphScores:
    """Neuronpedia's subgraph scores (``score.worker.ts``; circuit-tracer PR #42).

    Computed on the pruned graph the viewer shows (`prune_result`, or prune with `config`).
    With `pinned` node ids (``"3_1234_5"``) or node indices, every unpinned feature is merged
    into the error node of its (layer, pos) before both scores are recomputed; with nothing
    pinned these are the scores of the pruned graph. float64 throughout, like the viewer.
    """
    result = prune_result if prune_result is not None else prune_graph(graph, config)
    view = viewer_subgraph(graph, result)
    edges = view.edge_index.cpu()
    weights = graph.adjacency[view.edge_index[0], view.edge_index[1]].cpu().double()  # (n_edges,)
    release_all(graph.adjacency)
    if len(pinned) > 0:
        used = torch.zeros(graph.n_nodes, dtype=torch.bool)
        used[view.node_index.cpu()] = True
        edges, weights = _merge_unpinned(graph, used, _pinned_mask(graph, pinned), edges, weights)
    return _scores_from_links(graph, edges, weights)

"""Graph scores: circuit-tracer's replacement and completeness, and Neuronpedia's subgraph scores.

* **replacement** = T / (T + E): T, E the total influence of token and error nodes;
* **completeness** = sum_i (1 - sum_{e in errors} Â[i, e]) (infl_i + w_i) / sum_i (infl_i + w_i);
* **subgraph scores** (Neuronpedia ``score.worker.ts``; circuit-tracer PR #42): on the pruned graph
  the viewer shows, every unpinned feature is merged into the error node of its (layer, pos), then
  both scores are recomputed (float64, like the viewer).
"""

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from tracer.config import PruneConfig
from tracer.errors import WorkbenchError
from tracer.graph.core import Graph
from tracer.graph.influence import _abs_row_sums, _power_series, _row_blocks, logit_weights
from tracer.graph.nodes import node_ids
from tracer.graph.prune import PruneResult, ViewerSubgraph, prune_graph, viewer_subgraph
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
    """(n_nodes,) bool of the pinned node ids / indices; an id the graph does not have (a typo, another
    graph's node) or an index that is not an integer in range is an error: dropping it would silently merge
    every feature into the errors."""
    mask = torch.zeros(graph.n_nodes, dtype=torch.bool)  # (n_nodes,)
    names = [p for p in pinned if isinstance(p, str)]
    for p in pinned:
        if isinstance(p, str):
            continue
        whole = isinstance(p, numbers.Integral) and not isinstance(p, bool)
        if not whole or not 0 <= int(p) < graph.n_nodes:
            raise WorkbenchError(f"pinned node indices must be integers in [0, {graph.n_nodes}); got {p!r}. "
                                 "Pass node ids such as '3_1234_5' or valid indices.")
        mask[int(p)] = True
    if names:
        index: dict[str, list[int]] = {}
        for i, node in enumerate(node_ids(graph)):
            index.setdefault(node, []).append(i)
        unknown = [name for name in names if name not in index]
        if unknown:
            raise WorkbenchError(f"pinned node ids must be ids of this graph; got {unknown[0]!r}"
                                 f"{f' and {len(unknown) - 1} more' if len(unknown) > 1 else ''}. Feature ids look "
                                 "like '3_1234_5' (layer_feature_pos); tracer.graph.node_ids(graph) lists them all.")
        shared = next((name for name in names if len(index[name]) > 1), None)
        if shared is not None:  # circuit-tracer's error ids "0_{layer}_{pos}" can equal a layer-0 feature's
            raise WorkbenchError(f"pinned node ids must name one node each; got {shared!r}, the id of nodes "
                                 f"{index[shared]} (a layer-0 feature and an error node share it in the viewer's id "
                                 "format). Pin that node by its index instead.")
        mask[[index[name][0] for name in names]] = True
    return mask


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


class SubgraphScorer:
    """Neuronpedia's subgraph scores of one pruned graph for many pinned sets (:func:`subgraph_scores`
    is one such call). The viewer's links are gathered once, with, for every link, the bucket it
    joins when its source feature is merged into the error node of its (layer, pos): each call then
    sums the links per bucket (one ``bincount``) instead of merging the link list again."""

    def __init__(self, graph: Graph, prune_result: PruneResult, *, view: ViewerSubgraph | None = None) -> None:
        view = view if view is not None else viewer_subgraph(graph, prune_result)
        self.graph = graph
        self.edges = view.edge_index.cpu()  # (2, n_edges)
        self.weights = graph.adjacency[view.edge_index[0], view.edge_index[1]].cpu().double()  # (n_edges,)
        release_all(graph.adjacency)
        self.used = torch.zeros(graph.n_nodes, dtype=torch.bool)  # (n_nodes,)
        self.used[view.node_index.cpu()] = True
        n, n_features = graph.n_nodes, graph.n_selected
        redirect = torch.arange(n)  # (n_nodes,): a feature's error node
        layer = torch.from_numpy(graph.node_layer()[:n_features]).long()
        pos = torch.from_numpy(graph.node_pos()[:n_features]).long()
        redirect[:n_features] = graph.error_start + layer * graph.n_pos + pos
        targets, sources = self.edges
        merged_key = targets * n + redirect[sources]  # (n_edges,) the link's key once its source is merged
        bucket_keys, self._merged_bucket = torch.unique(merged_key, return_inverse=True)
        self._is_error_source = (sources >= graph.error_start) & (sources < graph.token_start)
        keys = torch.cat([bucket_keys, targets * n + sources])  # (n_buckets + n_edges,) every bucket's link
        self._bucket_target, self._bucket_source = keys // n, keys % n
        self._bucket_order = torch.argsort(keys)  # row-major, as a sorted merge gives
        self._own_bucket = bucket_keys.numel() + torch.arange(targets.numel())  # (n_edges,)

    def __call__(self, pinned: Sequence[str | int] | Tensor = ()) -> GraphScores:
        """Scores with `pinned` node ids / indices (or a bool node mask) pinned; () pins everything."""
        if isinstance(pinned, Tensor) and pinned.dtype == torch.bool:
            if pinned.shape != (self.graph.n_nodes,):
                raise WorkbenchError(f"pinned mask must have shape ({self.graph.n_nodes},); got "
                                     f"{tuple(pinned.shape)}.")
            mask = pinned.cpu()
        elif len(pinned) == 0:
            return _scores_from_links(self.graph, self.edges, self.weights)
        else:
            mask = _pinned_mask(self.graph, [int(p) if isinstance(p, Tensor) else p for p in pinned])
        return _scores_from_links(self.graph, *self._merge(mask))

    def _merge(self, pinned: Tensor) -> tuple[Tensor, Tensor]:
        """Neuronpedia's subgraph surgery on the link list: each unpinned feature's outgoing links
        move to the error node of its (layer, pos) (dropped if that node is not in the graph); its
        incoming links go. Parallel links are summed."""
        graph, n = self.graph, self.graph.n_nodes
        merged = torch.zeros(n, dtype=torch.bool)  # (n_nodes,)
        merged[:graph.n_selected] = self.used[:graph.n_selected] & ~pinned[:graph.n_selected]
        moved = merged[self.edges[1]] | self._is_error_source  # (n_edges,) links that join a merged bucket
        bucket = torch.where(moved, self._merged_bucket, self._own_bucket)  # (n_edges,)
        n_all = self._bucket_order.numel()
        summed = torch.zeros(n_all, dtype=self.weights.dtype).index_add_(0, bucket, self.weights)
        count = torch.bincount(bucket, minlength=n_all)
        new_t, new_s = self._bucket_target, self._bucket_source
        keep = (count > 0) & ~merged[new_t] & self.used[new_s]  # (n_all,)
        idx = self._bucket_order[keep[self._bucket_order]]  # kept buckets, row-major
        return torch.stack([new_t[idx], new_s[idx]]), summed[idx]


def subgraph_scores(graph: Graph, pinned: Sequence[str | int] = (), *,
                    prune_result: PruneResult | None = None,
                    config: PruneConfig | None = None) -> GraphScores:
    """Neuronpedia's subgraph scores (``score.worker.ts``; circuit-tracer PR #42).

    Computed on the pruned graph the viewer shows (`prune_result`, or prune with `config`).
    With `pinned` node ids (``"3_1234_5"``) or node indices, every unpinned feature is merged
    into the error node of its (layer, pos) before both scores are recomputed; with nothing
    pinned these are the scores of the pruned graph. float64 throughout, like the viewer.
    For many pinned sets of one graph, use :class:`SubgraphScorer`.
    """
    result = prune_result if prune_result is not None else prune_graph(graph, config)
    return SubgraphScorer(graph, result)(pinned)

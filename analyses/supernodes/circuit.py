"""ReadableCircuit: a supernode graph under a node budget, scored like Neuronpedia's subgraphs.

Neuronpedia's subgraph scores (:func:`tracer.graph.scores.subgraph_scores`) merge every unpinned feature
into the error node of its (layer, position); grouping does not change them, only which features
are pinned does. So the circuit pins whole groups of :class:`SupernodeClustering` (all of them when
they fit the budget) and, when there are more groups than the budget, picks them greedily by their
gain in replacement score, estimated on the pruned graph's links (``Â`` = |weight| over each
target's incoming |weight|, ``p`` = logit probabilities):

* the flow ``f`` reaching each node from the logits through pinned features:
  ``f = p + Âᵀ (f ⊙ [logit or pinned])``;
* the share ``ρ`` of a node's flow that reaches the tokens through pinned features only:
  ``ρ = Â v`` with ``v = [token] + [pinned] ⊙ ρ``;
* pinning a group G adds ``sum over g in G of f(g) ρ(g)`` to the flow the tokens absorb (the
  replacement score's numerator; without it that flow ends in an error node).

Ties (and groups that add nothing) fall back to the flow they carry, which raises completeness.
On graphs with at most ``exact_max_links`` links, each step also scores the best
``exact_candidates`` groups exactly (the estimate ignores how merged links cancel) and keeps the
best; above it (an exact score costs a pass over every link) the estimate alone decides.
The chosen groups, the tokens and the logits become a :class:`analyses.coarse.CoarseGraph`; the
scores of the circuit are computed exactly by :func:`tracer.graph.scores.subgraph_scores`.
"""

import logging
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from analyses.base import Estimator, atomic_fit, clone
from analyses.coarse import CoarseGraph, build_coarse_graph, check_prune_result, check_token_strings, on_cpu
from analyses.families.coactivation import CoactivationContext
from analyses.families.roles import FeatureRoles
from analyses.results import check_shapes, register_result
from analyses.supernodes.clustering import SupernodeClustering, SupernodeResult
from analyses.supernodes.config import CircuitConfig
from tracer.graph import (
    Graph,
    PruneConfig,
    PruneResult,
    SubgraphScorer,
    ViewerSubgraph,
    logit_weights,
    prune_graph,
    viewer_subgraph,
)
from tracer.mapped import release_all

logger = logging.getLogger(__name__)
_D = CircuitConfig()


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class CircuitScores:
    """How faithful and how compact a readable circuit is."""

    SCHEMA_VERSION = 1

    pruned: dict[str, float]
    """Subgraph replacement and completeness of the pruned graph (nothing merged)."""
    circuit: dict[str, float]
    """The same with only the circuit's features pinned."""
    n_groups: int
    """Groups in the circuit (supernodes and single features)."""
    n_supernodes: int
    """Groups with two or more features."""
    n_features: int
    """Features pinned by the circuit."""
    n_pruned_features: int
    """Features in the pruned graph (the candidates)."""
    compression: float
    """Feature nodes per group (n_features / n_groups)."""
    sign_consistency: dict[str, float]
    """Over the circuit's links touching a supernode: ``mass_weighted`` (sum of agreeing |terms| over
    all |terms|), ``mean`` and ``min`` of the per-link shares, ``n_links``."""
    replacement_ratio: float
    """circuit replacement / pruned replacement."""


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class CircuitResult:
    """A readable circuit: its coarse graph, its scores, and the clustering it was cut from."""

    SCHEMA_VERSION = 1

    coarse: CoarseGraph
    scores: CircuitScores
    chosen: np.ndarray
    """(n_groups,) int64 indices of the chosen groups in the clustering's group order."""
    clustering: SupernodeResult
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file): chosen groups the clustering lacks."""
        check_shapes(self, {"chosen": (None,)}, kinds={"chosen": "iu"})
        n_groups = len(self.clustering.group_labels)
        if self.chosen.size and not 0 <= int(self.chosen.min()) <= int(self.chosen.max()) < n_groups:
            raise ValueError(f"CircuitResult chosen must index the clustering's {n_groups} groups; got "
                             f"{self.chosen.tolist()!r}. The result is inconsistent.")


# ----------------------------------------------------------------------------- greedy selection
def _normalized_links(graph: Graph, view: ViewerSubgraph) -> sp.csr_matrix:
    """(n_nodes, n_nodes) sparse Â over the viewer's links (rows = targets)."""
    edges = view.edge_index.cpu()  # (2, n_links)
    weights = graph.adjacency[edges[0].to(graph.adjacency.device), edges[1].to(graph.adjacency.device)]
    mags = weights.abs().double().cpu().numpy()
    release_all(graph.adjacency)  # a memory-mapped file's pages read here (not needed again)
    t, s = edges[0].numpy(), edges[1].numpy()
    row = np.bincount(t, mags, minlength=graph.n_nodes)  # (n_nodes,)
    vals = mags / np.maximum(row[t], 1e-10)
    return sp.csr_matrix((vals, (t, s)), shape=(graph.n_nodes, graph.n_nodes))


class _Flows:
    """The pruned graph's Â split by the layer of its targets (features by layer, then the logits):
    a target only reads nodes of earlier layers, so one pass over the levels solves each flow."""

    def __init__(self, graph: Graph, view: ViewerSubgraph) -> None:
        norm = _normalized_links(graph, view)  # (n_nodes, n_nodes) rows = targets
        self.nnz = int(norm.nnz)
        level = graph.node_layer().astype(np.int64)
        targets = np.flatnonzero(np.diff(norm.indptr) > 0)
        self.levels = []
        for lv in np.unique(level[targets]):
            rows = targets[level[targets] == lv]
            block = norm[rows]  # (n_rows, n_nodes)
            self.levels.append((rows, block, block.T.tocsr()))
        self.p = logit_weights(graph).double().cpu().numpy()  # (n_nodes,)
        self.tokens = np.zeros(graph.n_nodes)
        self.tokens[graph.token_start:graph.logit_start] = 1.0
        self.logits = np.zeros(graph.n_nodes, dtype=bool)
        self.logits[graph.logit_start:] = True


def group_gains(flows: _Flows, pinned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gain, flow) per node: ``f(n) ρ(n)`` and ``f(n)`` given the pinned features (bool (n_nodes,))."""
    through = pinned | flows.logits
    flow = flows.p.copy()
    for rows, _, block_t in reversed(flows.levels):  # from the logits down: sources sit lower
        flow += block_t @ (flow[rows] * through[rows])
    rho = np.zeros_like(flow)
    for rows, block, _ in flows.levels:  # from the first layer up: ρ of lower levels is final
        rho[rows] = block @ (flows.tokens + pinned * rho)
    return flow * rho, flow


def _exact(scorer: SubgraphScorer, pinned: np.ndarray, group: np.ndarray) -> tuple[float, float]:
    """(replacement, completeness) with ``group`` pinned too, rounded so float noise cannot break ties."""
    mask = torch.from_numpy(pinned.copy())
    mask[torch.from_numpy(group)] = True
    scores = scorer(mask)
    return round(scores.replacement, 12), round(scores.completeness, 12)


def choose_groups(graph: Graph, prune_result: PruneResult, groups: Sequence[np.ndarray], budget: int, *,
                  exact_candidates: int = 8, exact_max_links: int = 50_000,
                  scorer: SubgraphScorer | None = None, view: ViewerSubgraph | None = None) -> list[int]:
    """Indices of at most ``budget`` groups, picked greedily: each step ranks the groups by the
    estimated gain (see the module docstring) and, when the pruned graph has at most
    ``exact_max_links`` links, scores the best ``exact_candidates`` of them exactly (subgraph
    replacement, then completeness)."""
    if len(groups) <= budget:
        return list(range(len(groups)))
    view = view if view is not None else viewer_subgraph(graph, prune_result)
    flows = _Flows(graph, view)
    exact = exact_candidates if flows.nnz <= exact_max_links else 0
    scorer = scorer or (SubgraphScorer(graph, prune_result, view=view) if exact else None)
    member_group = np.full(graph.n_nodes, len(groups))  # (n_nodes,) group of each member; len: none
    for k, g in enumerate(groups):
        member_group[g] = k
    pinned = np.zeros(graph.n_nodes, dtype=bool)
    chosen: list[int] = []
    left = np.ones(len(groups), dtype=bool)
    while len(chosen) < budget and left.any():
        gain, flow = group_gains(flows, pinned)
        by_gain = np.bincount(member_group, gain, minlength=len(groups) + 1)[:-1]  # (n_groups,)
        by_flow = np.bincount(member_group, flow, minlength=len(groups) + 1)[:-1]
        ranked = [k for k in np.lexsort((np.arange(len(groups)), -by_flow, -by_gain)) if left[k]]
        shortlist = ranked[:max(exact, 1)]
        if exact and scorer is not None:
            best = max(shortlist, key=lambda k: (*_exact(scorer, pinned, groups[k]), by_gain[k], -k))  # noqa: B023
        else:
            best = shortlist[0]
        chosen.append(int(best))
        left[best] = False
        pinned[groups[best]] = True
    return sorted(chosen)


# ----------------------------------------------------------------------------- scores
def supernode_links(coarse: CoarseGraph) -> tuple[np.ndarray, np.ndarray]:
    """(targets, sources), each (n_links,): the coarse links that touch a group of two or more members."""
    sizes = coarse.sizes()
    t, s = np.nonzero(coarse.link_mass)
    touch = (sizes[t] > 1) | (sizes[s] > 1)
    return t[touch], s[touch]


def sign_consistency_summary(coarse: CoarseGraph) -> dict[str, float]:
    """Sign consistency over the links that touch a supernode (see :class:`CircuitScores`)."""
    t, s = supernode_links(coarse)
    if t.size == 0:
        return {"mass_weighted": float("nan"), "mean": float("nan"), "min": float("nan"), "n_links": 0}
    share, mass = coarse.sign_consistency[t, s], coarse.link_mass[t, s]
    return {"mass_weighted": float((share * mass).sum() / mass.sum()), "mean": float(share.mean()),
            "min": float(share.min()), "n_links": int(t.size)}


class ReadableCircuit(Estimator):
    """Pick and group features under a node budget (parameters: :class:`CircuitConfig`)."""

    def __init__(self, *, budget: int = _D.budget, exact_candidates: int = _D.exact_candidates,
                 exact_max_links: int = _D.exact_max_links, clustering: SupernodeClustering | None = None) -> None:
        self.budget = budget
        self.exact_candidates = exact_candidates
        self.exact_max_links = exact_max_links
        self.clustering = clustering

    def _validate_params(self) -> None:
        self.config_ = CircuitConfig(budget=self.budget, exact_candidates=self.exact_candidates,
                                     exact_max_links=self.exact_max_links)
        if self.clustering is not None and not isinstance(self.clustering, SupernodeClustering):
            raise TypeError(f"clustering must be a SupernodeClustering or None; got {reprlib.repr(self.clustering)}.")

    @atomic_fit
    def fit(self, graph: Graph, *, prune_result: PruneResult | None = None, transcoders: Any = None,
            families: Mapping[tuple[int, int], int] | np.ndarray | None = None,
            labels: Mapping[tuple[int, int], Any] | None = None,
            token_strings: Sequence[str] | None = None,
            coactivation: CoactivationContext | None = None, roles: FeatureRoles | None = None) -> "ReadableCircuit":
        """Cluster the pruned graph's features, pick groups under the budget, build and score the circuit
        (transcoders, families, labels, coactivation, roles: as :meth:`SupernodeClustering.fit`)."""
        self._validate_params()
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be a tracer.graph.Graph; got {type(graph).__name__}.")
        check_token_strings(graph, token_strings)  # before the clustering, not after it
        if prune_result is not None:
            check_prune_result(graph, prune_result)
        graph, prune_result, _ = on_cpu(graph, prune_result)  # a graph traced on a GPU
        est = clone(self.clustering) if self.clustering is not None else SupernodeClustering()
        if prune_result is None:
            est._validate_params()
            prune_result = prune_graph(graph, PruneConfig(node_threshold=est.config_.node_threshold,
                                                          edge_threshold=est.config_.edge_threshold))
        est.fit(graph, prune_result=prune_result, transcoders=transcoders, families=families, labels=labels,
                coactivation=coactivation, roles=roles)
        view = viewer_subgraph(graph, prune_result)
        shown = view.node_index.cpu()
        scorer = SubgraphScorer(graph, prune_result, view=view)
        cfg = self.config_
        chosen = choose_groups(graph, prune_result, est.groups_, cfg.budget, exact_candidates=cfg.exact_candidates,
                               exact_max_links=cfg.exact_max_links, scorer=scorer, view=view)
        groups = [est.groups_[k] for k in chosen]
        ends = [int(i) for i in shown.tolist() if i >= graph.token_start]
        coarse = build_coarse_graph(graph, [g.tolist() for g in groups], labels=[est.group_labels_[k] for k in chosen],
                                    singletons=ends, prune_result=prune_result, token_strings=token_strings,
                                    view=view)
        self.clustering_, self.prune_result_, self.chosen_ = est, prune_result, np.asarray(chosen, dtype=np.int64)
        self.coarse_graph_ = coarse
        self.scores_ = self._score(scorer, groups, coarse, len(est.candidates_))
        logger.info("readable circuit: %d groups (%d features) of %d; replacement %.4f (pruned %.4f), "
                    "completeness %.4f (pruned %.4f)", len(groups), self.scores_.n_features, len(est.groups_),
                    self.scores_.circuit["replacement"], self.scores_.pruned["replacement"],
                    self.scores_.circuit["completeness"], self.scores_.pruned["completeness"])
        return self

    @staticmethod
    def _score(scorer: SubgraphScorer, groups: list[np.ndarray], coarse: CoarseGraph,
               n_candidates: int) -> CircuitScores:
        pinned = [int(i) for g in groups for i in g]
        pruned = scorer()
        mask = torch.zeros(scorer.graph.n_nodes, dtype=torch.bool)
        mask[pinned] = True
        circuit = scorer(mask)
        return CircuitScores(
            pruned=pruned._asdict(), circuit=circuit._asdict(), n_groups=len(groups),
            n_supernodes=sum(len(g) > 1 for g in groups), n_features=len(pinned), n_pruned_features=n_candidates,
            compression=len(pinned) / max(len(groups), 1), sign_consistency=sign_consistency_summary(coarse),
            replacement_ratio=circuit.replacement / pruned.replacement if pruned.replacement else float("nan"))

    def result(self) -> CircuitResult:
        self._check_fitted("coarse_graph_")
        return CircuitResult(coarse=self.coarse_graph_, scores=self.scores_, chosen=self.chosen_,
                             clustering=self.clustering_.result(), meta={"budget": self.config_.budget})


GROUP_KINDS = ("supernode", "feature")
"""The coarse node kinds that are groups of features (a single feature is a group of one)."""


def group_nodes(coarse: CoarseGraph) -> list[int]:
    """The coarse graph's group nodes (:data:`GROUP_KINDS`), in its node order: the order of the groups in
    ``workbench cluster``'s JSON. Pass ``[coarse.members(i) for i in group_nodes(coarse)]`` to
    :func:`analyses.supernodes.interventions.check_supernodes` so that its rows line up with them (the
    circuit's ``chosen_`` order is another one)."""
    return [i for i in range(coarse.n_nodes) if coarse.kind[i] in GROUP_KINDS]


def pinned_nodes(result: CircuitResult) -> torch.Tensor:
    """(n_features,) int64 graph node indices the circuit pins (its features)."""
    keep = [result.coarse.members(i) for i in group_nodes(result.coarse)]
    return torch.from_numpy(np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64))

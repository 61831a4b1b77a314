"""SupernodeClustering: group the features of one attribution graph into supernodes.

Candidates are the features of the pruned graph (circuit-tracer's pruning at the configured
thresholds, or a given prune result / node mask / candidate list). Their affinity is a weighted
mean of the similarities in :mod:`analyses.supernodes.similarity` (those without inputs are
skipped), their cannot-links are Anthropic's criteria (:func:`analyses.supernodes.linkage.cannot_link`),
and complete linkage cuts them deterministically (:func:`analyses.supernodes.linkage.cluster_affinity`).
With feature roles (:mod:`analyses.families.roles`, read from an unlabelled corpus sample's tokens),
features of different roles never share a group. A group's label is its members' most common label
(ties: the member with the largest activation), or without labels their most common role's name ("reads
'is'", "predicts Monday, Tuesday, ..."), or without either its layers, position and size.

    est = SupernodeClustering().fit(graph, transcoders=tcs)
    est.groups_                        # node indices of each group
    coarse = est.to_coarse_graph(graph)  # supernode edges by the viewer's formula
    save_result(est.result(), "supernodes.json")
"""

import logging
import reprlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from analyses.base import Estimator, as_integers, atomic_fit, check_number
from analyses.coarse import CoarseGraph, build_coarse_graph, check_prune_result, on_cpu
from analyses.display import Display
from analyses.families.coactivation import CoactivationContext
from analyses.families.roles import FeatureRoles
from analyses.results import check_shapes, register_result
from analyses.supernodes import similarity as sim
from analyses.supernodes.config import ClusteringConfig
from analyses.supernodes.linkage import Block, cannot_link, cluster_blocks, role_cannot_link
from tracer.graph import Graph, PruneConfig, PruneResult, ViewerSubgraph, prune_graph, viewer_subgraph
from tracer.labels import check_label_mapping
from tracer.transcoders.base import Transcoders
from tracer.transcoders.identity import check_same_transcoders

logger = logging.getLogger(__name__)
_D = ClusteringConfig()


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class SupernodeResult:
    """A fitted clustering, saveable (``analyses.results.save_result``)."""

    SCHEMA_VERSION = 1

    candidates: np.ndarray
    """(n_c,) int64 graph node indices of the clustered features, ascending."""
    keys: np.ndarray
    """(n_c, 3) int64 (layer, pos, feature) of each candidate."""
    labels: np.ndarray
    """(n_c,) int64 group of each candidate."""
    group_labels: tuple[str, ...]
    """One label per group."""
    affinity: np.ndarray
    """(n_c, n_c) float32 combined affinity."""
    cannot_link: np.ndarray
    """(n_c, n_c) bool pairs forbidden to share a group."""
    linkage: np.ndarray
    """(n_c - 1, 4) scipy linkage over the candidates in canonical (ascending) order."""
    cut_height: float
    effects: np.ndarray
    """(n_c,) float64 signed effect of each candidate on the probability-weighted logits."""
    similarities: tuple[str, ...]
    """The similarities actually combined."""
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file): per-candidate arrays of other
        lengths, labels that are not the group numbers of ``group_labels``, a cut that is not a number."""
        check_shapes(self, {"candidates": (None,)})
        n = len(self.candidates)
        check_shapes(self, {"keys": (n, 3), "labels": (n,), "affinity": (n, n), "cannot_link": (n, n),
                            "linkage": (max(n - 1, 0), 4), "effects": (n,)},
                     kinds={"candidates": "iu", "keys": "iu", "labels": "iu", "cannot_link": "b"})
        used = np.unique(self.labels)
        if not np.issubdtype(used.dtype, np.integer) or used.tolist() != list(range(len(self.group_labels))):
            raise ValueError(f"SupernodeResult labels must number the groups 0..{len(self.group_labels) - 1} (one "
                             f"per group label), each used; got {used.size} distinct labels "
                             f"{reprlib.repr(used.tolist())}. The result is inconsistent.")
        check_number("SupernodeResult cut_height", self.cut_height, lo=0)

    @property
    def groups(self) -> list[np.ndarray]:
        """Node indices of each group, in group order."""
        return [self.candidates[self.labels == k] for k in range(int(self.labels.max()) + 1)] \
            if self.labels.size else []


def group_label(texts: Sequence[str], weights: Sequence[float]) -> str | None:
    """The most common non-empty text (ties: the one whose member has the largest weight)."""
    counts = Counter(t for t in texts if t)
    if not counts:
        return None
    top = max(counts.values())
    best = max((w, -i) for i, (t, w) in enumerate(zip(texts, weights)) if t and counts[t] == top)
    return texts[-best[1]]


def family_table(graph: Graph, families: np.ndarray | torch.Tensor) -> np.ndarray:
    """A families array as int64 (n_layers, d_transcoder) (-1: none), refused unless it covers every
    layer and feature index of ``graph`` (a smaller one would silently put features in no family)."""
    table = as_integers("families", families.cpu().numpy() if isinstance(families, torch.Tensor) else families)
    keys = graph.active_features.cpu().numpy()  # (n_active, 3) layer, pos, feature
    n_feat = int(keys[:, 2].max()) + 1 if len(keys) else 0
    if table.ndim != 2 or table.shape[0] != graph.n_layers or table.shape[1] < n_feat:
        raise ValueError(f"families must be an array (n_layers, d_transcoder) = ({graph.n_layers}, >= {n_feat}) "
                         f"covering the graph's features; got shape {table.shape}. Pass the families of the "
                         "graph's transcoders, or a mapping (layer, feature) -> family id.")
    return table


def check_inputs(graph: Graph, transcoders: Transcoders | None, labels: Mapping[tuple[int, int], Any] | None,
                 coactivation: Any) -> None:
    """Refuse inputs of another transcoder set than the graph's, as the CLI does: transcoders of another set,
    kind or shape (:func:`similarity.check_transcoders`), labels whose records name another set (the graph's, else
    the transcoders'), and a co-activation sample collected with another kind of transcoders or (by the signature
    its run records) another transcoder folder."""
    if transcoders is not None:
        if not isinstance(transcoders, Transcoders):
            raise TypeError(f"transcoders must be a tracer Transcoders (tracer.transcoders.loaders.load_transcoders); "
                            f"got {type(transcoders).__name__}.")
        sim.check_transcoders(graph, transcoders)
    if labels is not None and not isinstance(labels, Mapping):
        raise TypeError(f"labels must be a mapping (layer, feature) -> label (tracer.labels.load_labels); got "
                        f"{type(labels).__name__}.")
    scan = graph.scan or (transcoders.scan if transcoders is not None else "")
    check_label_mapping(labels, n_layers=graph.n_layers, scan=scan,
                        owner="the graph" if graph.scan or not scan else "the transcoders given")
    if coactivation is None:
        return
    if not isinstance(coactivation, CoactivationContext):
        raise TypeError(f"coactivation must be an analyses.families.coactivation.CoactivationContext; got "
                        f"{type(coactivation).__name__}.")
    check_sample_origin(graph, transcoders, "coactivation", coactivation.transcoder_kind,
                        coactivation.transcoder_signature, coactivation.transcoder_source,
                        "the activation run it was read from")


def check_roles(graph: Graph, transcoders: Transcoders | None, roles: Any) -> None:
    """Refuse roles that are no FeatureRoles, or that were read from a sample of other transcoders."""
    if roles is None:
        return
    if not isinstance(roles, FeatureRoles):
        raise TypeError(f"roles must be an analyses.families.roles.FeatureRoles (feature_roles); got "
                        f"{type(roles).__name__}.")
    check_sample_origin(graph, transcoders, "roles", roles.transcoder_kind, None, roles.transcoder_source,
                        "the sample they were read from")


def check_sample_origin(graph: Graph, transcoders: Transcoders | None, name: str, kind: str | None,
                        signature: str | None, source: str | None, where: str) -> None:
    """Refuse evidence read from a corpus sample (``name``: a co-activation context, roles) of other transcoders
    than the graph's: of another kind, or (by the signature it recorded, else its folder's) of another folder."""
    mine_kind = graph.extra.get("transcoder_kind") or (transcoders.kind if transcoders is not None else None)
    if mine_kind and kind and kind != mine_kind:
        raise ValueError(f"{name} must come from the graph's kind of transcoders ({mine_kind}); got a sample of "
                         f"{kind} transcoders. Collect it with the graph's transcoders.")
    mine = transcoders.source if transcoders is not None else graph.transcoder_id
    if mine:  # as `cluster --activations` checks a run
        check_same_transcoders(signature, source, str(mine), name, where)


class SupernodeClustering(Estimator):
    """Cluster the features of a graph into supernodes (parameters: :class:`ClusteringConfig`)."""

    def __init__(self, *, similarities: tuple[str, ...] = _D.similarities, edge_weight: float = _D.edge_weight,
                 virtual_weight: float = _D.virtual_weight, family_weight: float = _D.family_weight,
                 coactivation_weight: float = _D.coactivation_weight, label_weight: float = _D.label_weight,
                 in_weight: float = _D.in_weight,
                 min_affinity: float = _D.min_affinity, cut: str = _D.cut, max_group_size: int = _D.max_group_size,
                 max_layer_span: int = _D.max_layer_span, cross_position: bool = _D.cross_position,
                 negative_edge_tolerance: float = _D.negative_edge_tolerance,
                 role_constraint: bool = _D.role_constraint,
                 node_threshold: float = _D.node_threshold, edge_threshold: float = _D.edge_threshold) -> None:
        self.similarities = similarities
        self.edge_weight = edge_weight
        self.virtual_weight = virtual_weight
        self.family_weight = family_weight
        self.coactivation_weight = coactivation_weight
        self.label_weight = label_weight
        self.in_weight = in_weight
        self.min_affinity = min_affinity
        self.cut = cut
        self.max_group_size = max_group_size
        self.max_layer_span = max_layer_span
        self.cross_position = cross_position
        self.negative_edge_tolerance = negative_edge_tolerance
        self.role_constraint = role_constraint
        self.node_threshold = node_threshold
        self.edge_threshold = edge_threshold

    def _validate_params(self) -> None:
        params = self.get_params(deep=False)
        if isinstance(params["similarities"], list):
            params["similarities"] = tuple(params["similarities"])
        self.config_ = ClusteringConfig(**params)

    # ------------------------------------------------------------------------- fit
    @atomic_fit
    def fit(self, graph: Graph, *, prune_result: PruneResult | None = None, node_mask: torch.Tensor | None = None,
            candidates: Sequence[int] | None = None, transcoders: Transcoders | None = None,
            families: Mapping[tuple[int, int], int] | np.ndarray | None = None,
            labels: Mapping[tuple[int, int], Any] | None = None,
            coactivation: CoactivationContext | None = None,
            roles: FeatureRoles | None = None) -> "SupernodeClustering":
        """Cluster ``graph``'s candidate features (see the module docstring).

        prune_result / node_mask: the working set. With a prune result (default: prune at node_threshold
        / edge_threshold) the similarities read the pruned graph's kept links (what the viewer shows);
        with a node mask, every edge among the masked nodes, normalised over full rows;
        candidates: feature node indices to cluster (default: the working set's features);
        transcoders: enable the virtual-weight similarity; families: (layer, feature) -> family id,
        or an (n_layers, d_transcoder) array (-1: none); labels: (layer, feature) -> label (text or
        an object with ``.label``), for group names and the label similarity; coactivation: an
        unlabelled activation sample whose columns are keyed by (layer, feature)
        (:meth:`CoactivationContext.from_activations`), for the co-activation similarity; roles: each
        feature's role on such a sample (:func:`analyses.families.roles.feature_roles`), a hard constraint
        (``role_constraint``) and the groups' names when no labels are given.
        """
        self._validate_params()
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be a tracer.graph.Graph; got {type(graph).__name__}.")
        if prune_result is not None:
            check_prune_result(graph, prune_result)
        graph, prune_result, node_mask = on_cpu(graph, prune_result, node_mask)  # a graph traced on a GPU
        check_inputs(graph, transcoders, labels, coactivation)
        check_roles(graph, transcoders, roles)
        if isinstance(families, (np.ndarray, torch.Tensor)):
            families = family_table(graph, families)
        work_nodes, self.prune_result_, view = self._working_set(graph, prune_result, node_mask)
        cand = self._candidates(graph, work_nodes, candidates)
        nodes = np.union1d(work_nodes, cand)
        work = (sim.working_graph_from_links(graph, nodes, view.edge_index) if view is not None
                else sim.working_graph(graph, nodes))
        pos = np.searchsorted(work.nodes, cand)  # candidates' rows in the working set
        keys = graph.active_features[graph.selected_features[torch.from_numpy(cand)]].cpu().numpy()  # (n_c, 3)
        inputs = self._inputs(graph, work, cand, pos, keys, transcoders, families, labels, coactivation)
        inputs["roles"] = roles.lookup(keys[:, [0, 2]]) if roles is not None else None  # (n_c,) -1: none
        if inputs["roles"] is not None and not (inputs["roles"] >= 0).any():
            logger.warning("roles name none of the graph's %d candidate features: no role constraint (were they read "
                           "with these transcoders?)", cand.size)
        effects = sim.logit_effects(work, graph)[pos]
        blocks = [np.arange(cand.size)] if self.config_.cross_position else [
            np.flatnonzero(keys[:, 1] == p) for p in np.unique(keys[:, 1])]
        parts = [self._block(work, pos, keys, effects, inputs, idx) for idx in blocks]
        clustering = cluster_blocks(parts, keys, max_height=1.0 - self.config_.min_affinity,
                                    max_size=self.config_.max_group_size, cut=self.config_.cut)
        affinity = np.zeros((cand.size, cand.size), dtype=np.float32)
        cannot = np.ones((cand.size, cand.size), dtype=bool)  # pairs in different blocks
        for block in parts:
            affinity[np.ix_(block.items, block.items)] = block.affinity
            cannot[np.ix_(block.items, block.items)] = block.cannot
        role_names = None if roles is None else [roles.names[r] if r >= 0 else "" for r in inputs["roles"].tolist()]
        self._store(graph, cand, keys, affinity, cannot, clustering, effects, tuple(inputs["used"]), labels, role_names)
        return self

    def _working_set(self, graph: Graph, prune_result: PruneResult | None,
                     node_mask: torch.Tensor | None) -> tuple[np.ndarray, PruneResult | None, ViewerSubgraph | None]:
        if node_mask is not None:
            mask = torch.as_tensor(node_mask).bool().cpu()
            if mask.shape != (graph.n_nodes,):
                raise ValueError(f"node_mask must have shape ({graph.n_nodes},); got {tuple(mask.shape)}.")
            return mask.nonzero().flatten().numpy(), prune_result, None
        if prune_result is None:
            prune_result = prune_graph(graph, PruneConfig(node_threshold=self.config_.node_threshold,
                                                          edge_threshold=self.config_.edge_threshold))
        view = viewer_subgraph(graph, prune_result)
        return view.node_index.cpu().numpy(), prune_result, view

    @staticmethod
    def _candidates(graph: Graph, work_nodes: np.ndarray, candidates: Sequence[int] | None) -> np.ndarray:
        if candidates is None:
            cand = work_nodes[work_nodes < graph.n_selected]
        else:
            if isinstance(candidates, (str, bytes)) or np.ndim(candidates) != 1:
                raise TypeError(f"candidates must be a sequence of feature node indices; got "
                                f"{reprlib.repr(candidates)}. Pass a list, e.g. [3] for one node.")
            cand = np.unique(as_integers("candidates", list(candidates)).ravel())  # 0.5 is refused, not truncated
            if cand.size and (cand[0] < 0 or cand[-1] >= graph.n_selected):
                raise ValueError(f"candidates must be feature node indices in [0, {graph.n_selected}); got "
                                 f"{int(cand[0]) if cand[0] < 0 else int(cand[-1])}.")
        if cand.size == 0:
            raise ValueError("graph must have at least one feature node to cluster; got none (an empty or "
                             "fully pruned graph). Raise the prune thresholds (the shares of influence and edge score "
                             "kept) or trace another prompt.")
        return cand

    def _inputs(self, graph: Graph, work: sim.WorkingGraph, cand: np.ndarray, pos: np.ndarray, keys: np.ndarray,
                transcoders: Transcoders | None, families: Any, labels: Mapping[tuple[int, int], Any] | None,
                coactivation: CoactivationContext | None) -> dict[str, Any]:
        """Per-candidate profiles of every similarity that has its input and a weight."""
        given = {"edge": True, "virtual": transcoders is not None, "family": families is not None,
                 "coactivation": coactivation is not None, "label": labels is not None}
        used = [n for n in self.config_.similarities if given[n] and self.config_.weight(n) > 0]
        for name in self.config_.similarities:
            if not given[name]:
                logger.info("similarity %r skipped: its input was not given", name)
        if not used:
            raise ValueError(f"similarities must include one with an input and a weight > 0; got "
                             f"{list(self.config_.similarities)}. Add 'edge' or give its input.")
        out: dict[str, Any] = {"used": used, "edge": sim.edge_profiles(work, pos)}
        if "virtual" in used and transcoders is not None:  # "virtual" is used only when given
            out["virtual"] = sim.virtual_weights(graph, transcoders, work, cand)
        if "family" in used:
            out["family"] = sim.family_ids(keys, families)
        if "coactivation" in used and coactivation is not None:  # used only when given
            out["coactivation"] = sim.coactivation_vectors(keys, coactivation)
        if "label" in used and labels is not None:  # "label" is used only when given
            out["label"] = sim.label_vectors([sim.label_text(labels.get((int(k[0]), int(k[2]))))
                                              for k in keys])
        return out

    def _block(self, work: sim.WorkingGraph, pos: np.ndarray, keys: np.ndarray, effects: np.ndarray,
               inputs: dict[str, Any], idx: np.ndarray) -> Block:
        """The affinity and cannot-links among the candidates ``idx``."""
        cfg = self.config_
        edge = sim.edge_similarity(inputs["edge"], idx, in_weight=cfg.in_weight)
        parts = {"edge": edge.combined}
        if "virtual" in inputs:
            parts["virtual"] = sim.cosine_matrix(inputs["virtual"][torch.from_numpy(idx)])
        if "family" in inputs:
            parts["family"] = sim.family_comembership(inputs["family"][idx])
        if "label" in inputs:
            parts["label"] = sim.cosine_matrix(inputs["label"][torch.from_numpy(idx)])
        weights = {n: np.full((idx.size, idx.size), cfg.weight(n)) for n in inputs["used"]}  # (n, n) each
        if "family" in inputs:
            known = inputs["family"][idx] >= 0  # (n,)
            weights["family"] *= np.outer(known, known)  # a feature in no family gives no family evidence
        if "coactivation" in inputs:
            profiles, live = inputs["coactivation"]
            parts["coactivation"] = sim.cosine_matrix(profiles[torch.from_numpy(idx)])
            weights["coactivation"] *= np.outer(live[idx], live[idx])  # only pairs that both fire in the sample
        total = sum(weights.values())  # (n, n) > 0 unless only co-activation is used and a feature never fires
        affinity = np.divide(sum(weights[n] * parts[n] for n in weights), total, out=np.zeros_like(total),
                             where=total > 0)
        at = pos[idx]
        cannot = cannot_link(keys[idx], effects[idx], edge.outgoing, work.block[np.ix_(at, at)].double().numpy(),
                             work.row_abs[at], cross_position=cfg.cross_position, max_layer_span=cfg.max_layer_span,
                             negative_edge_tolerance=cfg.negative_edge_tolerance)
        if cfg.role_constraint and inputs["roles"] is not None:
            cannot |= role_cannot_link(inputs["roles"][idx])
        return Block(affinity, cannot, idx)

    def _store(self, graph: Graph, cand: np.ndarray, keys: np.ndarray, affinity: np.ndarray, cannot: np.ndarray,
               clustering: Any, effects: np.ndarray, used: tuple[str, ...],
               labels: Mapping[tuple[int, int], Any] | None, role_names: list[str] | None) -> None:
        """Keep the fitted state; ``role_names``: each candidate's role name ("" for none), or None without roles."""
        self.candidates_, self.keys_, self.affinity_, self.cannot_link_ = cand, keys, affinity, cannot
        self.labels_, self.linkage_, self.cut_height_ = clustering.labels, clustering.linkage, clustering.height
        self.effects_, self.similarities_used_ = effects, used
        self.roles_used_ = bool(role_names is not None and self.config_.role_constraint
                                and any(role_names))  # one role per group
        self.groups_ = [cand[clustering.labels == k] for k in range(int(clustering.labels.max()) + 1)]
        acts = graph.activation_values[graph.selected_features].double().cpu().numpy()
        names: list[str | None] = []
        for k in range(len(self.groups_)):
            members = np.flatnonzero(clustering.labels == k)
            texts = [sim.label_text(labels.get((int(keys[i, 0]), int(keys[i, 2])))) if labels else ""
                     for i in members]
            if not any(texts) and role_names is not None:  # no labels: the members' roles name the group
                texts = [role_names[i] for i in members]
            names.append(group_label(texts, acts[cand[members]].tolist()))
        self.group_labels_ = names
        logger.info("clustered %d features into %d groups (%d with several members; cut at affinity %.3f; "
                    "similarities %s)", cand.size, len(self.groups_), sum(g.size > 1 for g in self.groups_),
                    1.0 - clustering.height, ", ".join(used))

    # ------------------------------------------------------------------------- outputs
    def to_coarse_graph(self, graph: Graph, *, token_strings: Sequence[str] | None = None) -> CoarseGraph:
        """The groups as a coarse graph over the pruned graph's links (every other node a singleton)."""
        self._check_fitted("groups_")
        return build_coarse_graph(graph, [g.tolist() for g in self.groups_], labels=self.group_labels_,
                                  prune_result=self.prune_result_, token_strings=token_strings)

    def result(self) -> SupernodeResult:
        """The fitted state as a saveable result."""
        self._check_fitted("groups_")
        fallback = [f"group {k}" for k in range(len(self.groups_))]
        return SupernodeResult(
            candidates=self.candidates_, keys=self.keys_, labels=self.labels_,
            group_labels=tuple(n or fallback[k] for k, n in enumerate(self.group_labels_)),
            affinity=self.affinity_.astype(np.float32), cannot_link=self.cannot_link_, linkage=self.linkage_,
            cut_height=float(self.cut_height_), effects=self.effects_, similarities=self.similarities_used_,
            config={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config_).items()})


# ----------------------------------------------------------------------------- dendrogram
class DendrogramDisplay(Display):
    """The complete-linkage dendrogram of a clustering, with the cut (distance = 1 - affinity;
    cannot-link merges sit at 2)."""

    figsize = (9.0, 4.5)

    def __init__(self, *, linkage: np.ndarray, leaf_labels: Sequence[str], cut_height: float) -> None:
        self.linkage, self.leaf_labels, self.cut_height = linkage, list(leaf_labels), cut_height

    @classmethod
    def from_result(cls, result: SupernodeResult | SupernodeClustering) -> "DendrogramDisplay":
        """From a fitted estimator or its result; leaves are named ``L{layer}#{feature}@{pos}``."""
        if isinstance(result, SupernodeClustering):
            result = result.result()
        names = [f"L{k[0]}#{k[2]}@{k[1]}" for k in result.keys]  # candidates are in canonical order
        return cls(linkage=result.linkage, leaf_labels=names, cut_height=result.cut_height)

    def _draw(self, ax: Any, **kwargs: Any) -> None:
        from scipy.cluster.hierarchy import dendrogram

        if len(self.leaf_labels) > 1:
            dendrogram(self.linkage, ax=ax, labels=self.leaf_labels, color_threshold=self.cut_height,
                       leaf_font_size=6, above_threshold_color="lightgray")
        ax.axhline(self.cut_height, color="black", ls="--", lw=0.8)
        ax.set_ylabel("distance (1 - affinity)")
        ax.set_title(f"complete linkage, cut at {self.cut_height:.3f}", fontsize=9)

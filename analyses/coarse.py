"""Coarse graphs: attribution graphs whose nodes are groups of graph nodes (supernodes, later
manifold nodes), with edges by the Neuronpedia / circuit-tracer supernode formula.

A :class:`CoarseGraph` is a node table plus a signed adjacency. The table is columnar:

* ``kind[i]``: ``"supernode"`` (two or more graph nodes), ``"feature"``, ``"error"``, ``"token"``,
  ``"logit"``, or a kind added later (``"manifold"``), see :data:`NODE_KINDS`;
* members in CSR form: node ``i`` holds graph nodes ``member_nodes[member_ptr[i]:member_ptr[i+1]]``
  with keys ``member_keys`` = ``(layer, pos, index)`` as :class:`tracer.graph.Graph` gives them
  (features: feature index; errors: -1; tokens: layer -1 and the token id; logits: layer n_layers
  and the vocabulary id) and viewer ids ``member_ids``;
* ``layer_range`` / ``pos_range`` (min, max over members), ``label``, ``value`` (summed member
  activation; a logit's probability; NaN for errors and tokens) and free ``columns`` (one float
  array per name, e.g. a manifold node's coordinate and magnitude; NaN where not defined).

``adjacency[target, source]`` (rows = targets, cols = sources, as in the graph) is the viewer's
supernode link weight (``research/geometry.md`` §3.3, computed by
:func:`tracer.graph.export.aggregate_supernode_links` on the graph's links): the signed fraction of the
target group's external input that comes from the source group. ``sign_consistency[t, s]`` is the
share of the member links' absolute contribution whose sign matches the aggregate (NaN without a
link). Nodes are ordered by kind (supernodes and features by layer then position, then errors,
tokens, logits), as the viewer draws them.
"""

import dataclasses
import logging
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from analyses.base import check_number
from analyses.display import EDGE_COLOURS, NODE_COLOURS, Display
from analyses.results import check_shapes, register_result
from tracer.graph import (
    NODE_ERROR,
    NODE_FEATURE,
    NODE_LOGIT,
    NODE_TOKEN,
    Graph,
    PruneResult,
    ViewerSubgraph,
    node_ids,
    viewer_subgraph,
)
from tracer.graph.export import aggregate_supernode_links, unique_labels
from tracer.mapped import release_all, release_rows

logger = logging.getLogger(__name__)

NODE_KINDS: tuple[str, ...] = ("supernode", "feature", "error", "token", "logit", "manifold")
"""Known node kinds; builders may add others (the table does not depend on the set)."""
_TYPE_KIND = {NODE_FEATURE: "feature", NODE_ERROR: "error", NODE_TOKEN: "token", NODE_LOGIT: "logit"}
_KIND_RANK = {"supernode": 0, "feature": 0, "manifold": 0, "error": 1, "token": 2, "logit": 3}


class CoarseNode(NamedTuple):
    """One row of the node table (a convenience view)."""

    kind: str
    label: str
    members: np.ndarray
    """(n_members, 3) int64 (layer, pos, index)."""
    node_index: np.ndarray
    """(n_members,) int64 original graph node indices."""
    node_ids: tuple[str, ...]
    layer_range: tuple[int, int]
    pos_range: tuple[int, int]
    value: float


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class CoarseGraph:
    """A graph of grouped nodes (see the module docstring for every field's layout)."""

    SCHEMA_VERSION = 1

    kind: tuple[str, ...]
    label: tuple[str, ...]
    member_ptr: np.ndarray
    """(n_nodes + 1,) int64 CSR offsets into the member arrays."""
    member_nodes: np.ndarray
    """(n_members,) int64 original graph node indices."""
    member_keys: np.ndarray
    """(n_members, 3) int64 (layer, pos, index) of each member."""
    member_ids: tuple[str, ...]
    """(n_members,) viewer node ids of the members."""
    layer_range: np.ndarray
    """(n_nodes, 2) int64 min and max member layer."""
    pos_range: np.ndarray
    """(n_nodes, 2) int64 min and max member position."""
    value: np.ndarray
    """(n_nodes,) float64 summed member activation (logits: probability; errors, tokens: NaN)."""
    adjacency: np.ndarray
    """(n_nodes, n_nodes) float64 supernode link weights, rows = targets, cols = sources."""
    sign_consistency: np.ndarray
    """(n_nodes, n_nodes) float64 share of member-link |mass| whose sign matches the link (NaN: none)."""
    link_mass: np.ndarray
    """(n_nodes, n_nodes) float64 sum of |member-link terms| behind each link (0: none)."""
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    """Extra per-node float columns (NaN where undefined), e.g. a manifold node's coordinate."""
    n_layers: int = 0
    n_pos: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance: the graph's prompt, model and transcoder ids, how links were chosen."""

    def __post_init__(self) -> None:
        """Refuse an inconsistent table (a hand-edited or damaged file): per-node and per-member fields
        of other lengths, member offsets that do not cover the members in order."""
        check_shapes(self, {"member_nodes": (None,)})
        n, m = len(self.kind), len(self.member_nodes)
        columns = {f"columns[{k!r}]": v for k, v in self.columns.items()}
        check_shapes(self, {"label": (n,), "member_ptr": (n + 1,), "member_keys": (m, 3), "member_ids": (m,),
                            "layer_range": (n, 2), "pos_range": (n, 2), "value": (n,), "adjacency": (n, n),
                            "sign_consistency": (n, n), "link_mass": (n, n), **{k: (n,) for k in columns}}, columns,
                     kinds={"member_ptr": "iu", "member_keys": "iu"})
        ptr = np.asarray(self.member_ptr)
        if ptr[0] != 0 or ptr[-1] != m or (np.diff(ptr) < 0).any():
            raise ValueError(f"CoarseGraph member_ptr must rise from 0 to the {m} members; got "
                             f"{reprlib.repr(ptr.tolist())}. The result is inconsistent.")

    @property
    def n_nodes(self) -> int:
        return len(self.kind)

    def _check_node(self, i: int) -> int:
        check_number("node index", i, lo=0, hi=self.n_nodes, hi_open=True, integer=True)
        return int(i)

    def node(self, i: int) -> CoarseNode:
        """The i-th row of the node table (``i`` in ``[0, n_nodes)``)."""
        i = self._check_node(i)
        lo, hi = int(self.member_ptr[i]), int(self.member_ptr[i + 1])
        return CoarseNode(self.kind[i], self.label[i], self.member_keys[lo:hi], self.member_nodes[lo:hi],
                          self.member_ids[lo:hi], (int(self.layer_range[i, 0]), int(self.layer_range[i, 1])),
                          (int(self.pos_range[i, 0]), int(self.pos_range[i, 1])), float(self.value[i]))

    def members(self, i: int) -> np.ndarray:
        """(n_members,) original graph node indices of node i (in ``[0, n_nodes)``)."""
        i = self._check_node(i)
        return self.member_nodes[int(self.member_ptr[i]):int(self.member_ptr[i + 1])]

    def sizes(self) -> np.ndarray:
        """(n_nodes,) number of members of each node."""
        return np.diff(self.member_ptr)

    def edges(self) -> list[tuple[int, int, float]]:
        """Non-zero links as (source, target, weight), strongest first."""
        t, s = np.nonzero(self.link_mass)
        order = np.argsort(-np.abs(self.adjacency[t, s]), kind="stable")
        return [(int(s[k]), int(t[k]), float(self.adjacency[t[k], s[k]])) for k in order]

    def to_supernodes(self) -> list[list[str]]:
        """``qParams.supernodes`` for the viewer: ``[[label, node_id, ...], ...]`` per supernode."""
        return [[self.label[i], *self.node(i).node_ids] for i in range(self.n_nodes)
                if self.kind[i] == "supernode"]

    def pinned_ids(self) -> list[str]:
        """``qParams.pinnedIds``: every member of every node (what the viewer's subgraph shows)."""
        return list(self.member_ids)

    def qparams(self) -> dict[str, Any]:
        """The viewer state that opens this coarse graph (``pinnedIds`` and ``supernodes``)."""
        return {"pinnedIds": self.pinned_ids(), "supernodes": self.to_supernodes()}


# ----------------------------------------------------------------------------- input checks
def on_cpu(graph: Graph, prune_result: PruneResult | None = None, node_mask: torch.Tensor | None = None
           ) -> tuple[Graph, PruneResult | None, torch.Tensor | None]:
    """The analyses run on the CPU (numpy, scipy): a graph traced on a GPU, its prune result and its node mask
    are copied there; what is on the CPU already (a memory-mapped adjacency too) is passed through uncopied."""
    if graph.adjacency.device.type != "cpu":
        graph = graph.to("cpu")
    if isinstance(prune_result, PruneResult) and prune_result.node_mask.device.type != "cpu":
        prune_result = PruneResult(*(t.cpu() for t in prune_result))
    if isinstance(node_mask, torch.Tensor):
        node_mask = node_mask.cpu()
    return graph, prune_result, node_mask


def check_prune_result(graph: Graph, prune_result: PruneResult) -> None:
    """A prune result must come from ``graph``: one mask entry per node (another graph's would select
    the wrong nodes, or fail later as an index error)."""
    if not isinstance(prune_result, PruneResult):
        raise TypeError(f"prune_result must be a tracer PruneResult; got {reprlib.repr(prune_result)}. Prune this "
                        "graph: prune_graph(graph, config).")
    n = graph.n_nodes
    node_shape, edge_shape = tuple(prune_result.node_mask.shape), tuple(prune_result.edge_mask.shape)
    if node_shape != (n,) or edge_shape != (n, n):
        m = node_shape[0] if len(node_shape) == 1 else "?"
        raise ValueError(f"prune_result must come from this graph of {n} nodes (node_mask ({n},), edge_mask ({n}, "
                         f"{n})); got one for {m} nodes (node_mask {node_shape}, edge_mask {edge_shape}). Prune "
                         "this graph: prune_graph(graph, config).")


def check_token_strings(graph: Graph, token_strings: Sequence[str] | None) -> None:
    """``token_strings``, when given, must name each of the graph's ``n_pos`` input positions."""
    if token_strings is not None and (isinstance(token_strings, str) or len(token_strings) != graph.n_pos):
        got = repr(token_strings) if isinstance(token_strings, str) else f"{len(token_strings)} entries"
        raise ValueError(f"token_strings must hold one string per input position ({graph.n_pos}); got {got}.")
    bad = next(((i, t) for i, t in enumerate(token_strings or ()) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"token_strings must hold strings; got {bad[1]!r} at position {bad[0]}. Pass the "
                        "tokens' text (e.g. the tokenizer's convert_ids_to_tokens).")


# ----------------------------------------------------------------------------- links of a graph
def graph_links(graph: Graph, *, prune_result: PruneResult | None = None,
                node_mask: torch.Tensor | None = None, block_rows: int = 1024,
                view: ViewerSubgraph | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The links the formula runs on: ``(edge_index (2, n) [target, source], weights (n,))``.

    With a prune result: the viewer's links (kept edges between kept nodes; ``view``, when given,
    is its :func:`tracer.graph.prune.viewer_subgraph`). Otherwise every non-zero edge between nodes in
    ``node_mask`` (default: all), read in blocks of rows.
    """
    if prune_result is not None:
        edges = (view or viewer_subgraph(graph, prune_result)).edge_index.cpu()
        weights = graph.adjacency[edges[0].to(graph.adjacency.device), edges[1].to(graph.adjacency.device)].cpu()
        release_all(graph.adjacency)  # a memory-mapped file's pages read here (not needed again)
        return edges.numpy().astype(np.int64), weights.double().numpy()
    n = graph.n_nodes
    mask = torch.ones(n, dtype=torch.bool) if node_mask is None else node_mask.cpu().bool()
    kept = mask.nonzero().flatten()  # (n_kept,)
    parts_e, parts_w = [], []
    for r0 in range(0, int(kept.numel()), block_rows):
        rows = kept[r0:r0 + block_rows]
        block = graph.adjacency[rows.to(graph.adjacency.device)].cpu()[:, kept]  # (rows, n_kept)
        t, s = block.nonzero(as_tuple=True)
        parts_e.append(torch.stack([rows[t], kept[s]]))
        parts_w.append(block[t, s].double())
        release_rows(graph.adjacency, int(rows[0]), int(rows[-1]) + 1)  # kept is ascending
    if not parts_e:
        return np.zeros((2, 0), dtype=np.int64), np.zeros(0)
    return torch.cat(parts_e, 1).numpy().astype(np.int64), torch.cat(parts_w).numpy()


# ----------------------------------------------------------------------------- building
def _node_table(graph: Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(node_type (n,), keys (n, 3) int64, value (n,) float64) of every graph node."""
    types = graph.node_type()
    keys = np.stack([graph.node_layer(), graph.node_pos(), graph.node_index()], 1).astype(np.int64)  # (n, 3)
    value = np.full(graph.n_nodes, np.nan)
    value[:graph.n_selected] = graph.activation_values[graph.selected_features].double().cpu().numpy()
    value[graph.logit_start:] = graph.logit_probabilities.double().cpu().numpy()
    return types, keys, value


def _default_label(kind: str, keys: np.ndarray, graph: Graph, token_strings: Sequence[str] | None) -> str:
    layer, pos, index = (int(x) for x in keys[0])
    if kind == "supernode":
        layers = sorted({int(x) for x in keys[:, 0]})
        span = f"L{layers[0]}" if len(layers) == 1 else f"L{layers[0]}-{layers[-1]}"
        poss = sorted({int(x) for x in keys[:, 1]})
        where = f"p{poss[0]}" if len(poss) == 1 else f"p{poss[0]}-{poss[-1]}"
        return f"{span} {where} x{len(keys)}"
    if kind == "feature":
        return f"L{layer} #{index} p{pos}"
    if kind == "error":
        return f"error L{layer} p{pos}"
    if kind == "token":
        return token_strings[pos] if token_strings is not None else f"token {index} p{pos}"
    k = int(np.flatnonzero(graph.logit_token_ids.cpu().numpy() == index)[0])
    return graph.logit_tokens[k] if len(graph.logit_tokens) == graph.n_logits else f"logit {index}"


def _group_nodes(graph: Graph, groups: Sequence[Sequence[int]], singletons: Sequence[int]) -> list[np.ndarray]:
    seen = np.zeros(graph.n_nodes, dtype=bool)
    out = []
    for g in [*groups, *([s] for s in singletons)]:
        idx = np.unique(np.asarray(g, dtype=np.int64))  # (n_members,) sorted
        if idx.size == 0:
            raise ValueError("each group must hold at least one node; got an empty group.")
        if idx[0] < 0 or idx[-1] >= graph.n_nodes:
            raise ValueError(f"group members must be node indices in [0, {graph.n_nodes}); got {g!r}.")
        if seen[idx].any():
            raise ValueError(f"groups must be disjoint; node {int(idx[seen[idx]][0])} is in two groups.")
        seen[idx] = True
        out.append(idx)
    return out


def _order(kinds: list[str], keys: list[np.ndarray]) -> list[int]:
    def sort_key(i: int) -> tuple[float, ...]:
        k = keys[i]
        return (_KIND_RANK.get(kinds[i], 0), float(k[:, 0].mean()), float(k[:, 1].mean()), *k[0].tolist())

    return sorted(range(len(kinds)), key=sort_key)


def _aggregate(links: tuple[np.ndarray, np.ndarray], group_of: np.ndarray,
               n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(adjacency, sign_consistency, link_mass), each (n, n), from the formula's per-link terms."""
    (targets, sources), weights = links
    agg = aggregate_supernode_links(targets, sources, weights, group_of)
    adjacency = np.zeros((n, n))
    t, s = agg.edge_index
    adjacency[t, s] = agg.weights
    used = agg.link_edge >= 0
    terms = np.nan_to_num(agg.contributions[used], nan=0.0)
    edge = agg.link_edge[used]
    mass = np.bincount(edge, np.abs(terms), minlength=t.size)  # (n_edges,)
    agree = np.bincount(edge, np.abs(terms) * (np.sign(terms) == np.sign(agg.weights[edge])), minlength=t.size)
    consistency = np.full((n, n), np.nan)
    link_mass = np.zeros((n, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        consistency[t, s] = np.where(mass > 0, agree / mass, np.nan)
    link_mass[t, s] = mass
    return adjacency, consistency, link_mass


def build_coarse_graph(graph: Graph, groups: Sequence[Sequence[int]], *,
                       labels: Sequence[str | None] | None = None, singletons: str | Sequence[int] = "all",
                       prune_result: PruneResult | None = None, node_mask: torch.Tensor | None = None,
                       token_strings: Sequence[str] | None = None,
                       columns: Mapping[str, Sequence[float]] | None = None,
                       view: ViewerSubgraph | None = None) -> CoarseGraph:
    """Group graph nodes and aggregate their links with the viewer's supernode formula.

    groups: lists of graph node indices (disjoint); a group of two or more becomes a supernode.
    labels: one per group (None: made from the members' layers and positions).
    singletons: ``"all"`` (every node of the link set not in a group, as the viewer pins it) or
    the node indices to add as one-node nodes.
    prune_result / node_mask: which links count (see :func:`graph_links`); the viewer uses the
    prune result's (``view``: its viewer subgraph, if already computed). columns: extra per-group
    values (one per group; singletons get NaN).
    """
    if labels is not None and len(labels) != len(groups):
        raise ValueError(f"labels must have one entry per group ({len(groups)}); got {len(labels)}.")
    check_token_strings(graph, token_strings)
    if prune_result is not None:
        check_prune_result(graph, prune_result)
    graph, prune_result, node_mask = on_cpu(graph, prune_result, node_mask)
    grouped = _group_nodes(graph, groups, [])
    if prune_result is not None and view is None:
        view = viewer_subgraph(graph, prune_result)
    links = graph_links(graph, prune_result=prune_result, node_mask=node_mask, view=view)
    if isinstance(singletons, str):
        singletons = _all_singletons(graph, grouped, singletons, view, node_mask)
    nodes = _group_nodes(graph, groups, singletons)
    types, keys, value = _node_table(graph)
    kinds = ["supernode" if idx.size > 1 else _TYPE_KIND[int(types[idx[0]])] for idx in nodes]
    order = _order(kinds, [keys[idx] for idx in nodes])
    given = [*(labels if labels is not None else [None] * len(groups)), *[None] * (len(nodes) - len(groups))]
    extra = {name: list(vals) + [np.nan] * (len(nodes) - len(groups)) for name, vals in (columns or {}).items()}
    nodes = [nodes[i] for i in order]
    kinds = [kinds[i] for i in order]
    names = [given[i] or _default_label(kinds[k], keys[nodes[k]], graph, token_strings)
             for k, i in enumerate(order)]
    groups_at = [k for k, kind in enumerate(kinds) if kind == "supernode"]  # viewers key a group by its label
    for k, name in zip(groups_at, unique_labels([names[k] for k in groups_at])):
        names[k] = name
    group_of = np.full(graph.n_nodes, -1, dtype=np.int64)
    for i, idx in enumerate(nodes):
        group_of[idx] = i
    adjacency, consistency, mass = _aggregate(links, group_of, len(nodes))
    member_nodes = np.concatenate(nodes)
    ids = node_ids(graph)
    return CoarseGraph(
        kind=tuple(kinds), label=tuple(names),
        member_ptr=np.concatenate([[0], np.cumsum([idx.size for idx in nodes])]).astype(np.int64),
        member_nodes=member_nodes, member_keys=keys[member_nodes], member_ids=tuple(ids[i] for i in member_nodes),
        layer_range=np.array([[keys[idx, 0].min(), keys[idx, 0].max()] for idx in nodes], dtype=np.int64),
        pos_range=np.array([[keys[idx, 1].min(), keys[idx, 1].max()] for idx in nodes], dtype=np.int64),
        value=np.array([np.nansum(value[idx]) if not np.isnan(value[idx]).all() else np.nan for idx in nodes]),
        adjacency=adjacency, sign_consistency=consistency, link_mass=mass,
        columns={name: np.array([vals[i] for i in order], dtype=np.float64) for name, vals in extra.items()},
        n_layers=graph.n_layers, n_pos=graph.n_pos,
        meta={"prompt": graph.input_string, "model_id": graph.model_id, "transcoder_id": graph.transcoder_id,
              "links": "viewer (pruned)" if prune_result is not None else "all non-zero among kept nodes",
              "n_graph_nodes": graph.n_nodes},
    )


def _all_singletons(graph: Graph, grouped: Sequence[np.ndarray], singletons: str, view: ViewerSubgraph | None,
                    node_mask: torch.Tensor | None) -> list[int]:
    """``singletons="all"``: every node of the link set (the viewer subgraph's, the mask's, or the graph's) that
    is in no group."""
    if singletons != "all":
        raise ValueError(f"singletons must be 'all' or node indices; got {singletons!r}.")
    pool = (view.node_index.cpu().numpy() if view is not None
            else np.flatnonzero(node_mask.cpu().numpy()) if node_mask is not None else np.arange(graph.n_nodes))
    taken = np.zeros(graph.n_nodes, dtype=bool)
    for idx in grouped:
        taken[idx] = True
    return [int(i) for i in pool if not taken[i]]


def with_columns(coarse: CoarseGraph, **columns: Sequence[float] | np.ndarray) -> CoarseGraph:
    """A copy with extra per-node columns (one value per node)."""
    for name, vals in columns.items():
        if len(vals) != coarse.n_nodes:
            raise ValueError(f"column {name!r} must have one value per node ({coarse.n_nodes}); got {len(vals)}.")
    merged = {**coarse.columns, **{k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}}
    return dataclasses.replace(coarse, columns=merged)


# ----------------------------------------------------------------------------- display
@dataclass(frozen=True, kw_only=True, eq=False)
class _Layout:
    x: np.ndarray
    """(n_nodes,) horizontal place: mean member position, spread within a (position, layer) cell."""
    y: np.ndarray
    """(n_nodes,) vertical place: mean member layer (tokens -1, logits n_layers), spread within a crowded
    cell (more than 3 nodes: rows within +-0.35 of it)."""


def _layout(coarse: CoarseGraph) -> _Layout:
    x = np.array([coarse.node(i).members[:, 1].mean() for i in range(coarse.n_nodes)], dtype=np.float64)
    y = np.array([coarse.node(i).members[:, 0].mean() for i in range(coarse.n_nodes)], dtype=np.float64)
    cells: dict[tuple[float, float], list[int]] = {}
    for i in range(coarse.n_nodes):
        cells.setdefault((round(float(x[i])), round(float(y[i]), 1)), []).append(i)
    for members in cells.values():  # a crowded cell spreads on a grid of at most 3 columns
        m = len(members)
        cols = min(m, 3)
        rows = -(-m // cols)
        for k, i in enumerate(members):
            r, c = divmod(k, cols)
            x[i] += (c - (cols - 1) / 2) * min(0.8 / cols, 0.3)
            y[i] += (r - (rows - 1) / 2) * (0.7 / rows if rows > 1 else 0.0)
    return _Layout(x=x, y=y)


class SupernodeGraphDisplay(Display):
    """A coarse graph drawn like the viewer: nodes at (position, layer), links coloured by sign
    (blue positive, red negative) with width by |weight|; supernodes drawn larger by member count."""

    figsize = (9.0, 5.5)

    GROUP_KINDS = ("supernode", "feature")
    """Node kinds numbered when ``numbered``: the groups ``workbench cluster`` lists, in the same order."""

    def __init__(self, *, x: np.ndarray, y: np.ndarray, labels: Sequence[str], kinds: Sequence[str],
                 sizes: np.ndarray, edges: Sequence[tuple[int, int, float]], n_layers: int,
                 title: str = "", numbered: bool = False) -> None:
        self.x, self.y, self.labels, self.kinds = x, y, list(labels), list(kinds)
        self.sizes, self.edges, self.n_layers, self.title = sizes, list(edges), n_layers, title
        self.numbered = numbered

    @classmethod
    def from_coarse_graph(cls, coarse: CoarseGraph, *, max_edges: int = 150,
                          numbered: bool = False) -> "SupernodeGraphDisplay":
        """Lay out ``coarse`` and keep its ``max_edges`` strongest links. ``numbered``: mark group nodes
        1, 2, ... in node order (for a table of their labels) instead of writing the labels."""
        lay = _layout(coarse)
        return cls(x=lay.x, y=lay.y, labels=coarse.label, kinds=coarse.kind, sizes=coarse.sizes(),
                   edges=coarse.edges()[:max_edges], n_layers=coarse.n_layers,
                   title=str(coarse.meta.get("prompt", "")), numbered=numbered)

    def node_texts(self) -> list[str]:
        """What is written by each node: its label (cut to 28 characters), or its number when ``numbered``."""
        if not self.numbered:
            return [text[:28] for text in self.labels]
        numbers = iter(range(1, len(self.kinds) + 1))
        return [str(next(numbers)) if kind in self.GROUP_KINDS else text[:28]
                for kind, text in zip(self.kinds, self.labels)]

    def _draw(self, ax: Any, show_labels: bool = True, **kwargs: Any) -> None:
        top = max((abs(w) for _, _, w in self.edges), default=1.0) or 1.0
        for s, t, w in reversed(self.edges):  # strongest drawn last, on top
            sign = "excite" if w > 0 else "inhibit"
            ax.plot([self.x[s], self.x[t]], [self.y[s], self.y[t]], color=EDGE_COLOURS[sign],
                    lw=0.4 + 3.0 * abs(w) / top, alpha=0.35 + 0.5 * abs(w) / top, zorder=1)
        for kind in dict.fromkeys(self.kinds):
            idx = [i for i, k in enumerate(self.kinds) if k == kind]
            ax.scatter(self.x[idx], self.y[idx], s=[40 + 25 * float(self.sizes[i]) for i in idx],
                       c=NODE_COLOURS.get(kind, "black"), label=kind, zorder=2, edgecolors="black", linewidths=0.5)
        if show_labels:
            for i, text in enumerate(self.node_texts()):
                group = self.numbered and self.kinds[i] in self.GROUP_KINDS
                ax.annotate(text, (self.x[i], self.y[i]), fontsize=7 if group else 6, xytext=(0, 0 if group else 6),
                            textcoords="offset points", ha="center", va="center" if group else "baseline",
                            zorder=3, fontweight="bold" if group else "normal")
        ax.set_yticks(range(-1, self.n_layers + 1),
                      ["tokens", *[f"L{i}" for i in range(self.n_layers)], "logits"])
        ax.set_xlabel("position")
        ax.set_title(self.title[:80], fontsize=9)
        ax.legend(fontsize=7, loc="upper left", frameon=False)

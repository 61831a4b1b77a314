"""Similarities between the feature nodes of one graph, and their signed effect on the logits.

Everything works on a *working set* W of graph nodes and a set of candidate features C inside it,
never on N x N copies of the adjacency. Either W is the pruned graph the viewer shows: ``A[W, W]``
holds its kept links only and each target's normalisation runs over its kept inputs
(:func:`working_graph_from_links`, which reads just those entries); or W is a node mask: ``A[W, W]``
is gathered in blocks of rows (the adjacency itself when W is every node) and the normalisation
reads whole rows of A (:func:`working_graph`). Orientation as in
:class:`tracer.graph.Graph`: ``A[target, source]``. Similarities (``research/geometry.md`` §7a):

* **edge**: ``out_i[t] = A[t, i] / sum_s |A[t, s]|`` over targets t in W (the signed version of the
  row-normalised Â) and ``in_i[s] = A[i, s] / sum_s' |A[i, s']|`` over sources s in W; the
  similarity is ``cos([out_i; λ in_i], [out_j; λ in_j])``;
* **virtual**: ``v_i[k] = ê_k · d_i``: the decoder of i (a CLT: summed over the layers it writes
  below reader k) against the unit encoder rows of the graph's later-layer features and the unit
  logit directions (virtual weights, ignoring norm gains); ``cos(v_i, v_j)``;
* **family**: 1 when both features are in one dictionary family, else 0 (a pair with a feature in no
  family is left out of this similarity's average: no evidence either way);
* **coactivation**: the cosine of the features' co-activation profiles over an unlabelled activation
  sample (:class:`analyses.families.coactivation.CoactivationContext`: ``sum_t a_i(t) c(t)``, what
  else fires on the tokens where i fires), for features that fire in the sample;
* **label**: TF-IDF cosine of the features' label texts.

:func:`logit_effects` gives each node's signed total effect on the probability-weighted logits in
the linearised graph: removing a fraction δ of feature s changes a later feature t's activation
by ``δ A[t, s]`` (active features pass pre-activation changes on one for one), i.e. by the fraction
``δ A[t, s] / a_t``, and a logit by ``δ A[logit, s]``.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from analyses.base import as_integers
from analyses.families.coactivation import CoactivationContext
from tracer.graph import Graph
from tracer.graph.checks import check_transcoders_match
from tracer.mapped import release_all
from tracer.transcoders.base import Transcoders

logger = logging.getLogger(__name__)


class WorkingGraph(NamedTuple):
    """The part of a graph the similarities read."""

    nodes: np.ndarray
    """(w,) int64 ascending graph node indices of the working set."""
    block: Tensor
    """(w, w) ``A[nodes][:, nodes]`` in the adjacency's dtype (the adjacency itself when W is all)."""
    row_abs: np.ndarray
    """(w,) float64 ``sum over all sources of |A[node, source]|`` (the Â normalisation)."""


def working_graph(graph: Graph, nodes: np.ndarray, *, block_rows: int = 256) -> WorkingGraph:
    """Gather ``A[W, W]`` and the full-row |A| sums of W, ``block_rows`` rows of A at a time (error
    and token rows are empty by construction and are not read). When W is every node the adjacency
    itself is used (no copy)."""
    nodes = np.unique(np.asarray(nodes, dtype=np.int64))  # (w,)
    adjacency = graph.adjacency
    full = nodes.size == graph.n_nodes
    block = adjacency.cpu() if full else torch.zeros(nodes.size, nodes.size, dtype=adjacency.dtype)  # (w, w)
    row_abs = np.zeros(nodes.size)
    cols = torch.from_numpy(nodes).to(adjacency.device)
    readers = np.flatnonzero((nodes < graph.error_start) | (nodes >= graph.logit_start))  # rows with inputs
    for r0 in range(0, readers.size, block_rows):
        at = readers[r0:r0 + block_rows]
        rows = adjacency.index_select(0, cols[torch.from_numpy(at).to(adjacency.device)])  # (rows, n_nodes)
        row_abs[at] = torch.linalg.vector_norm(rows.float(), 1, dim=1).cpu().numpy()
        if not full:
            block[torch.from_numpy(at)] = rows.index_select(1, cols).cpu()
    if not full:
        release_all(adjacency)  # a memory-mapped file's pages read here (not needed again)
    return WorkingGraph(nodes, block, row_abs)


def working_graph_from_links(graph: Graph, nodes: np.ndarray, edges: Tensor) -> WorkingGraph:
    """The working graph of a link list (e.g. the pruned graph's kept links, ``edges`` (2, n_links)
    as (target, source)): ``A[W, W]`` holds only those links, and each row's |A| sum runs over the
    target's listed inputs, i.e. the normalisation of the graph the links describe. Reads only the
    listed entries of the adjacency."""
    nodes = np.unique(np.asarray(nodes, dtype=np.int64))  # (w,)
    edges = edges.cpu()
    weights = graph.adjacency[edges[0].to(graph.adjacency.device), edges[1].to(graph.adjacency.device)].cpu()
    release_all(graph.adjacency)  # a memory-mapped file's pages read here (not needed again)
    lookup = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    lookup[torch.from_numpy(nodes)] = torch.arange(nodes.size)
    t, s = lookup[edges[0]], lookup[edges[1]]
    keep = (t >= 0) & (s >= 0)
    block = torch.zeros(nodes.size, nodes.size, dtype=weights.dtype)  # (w, w)
    block[t[keep], s[keep]] = weights[keep]
    row_abs = np.bincount(t[keep].numpy(), weights[keep].abs().double().numpy(), minlength=nodes.size)
    return WorkingGraph(nodes, block, row_abs)


def _unit_rows(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-30)


def cosine_matrix(x: Tensor) -> np.ndarray:
    """(n, n) cosine similarity of the rows of x (zero rows: 0), computed in float32, as float64."""
    unit = _unit_rows(x.float())  # (n, d)
    return (unit @ unit.T).clamp(-1.0, 1.0).double().numpy()


class EdgeProfiles(NamedTuple):
    outgoing: Tensor
    """(w_r, n_c) float32: column i of the signed Â over the working targets that have inputs."""
    incoming: Tensor
    """(n_c, w) float32: row i of the signed Â over the working set."""


class EdgeSimilarity(NamedTuple):
    combined: np.ndarray
    """(n, n) ``cos([out; λ in], [out'; λ in'])``."""
    outgoing: np.ndarray
    """(n, n) ``cos(out, out')`` (for the sign constraint)."""


def edge_profiles(work: WorkingGraph, cand: np.ndarray) -> EdgeProfiles:
    """The candidates' signed edge profiles (``cand``: their positions in the working set)."""
    denom = torch.from_numpy(np.maximum(work.row_abs, 1e-10)).float()  # (w,)
    c = torch.from_numpy(np.asarray(cand, dtype=np.int64))
    readers = torch.from_numpy(np.flatnonzero(work.row_abs > 0))  # targets with inputs
    out = work.block[readers][:, c].float() / denom[readers, None]  # (w_r, n_c)
    inn = work.block[c].float() / denom[c, None]  # (n_c, w)
    return EdgeProfiles(out, inn)


def edge_similarity(profiles: EdgeProfiles, idx: np.ndarray, *, in_weight: float) -> EdgeSimilarity:
    """Edge-profile cosines among the candidates ``idx`` (indices into the profiles)."""
    i = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    out, inn = profiles.outgoing[:, i], profiles.incoming[i]  # (w_r, n), (n, w)
    out_gram = out.T @ out  # (n, n)
    gram = torch.addmm(out_gram, inn, inn.T, alpha=in_weight ** 2)
    return EdgeSimilarity(_gram_to_cos(gram), _gram_to_cos(out_gram))


def _gram_to_cos(gram: Tensor) -> np.ndarray:
    """Cosines from a float32 Gram matrix, as float64 (rounded later by the clustering)."""
    norm = gram.diagonal().clamp(min=0).sqrt().clamp(min=1e-30)  # (n,)
    return (gram / norm[:, None] / norm[None, :]).clamp(-1.0, 1.0).double().numpy()


def logit_effects(work: WorkingGraph, graph: Graph, *, max_iter: int = 1000) -> np.ndarray:
    """(w,) each working node's signed total effect on ``sum_l p_l logit_l`` in the linearised graph
    (the change when the node's output is removed is minus this)."""
    nodes = work.nodes
    is_feature = nodes < graph.n_selected
    logits = np.flatnonzero(nodes >= graph.logit_start)
    probs = graph.logit_probabilities.double().cpu().numpy()[nodes[logits] - graph.logit_start]
    acts = graph.activation_values[graph.selected_features].double().cpu().numpy()
    scale = np.zeros(nodes.size)
    scale[is_feature] = 1.0 / np.maximum(acts[nodes[is_feature]], 1e-12)
    block = work.block
    direct = torch.from_numpy(probs) @ block[torch.from_numpy(logits)].double()  # (w,)
    rows = torch.from_numpy(np.flatnonzero(is_feature))
    feature_rows = block[rows]  # (n_features, w), the block's dtype
    scale_t = torch.from_numpy(scale[is_feature])
    effect = direct.clone()
    for _ in range(max_iter):
        new = direct + ((effect[rows] * scale_t).to(block.dtype) @ feature_rows).double()  # (w,)
        if torch.equal(new, effect):
            return effect.numpy()
        effect = new
    raise ValueError(f"logit effects must converge within {max_iter} iterations; they did not. The graph "
                     "must be acyclic.")


# ----------------------------------------------------------------------------- virtual weights
def check_transcoders(graph: Graph, transcoders: Transcoders) -> None:
    """Raise ValueError unless ``transcoders`` can be the graph's: the set and kind the graph records
    (:func:`tracer.graph.checks.check_transcoders_match`), its layers, d_model and every feature index."""
    check_transcoders_match(graph, transcoders, "transcoders", warn=False)  # a graph built in memory may record none
    hint = "Pass the transcoders the graph was traced with."
    if graph.n_logits and graph.logit_vectors.shape[-1] != transcoders.d_model:
        raise ValueError(f"transcoders must have the graph's d_model {graph.logit_vectors.shape[-1]}; got "
                         f"{transcoders.d_model}. {hint}")
    sel = graph.active_features[graph.selected_features].cpu()
    for layer in range(graph.n_layers):
        feats = sel[sel[:, 0] == layer, 2]
        width = transcoders.layers[layer].d_transcoder
        if feats.numel() and int(feats.max()) >= width:
            raise ValueError(f"transcoders must have every graph feature; got feature {int(feats.max())} at "
                             f"layer {layer}, but that layer has {width}. {hint}")


def _readers(graph: Graph, transcoders: Transcoders, work: WorkingGraph) -> tuple[Tensor, np.ndarray]:
    """(unit reading vectors (n_r, d), their layers (n_r,)): the working set's distinct (layer,
    feature) encoders, then the logit directions at layer n_layers."""
    feats = work.nodes[work.nodes < graph.n_selected]
    keys = graph.active_features[graph.selected_features[torch.from_numpy(feats)]].cpu().numpy()  # (n, 3)
    pairs = np.unique(keys[:, [0, 2]], axis=0)  # (n_r, 2) (layer, feature)
    rows = [transcoders.layers[int(layer)].W_enc.detach()[torch.from_numpy(pairs[pairs[:, 0] == layer, 1])]
            .cpu().double() for layer in np.unique(pairs[:, 0])]  # pairs are sorted by layer
    vecs = [*rows, graph.logit_vectors.detach().cpu().double()]
    layers = np.concatenate([pairs[:, 0], np.full(graph.n_logits, graph.n_layers)]).astype(np.int64)
    return _unit_rows(torch.cat(vecs)), layers


def virtual_weights(graph: Graph, transcoders: Transcoders, work: WorkingGraph, cand_nodes: np.ndarray) -> Tensor:
    """(n_c, n_r) virtual weights of the candidates on every later reader (0 for earlier readers)."""
    readers, reader_layer = _readers(graph, transcoders, work)
    keys = graph.active_features[graph.selected_features[torch.from_numpy(cand_nodes)]].cpu().numpy()  # (n_c, 3)
    out = torch.zeros(len(cand_nodes), readers.shape[0], dtype=torch.float64)  # (n_c, n_r)
    for layer in np.unique(keys[:, 0]):
        idx = np.flatnonzero(keys[:, 0] == layer)
        feats = torch.from_numpy(keys[idx, 2])
        dec = transcoders.layers[int(layer)].decoder_rows(feats, torch.float64)  # (n, d) | (n, n_out, d)
        for m in np.unique(reader_layer[reader_layer > layer]):
            cols = torch.from_numpy(np.flatnonzero(reader_layer == m))
            dsum = dec if dec.dim() == 2 else dec[:, : int(m - layer)].sum(1)  # (n, d)
            out[torch.from_numpy(idx)[:, None], cols[None, :]] = dsum @ readers[cols].T
    return out


# ----------------------------------------------------------------------------- families and labels
def family_ids(keys: np.ndarray, families: Mapping[tuple[int, int], int] | np.ndarray | Any) -> np.ndarray:
    """(n,) family id of each (layer, pos, feature) key; -1 for none. ``families`` is an array
    (n_layers, d_transcoder) of ids (-1: none) or a mapping (layer, feature) -> id."""
    if isinstance(families, np.ndarray) or isinstance(families, Tensor):
        table = np.asarray(families)
        if table.ndim != 2:
            raise ValueError(f"families must be a (n_layers, d_transcoder) array or a mapping; got shape "
                             f"{table.shape}.")
        inside = (keys[:, 0] < table.shape[0]) & (keys[:, 2] < table.shape[1])
        out = np.full(len(keys), -1, dtype=np.int64)
        out[inside] = table[keys[inside, 0], keys[inside, 2]]
        return out
    if not isinstance(families, Mapping):
        raise TypeError(f"families must be an array or a mapping (layer, feature) -> family id; got "
                        f"{type(families).__name__}.")
    ids = [families.get((int(k[0]), int(k[2])), -1) for k in keys]
    return as_integers("families' values (family ids)", ids)  # 1.7 or "x" is refused, not truncated


def coactivation_vectors(keys: np.ndarray, context: CoactivationContext) -> tuple[Tensor, np.ndarray]:
    """(unit co-activation profiles (n, k) of the (layer, pos, feature) keys' features, (n,) bool:
    the feature fires in the sample (otherwise its row is zero))."""
    cols = context.columns(keys[:, [0, 2]])  # (n,)
    P = context.column_profiles(cols)  # (n, k)
    live = np.linalg.norm(P, axis=1) > 0
    return _unit_rows(torch.from_numpy(P).double()), live


def family_comembership(ids: np.ndarray) -> np.ndarray:
    """(n, n) 1.0 where both features are in one family, else 0."""
    same = (ids[:, None] == ids[None, :]) & (ids[:, None] >= 0)
    return same.astype(np.float64)


def label_vectors(texts: Sequence[str]) -> Tensor:
    """(n, vocab) TF-IDF rows of label texts (all zero when there are no words)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        tfidf = TfidfVectorizer(token_pattern=r"(?u)\b[A-Za-z][A-Za-z]+\b").fit_transform(list(texts))
    except ValueError:  # no words at all
        return torch.zeros(len(texts), 1)
    return torch.from_numpy(tfidf.toarray())


def label_cosine(texts: Sequence[str]) -> np.ndarray:
    """(n, n) TF-IDF cosine of label texts (empty texts: 0)."""
    return cosine_matrix(label_vectors(texts))


def label_text(label: object) -> str:
    """A label's text: a string, or an object with ``.label`` (tracer.labels.FeatureLabel)."""
    return str(getattr(label, "label", label)) if label is not None else ""

"""Neuronpedia / circuit-tracer viewer JSON: ``<slug>.json`` plus the folder's ``graph-metadata.json``.

The nodes and links are exactly those circuit-tracer 0.5.0's ``create_graph_files`` writes for
the same graph and thresholds: the kept nodes of :func:`tracer.graph.prune.prune_graph`, in node order,
minus kept features/errors that no kept link touches; the kept links in (target, source) order
with their raw signed weights ``A[target, source]``. Node ids (``research/geometry.md`` §3.2)::

    feature  "{layer}_{feature}_{pos}"     feature = cantor(layer, feature)
    error    "0_{layer}_{pos}"             (circuit-tracer's format: it can collide with a
                                            layer-0 feature id; kept as is for compatibility)
    token    "E_{token_id}_{pos}"
    logit    "{n_layers + 1}_{vocab_id}_{n_pos - 1}"

``influence`` is the node's cumulative influence score (lower = more influential). Our extras:
``qParams.pinnedIds`` / ``qParams.supernodes`` (``[[label, node_id, ...], ...]``) can be filled,
``clerp`` comes from feature labels, and ``metadata`` also carries ``info.generator`` and
``pruning_settings`` (both in Neuronpedia's schema). Floats that are not finite become null.
"""

import contextlib
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tracer.config import PruneConfig
from tracer.errors import WorkbenchError
from tracer.graph.core import Graph
from tracer.graph.nodes import cantor_pairing, node_ids
from tracer.graph.prune import PruneResult, prune_graph
from tracer.io import atomic_path, file_lock, loads_json
from tracer.labels import check_label_mapping
from tracer.mapped import release_all

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FEATURE_TYPE = "cross layer transcoder"  # circuit-tracer's type for PLT and CLT features alike


class Tokenizer(Protocol):
    """Anything with a Hugging Face-style ``decode``."""

    def decode(self, token_ids: Any) -> str: ...


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _node(node_id: str, feature: int, layer: str, pos: int, kind: str, js_id: str, *, clerp: str = "",
          influence: float | None = None, activation: float | None = None, token_prob: float = 0.0,
          is_target: bool = False) -> dict[str, Any]:
    """One node, with circuit-tracer's field order and defaults."""
    return {
        "node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": pos, "feature_type": kind,
        "token_prob": token_prob, "is_target_logit": is_target, "run_idx": 0, "reverse_ctx_idx": 0,
        "jsNodeId": js_id, "clerp": clerp,
        "influence": None if influence is None else _number(influence),
        "activation": None if activation is None else _number(activation),
    }


def _label_lookup(labels: Mapping[Any, Any] | None) -> Callable[[str, tuple[int, int] | None], str | None]:
    """A function (node_id, (layer, feature) or None) -> label; labels may be strings or have .label."""
    def find(node_id: str, key: tuple[int, int] | None) -> str | None:
        if not labels:
            return None
        found = labels.get(node_id)
        if found is None and key is not None:
            found = labels.get(key)
        if found is None:
            return None
        return str(getattr(found, "label", found))

    return find


def _nodes(graph: Graph, node_mask: Any, cumulative: list[float], ids: list[str],
           logit_tokens: list[str], labels: Mapping[Any, Any] | None) -> list[dict[str, Any]]:
    """circuit-tracer's create_nodes for every kept node, in node order."""
    find = _label_lookup(labels)
    sel = graph.active_features[graph.selected_features].tolist()
    acts = graph.activation_values[graph.selected_features].tolist()
    tokens, probs = graph.input_tokens.tolist(), graph.logit_probabilities.tolist()
    vocab, L, P = graph.logit_token_ids.tolist(), graph.n_layers, graph.n_pos
    out = []
    for i in node_mask.nonzero().flatten().tolist():
        nid, infl = ids[i], cumulative[i]
        if i < graph.error_start:
            layer, pos, feat = sel[i]
            out.append(_node(nid, cantor_pairing(layer, feat), str(layer), pos, _FEATURE_TYPE,
                             f"{layer}_{feat}-0", clerp=find(nid, (layer, feat)) or "",
                             influence=infl, activation=acts[i]))
        elif i < graph.token_start:
            layer, pos = divmod(i - graph.error_start, P)
            out.append(_node(nid, -1, str(layer), pos, "mlp reconstruction error", f"{layer}_{pos}-0",
                             clerp=find(nid, None) or "", influence=infl))
        elif i < graph.logit_start:
            pos = i - graph.token_start
            out.append(_node(nid, pos, "E", pos, "embedding", f"E_{tokens[pos]}-{pos}",
                             clerp=find(nid, None) or "", influence=infl))
        else:
            k = i - graph.logit_start
            clerp = find(nid, None) or f'Output "{logit_tokens[k]}" (p={probs[k]:.3f})'
            out.append(_node(nid, vocab[k], str(L + 1), P - 1, "logit", f"L_{vocab[k]}-{P - 1}",
                             clerp=clerp, token_prob=probs[k], is_target=k == 0))
    return out


def _links(graph: Graph, result: PruneResult, ids: list[str]) -> list[dict[str, Any]]:
    """Kept links between kept nodes: (target, source) order, raw signed weights."""
    edges = result.edge_index.cpu()  # (2, n_edges)
    mask = result.node_mask.cpu()
    edges = edges[:, mask[edges[0]] & mask[edges[1]]]
    weights = graph.adjacency[edges[0].to(graph.adjacency.device), edges[1].to(graph.adjacency.device)]
    release_all(graph.adjacency)  # a memory-mapped adjacency: drop the pages the gather read
    return [{"source": ids[s], "target": ids[t], "weight": _number(w)}
            for t, s, w in zip(edges[0].tolist(), edges[1].tolist(), weights.float().tolist(), strict=True)]


def _used_nodes(nodes: list[dict[str, Any]], links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """circuit-tracer's filter (by id): nodes touched by a link, plus embeddings and logits."""
    connected = {link["source"] for link in links} | {link["target"] for link in links}
    return [n for n in nodes if n["node_id"] in connected or n["feature_type"] in ("embedding", "logit")]


def _prompt_tokens(graph: Graph, tokenizer: Tokenizer | Sequence[str] | None) -> list[str]:
    ids = graph.input_tokens.tolist()
    if tokenizer is None:
        logger.warning("no tokenizer given: the viewer's prompt tokens are the token ids")
        return [str(t) for t in ids]
    if isinstance(tokenizer, Sequence) and not isinstance(tokenizer, str):
        if len(tokenizer) != len(ids) or not all(isinstance(t, str) for t in tokenizer):
            raise WorkbenchError(f"prompt token strings must be {len(ids)} strings (one per position); got "
                                 f"{len(tokenizer)} items. Pass the decoded tokens or a tokenizer.")
        return list(tokenizer)
    assert not isinstance(tokenizer, str)
    return [tokenizer.decode(t) for t in ids]


def _logit_tokens(graph: Graph, tokenizer: Tokenizer | Sequence[str] | None) -> list[str]:
    if len(graph.logit_tokens) == graph.n_logits:
        return list(graph.logit_tokens)
    if tokenizer is not None and not isinstance(tokenizer, Sequence):
        return [tokenizer.decode(v) for v in graph.logit_token_ids.tolist()]
    return ["" for _ in range(graph.n_logits)]


def _scan(graph: Graph, scan: str | None) -> tuple[str, list[str]]:
    """(scan, transcoder_list) as circuit-tracer's build_model sets them."""
    listed = graph.extra.get("transcoder_list")
    if scan is None and isinstance(listed, list) and listed:
        names = [str(x) for x in listed]
        digest = int(hashlib.sha256("-".join(names).encode()).hexdigest()[:15], 16)
        return f"custom-{digest}", names  # circuit-tracer uses Python's salted hash() here
    scan = scan or graph.scan or graph.model_id
    if not scan:
        err = WorkbenchError("scan must be set to identify the model/transcoders; got an empty scan and "
                             "model id (an .npz graph records neither). Pass a scan name, and a tokenizer for "
                             "readable tokens; graphs saved as .safetensors keep both.")
        err.fields = ("scan",)
        raise err
    return scan, []


def unique_labels(labels: Sequence[str]) -> list[str]:
    """``labels`` with repeats made distinct (the second "x" becomes "x (2)"): the viewers key a
    supernode by its label, so two groups of one label would be drawn as one."""
    used: set[str] = set()
    out = []
    for label in labels:
        name, n = label, 1
        while name in used:
            n += 1
            name = f"{label} ({n})"
        used.add(name)
        out.append(name)
    return out


def _check_qparams(supernodes: Sequence[Sequence[str]] | None, pinned_ids: Sequence[str] | None,
                   known: set[str], unknown_ids: str = "warn") -> tuple[list[list[str]], list[str]]:
    groups = [list(g) for g in (supernodes or [])]
    for g in groups:
        if len(g) < 2 or not all(isinstance(x, str) for x in g):
            raise WorkbenchError(f"each supernode must be [label, node_id, ...] (strings); got {g!r}. "
                                 "Example: ['Texas', '20_15589_10', '19_7477_9'].")
    for g, label in zip(groups, unique_labels([g[0] for g in groups])):
        g[0] = label
    pinned = [str(x) for x in (pinned_ids or [])]
    unknown = sorted(({x for g in groups for x in g[1:]} | set(pinned)) - known)
    if unknown and unknown_ids == "error":
        raise WorkbenchError(f"supernode and pinned ids must be nodes of the exported (pruned) graph; got "
                             f"{len(unknown)} that are not: {', '.join(unknown[:5])}. Prune with the thresholds the "
                             "groups were made at, or group this graph again.")
    if unknown:
        logger.warning("%d pinned/supernode ids are not in the exported graph (the viewer ignores "
                       "them): %s", len(unknown), ", ".join(unknown[:5]))
    return groups, pinned


def build_neuronpedia(graph: Graph, *, slug: str, prune_config: PruneConfig | None = None,
                      prune_result: PruneResult | None = None, labels: Mapping[Any, Any] | None = None,
                      supernodes: Sequence[Sequence[str]] | None = None,
                      pinned_ids: Sequence[str] | None = None,
                      tokenizer: Tokenizer | Sequence[str] | None = None,
                      scan: str | None = None, unknown_ids: str = "warn") -> dict[str, Any]:
    """The viewer JSON as a dict (see :func:`export_neuronpedia`)."""
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise WorkbenchError(f"slug must be letters, digits, '.', '_' or '-' (no '/'); got {slug!r}. "
                             "It names the file <slug>.json.")
    if prune_result is not None and prune_config is None:
        raise ValueError("prune_config must be given with prune_result; got only the result. The viewer records "
                         "the thresholds the graph was pruned at: pass the PruneConfig that made the result.")
    check_label_mapping(labels, n_layers=graph.n_layers, scan=graph.scan)  # `scan` names the viewer's id only
    config = prune_config or PruneConfig()
    result = prune_result if prune_result is not None else prune_graph(graph, config)
    ids = node_ids(graph)
    cumulative = result.cumulative_scores.float().tolist()
    nodes = _nodes(graph, result.node_mask.cpu(), cumulative, ids, _logit_tokens(graph, tokenizer), labels)
    links = _links(graph, result, ids)
    used = _used_nodes(nodes, links)
    groups, pinned = _check_qparams(supernodes, pinned_ids, {n["node_id"] for n in used}, unknown_ids)
    scan_name, transcoder_list = _scan(graph, scan)
    from tracer import __version__

    metadata = {
        "slug": slug, "scan": scan_name, "transcoder_list": transcoder_list,
        "prompt_tokens": _prompt_tokens(graph, tokenizer), "prompt": graph.input_string,
        "node_threshold": config.node_threshold, "schema_version": SCHEMA_VERSION,
        "info": {"generator": {"name": "manifold-workbench", "version": __version__},
                 "graph_fingerprint": graph.node_fingerprint()},
        "pruning_settings": {"node_threshold": config.node_threshold,
                             "edge_threshold": config.edge_threshold},
    }
    qparams = {"pinnedIds": pinned, "supernodes": groups, "linkType": "both", "clickedId": "", "sg_pos": ""}
    logger.info("viewer graph %s: %d nodes, %d links", slug, len(used), len(links))
    return {"metadata": metadata, "qParams": qparams, "nodes": used, "links": links}


def export_neuronpedia(graph: Graph, path: str | Path, *, slug: str, prune_config: PruneConfig | None = None,
                       prune_result: PruneResult | None = None, labels: Mapping[Any, Any] | None = None,
                       supernodes: Sequence[Sequence[str]] | None = None,
                       pinned_ids: Sequence[str] | None = None,
                       tokenizer: Tokenizer | Sequence[str] | None = None,
                       scan: str | None = None, unknown_ids: str = "warn") -> Path:
    """Write ``<path>/<slug>.json`` and upsert ``<path>/graph-metadata.json``; return the former.

    `path` is a folder (created if missing) that ``circuit-tracer start-server --graph_file_dir``
    or Neuronpedia's uploader can read. `labels` maps a node id or (layer, feature) to a label
    (a string, or an object with ``.label`` such as :class:`tracer.labels.FeatureLabel`).
    `tokenizer` decodes the prompt tokens; or pass the token strings themselves. Writes are
    atomic: a failure leaves the previous files untouched. Supernode labels are made distinct (the
    viewers key a group by its label); supernode or pinned ids that are not nodes of the pruned graph
    are logged (``unknown_ids="warn"``) or refused (``"error"``).
    """
    if unknown_ids not in ("warn", "error"):
        raise ValueError(f"unknown_ids must be 'warn' or 'error'; got {unknown_ids!r}.")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise WorkbenchError(f"export path must be a folder; got the file {str(folder)!r}. Pass a folder.")
    data = build_neuronpedia(graph, slug=slug, prune_config=prune_config, prune_result=prune_result,
                             labels=labels, supernodes=supernodes, pinned_ids=pinned_ids,
                             tokenizer=tokenizer, scan=scan, unknown_ids=unknown_ids)
    index_path = folder / "graph-metadata.json"
    _read_index(index_path)  # a damaged index stops us before anything is written
    target = folder / f"{slug}.json"
    created = not folder.exists()
    try:
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    except BaseException:
        if created:  # a folder this call made and could not fill (e.g. a full disk) is not left behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    with file_lock(index_path):  # concurrent exports into one folder: read-modify-write one at a time
        index = _read_index(index_path)
        index["graphs"] = [g for g in index["graphs"] if g.get("slug") != slug] + [data["metadata"]]
        with atomic_path(index_path) as tmp:
            tmp.write_text(json.dumps(index, indent=2, ensure_ascii=False), encoding="utf-8")
    logger.info("wrote %s", target)
    return target


def _read_index(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"graphs": []}
    try:
        index = loads_json(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise WorkbenchError(f"{path.name} must be valid JSON; got a file that is not ({err}). "
                             f"Fix or delete {str(path)!r}.") from None
    if not isinstance(index, dict) or not isinstance(index.get("graphs"), list) or \
            not all(isinstance(g, dict) for g in index["graphs"]):
        raise WorkbenchError(f"{path.name} must be an object with a 'graphs' list; got something else. "
                             f"Fix or delete {str(path)!r}.")
    return index


# ----------------------------------------------------------------------------- supernode edges
class SupernodeLink(NamedTuple):
    source: str
    target: str
    weight: float


class SupernodeView(NamedTuple):
    """The viewer's subgraph panel: pinned nodes outside supernodes, the supernodes, their links."""

    members: dict[str, list[str]]
    """subgraph node id -> member node ids (a pinned node alone: [itself])."""
    links: list[SupernodeLink]
    """Combined links, self-links dropped, sorted by |weight| ascending (the viewer's order)."""


def _supernode_ids(pinned: list[str],
                   supernodes: Sequence[Sequence[str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(member -> supernode id, supernode id -> members) as the viewer assigns them."""
    pinned_set, known = set(pinned), set(pinned)
    group_of: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for i, (label, *members) in enumerate(supernodes):
        sid = f"supernode-{i}" if label in known else label
        known.add(sid)
        inside = [m for m in members if m in pinned_set]
        for m in inside:
            group_of[m] = sid
        if inside:
            groups[sid] = inside
    return group_of, groups


class SupernodeAggregation(NamedTuple):
    """The viewer's supernode links on integer ids (see :func:`aggregate_supernode_links`)."""

    edge_index: Any
    """(2, n_edges) int64 numpy array: (target group, source group) of each combined link, in the
    order of each pair's first contributing link; self-links (same group) are dropped."""
    weights: Any
    """(n_edges,) float64: the combined weights (NaN terms skipped, as d3.sum does)."""
    link_edge: Any
    """(n_links,) int64: the combined link each input link contributes to, -1 if none."""
    contributions: Any
    """(n_links,) float64: each input link's term ``w / ext(t) * share(t)`` (NaN where undefined or
    where the link has an endpoint that is not pinned)."""


def aggregate_supernode_links(targets: Any, sources: Any, weights: Any, group: Any, *,
                              in_supernode: Any | None = None) -> SupernodeAggregation:
    """The viewer's supernode formula (``init-cg-subgraph.js``; ``research/geometry.md`` §3.3) on arrays.

    Links are ``(targets[k], sources[k], weights[k])`` over integer node ids; ``group[n]`` is the
    coarse node of node ``n`` (-1: not pinned; a pinned node alone in its group is a singleton).
    ``in_supernode[n]`` marks members of declared supernodes (default: nodes whose group has more
    than one member); only links between two members of one supernode are internal. For a pinned
    target t: ``in(t)`` = sum of |w| over all its incoming links, ``ext(t)`` = the same without
    internal links, ``share(t) = ext(t) / in(t)`` renormalised over t's group; the link S -> T is
    ``sum over s in S, t in T of w(s, t) / ext(t) * share(t)``.
    """
    import numpy as np

    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    s = np.asarray(sources, dtype=np.int64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    g = np.asarray(group, dtype=np.int64).reshape(-1)
    n_groups = int(g.max()) + 1 if g.size else 0
    if in_supernode is None:
        sizes = np.bincount(g[g >= 0], minlength=n_groups)  # (n_groups,)
        member = (g >= 0) & (sizes[np.maximum(g, 0)] > 1)
    else:
        member = np.asarray(in_supernode, dtype=bool).reshape(-1)
    pinned_t = g[t] >= 0
    internal = member[s] & (g[s] == g[t]) & pinned_t
    in_abs = np.bincount(t[pinned_t], np.abs(w[pinned_t]), minlength=g.size)  # (n_nodes,)
    external = pinned_t & ~internal
    ext = np.bincount(t[external], np.abs(w[external]), minlength=g.size)  # (n_nodes,)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(in_abs != 0, ext / in_abs, np.nan)  # (n_nodes,)
    pinned = np.flatnonzero(g >= 0)
    total = np.bincount(g[pinned], np.nan_to_num(share[pinned], nan=0.0), minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        share[pinned] = np.where(total[g[pinned]] != 0, share[pinned] / total[g[pinned]], np.nan)
    both = pinned_t & (g[s] >= 0)
    contributions = np.full(t.size, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(ext[t[both]] != 0, w[both] / ext[t[both]] * share[t[both]], np.nan)
    contributions[both] = terms
    key = np.where(both, g[t] * max(n_groups, 1) + g[s], -1)  # (n_links,)
    keep = both & (g[t] != g[s])
    unique, first, inverse = np.unique(key[keep], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # first-occurrence order, as the viewer's dict
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    link_edge = np.full(t.size, -1, dtype=np.int64)
    link_edge[keep] = rank[inverse.reshape(-1)]
    combined = np.zeros(order.size)
    np.add.at(combined, link_edge[keep], np.nan_to_num(contributions[keep], nan=0.0))
    pairs = unique[order]
    edge_index = np.stack([pairs // max(n_groups, 1), pairs % max(n_groups, 1)]).astype(np.int64)
    return SupernodeAggregation(edge_index, combined, link_edge, contributions)


def supernode_edges(graph_node_ids: Sequence[str], links: Sequence[Mapping[str, Any]],
                    pinned_ids: Sequence[str], supernodes: Sequence[Sequence[str]]) -> SupernodeView:
    """The viewer's supernode links (``init-cg-subgraph.js``; ``research/geometry.md`` §3.3).

    `graph_node_ids` and `links` (``{"source", "target", "weight"}``) are a viewer graph's. For a
    pinned target t, ``ext(t)`` is the sum of |w| of its incoming links from outside its own
    supernode and ``share(t) = ext(t) / in(t)``, renormalised over the members of t's group. A
    supernode link S -> T is ``sum over s in S, t in T of w(s, t) / ext(t) * share(t)``.
    At most the first 200 pinned ids count, as in the viewer. The arithmetic is
    :func:`aggregate_supernode_links`'s; a node listed in several supernodes belongs to the last.
    """
    import numpy as np

    wanted = set(pinned_ids[:200])
    pinned = [n for n in graph_node_ids if n in wanted]
    group_of, groups = _supernode_ids(pinned, supernodes)
    members = {p: [p] for p in pinned if p not in group_of} | groups
    names = list(members)
    index = {name: i for i, name in enumerate(names)}
    ids = {n: i for i, n in enumerate(dict.fromkeys([*graph_node_ids, *(str(x[k]) for x in links
                                                                          for k in ("source", "target"))]))}
    group = np.full(len(ids), -1, dtype=np.int64)
    in_supernode = np.zeros(len(ids), dtype=bool)
    for name, inside in members.items():
        for m in inside:
            group[ids[m]] = index[name]
            in_supernode[ids[m]] = m in group_of
    agg = aggregate_supernode_links([ids[str(x["target"])] for x in links], [ids[str(x["source"])] for x in links],
                                    [float(x["weight"]) for x in links], group, in_supernode=in_supernode)
    out = [SupernodeLink(names[s], names[t], float(w))
           for (t, s), w in zip(agg.edge_index.T.tolist(), agg.weights.tolist())]
    return SupernodeView(members, sorted(out, key=lambda link: abs(link.weight)))


# ----------------------------------------------------------------------------- prune results on disk

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
from tracer.io import atomic_path
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
    return [tokenizer.decode(t) for t in ids]


def _logit_tokens(graph: Graph, tokenizer: Tokenizer | Sequence[str] | None) -> list[str]:
    if len(graph.logit_tokens) == graph.n_logits:
        return list(graph.logit_tokens)
    if tokenizer is not None and hasattr(tokenizer, "decode"):
        return [tokenizer.decode(v) for v in graph.logit_token_ids.tolist()]  # type: ignore[union-attr]
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
        raise WorkbenchError("scan must be set to identify the model/transcoders; got an empty scan and "
                             "model id. Pass scan=... (the CLI: --scan).")
    return scan, []


def _check_qparams(supernodes: Sequence[Sequence[str]] | None, pinned_ids: Sequence[str] | None,
                   known: set[str]) -> tuple[list[list[str]], list[str]]:
    groups = [list(g) for g in (supernodes or [])]
    for g in groups:
        if len(g) < 2 or not all(isinstance(x, str) for x in g):
            raise WorkbenchError(f"each supernode must be [label, node_id, ...] (strings); got {g!r}. "
                                 "Example: ['Texas', '20_15589_10', '19_7477_9'].")
    pinned = [str(x) for x in (pinned_ids or [])]
    unknown = sorted({x for g in groups for x in g[1:]} | set(pinned) - known)
    if unknown:
        logger.warning("%d pinned/supernode ids are not in the exported graph (the viewer ignores "
                       "them): %s", len(unknown), ", ".join(unknown[:5]))
    return groups, pinned


def build_neuronpedia(graph: Graph, *, slug: str, prune_config: PruneConfig | None = None,
                      prune_result: PruneResult | None = None, labels: Mapping[Any, Any] | None = None,
                      supernodes: Sequence[Sequence[str]] | None = None,
                      pinned_ids: Sequence[str] | None = None,
                      tokenizer: Tokenizer | Sequence[str] | None = None,
                      scan: str | None = None) -> dict[str, Any]:
    """The viewer JSON as a dict (see :func:`export_neuronpedia`)."""
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise WorkbenchError(f"slug must be letters, digits, '.', '_' or '-' (no '/'); got {slug!r}. "
                             "It names the file <slug>.json.")
    config = prune_config or PruneConfig()
    result = prune_result if prune_result is not None else prune_graph(graph, config)
    ids = node_ids(graph)
    cumulative = result.cumulative_scores.float().tolist()
    nodes = _nodes(graph, result.node_mask.cpu(), cumulative, ids, _logit_tokens(graph, tokenizer), labels)
    links = _links(graph, result, ids)
    used = _used_nodes(nodes, links)
    groups, pinned = _check_qparams(supernodes, pinned_ids, {n["node_id"] for n in used})
    scan_name, transcoder_list = _scan(graph, scan)
    from tracer import __version__

    metadata = {
        "slug": slug, "scan": scan_name, "transcoder_list": transcoder_list,
        "prompt_tokens": _prompt_tokens(graph, tokenizer), "prompt": graph.input_string,
        "node_threshold": config.node_threshold, "schema_version": SCHEMA_VERSION,
        "info": {"generator": {"name": "manifold-workbench", "version": __version__}},
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
                       scan: str | None = None) -> Path:
    """Write ``<path>/<slug>.json`` and upsert ``<path>/graph-metadata.json``; return the former.

    `path` is a folder (created if missing) that ``circuit-tracer start-server --graph_file_dir``
    or Neuronpedia's uploader can read. `labels` maps a node id or (layer, feature) to a label
    (a string, or an object with ``.label`` such as :class:`tracer.labels.FeatureLabel`).
    `tokenizer` decodes the prompt tokens; or pass the token strings themselves. Writes are
    atomic: a failure leaves the previous files untouched.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise WorkbenchError(f"export path must be a folder; got the file {str(folder)!r}. Pass a folder.")
    data = build_neuronpedia(graph, slug=slug, prune_config=prune_config, prune_result=prune_result,
                             labels=labels, supernodes=supernodes, pinned_ids=pinned_ids,
                             tokenizer=tokenizer, scan=scan)
    index = _read_index(folder / "graph-metadata.json")
    target = folder / f"{slug}.json"
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    index["graphs"] = [g for g in index["graphs"] if g.get("slug") != slug] + [data["metadata"]]
    with atomic_path(folder / "graph-metadata.json") as tmp:
        tmp.write_text(json.dumps(index, indent=2, ensure_ascii=False), encoding="utf-8")
    logger.info("wrote %s", target)
    return target


def _read_index(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"graphs": []}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"{path.name} must be valid JSON; got a file that is not ({err}). "
                             f"Fix or delete {str(path)!r}.") from None
    if not isinstance(index, dict) or not isinstance(index.get("graphs"), list):
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


def _nansum(values: Sequence[float]) -> float:
    """d3.sum: NaN entries are skipped."""
    return sum(v for v in values if v == v)


def supernode_edges(graph_node_ids: Sequence[str], links: Sequence[Mapping[str, Any]],
                    pinned_ids: Sequence[str], supernodes: Sequence[Sequence[str]]) -> SupernodeView:
    """The viewer's supernode links (``init-cg-subgraph.js``; ``research/geometry.md`` §3.3).

    `graph_node_ids` and `links` (``{"source", "target", "weight"}``) are a viewer graph's. For a
    pinned target t, ``ext(t)`` is the sum of |w| of its incoming links from outside its own
    supernode and ``share(t) = ext(t) / in(t)``, renormalised over the members of t's group. A
    supernode link S -> T is ``sum over s in S, t in T of w(s, t) / ext(t) * share(t)``.
    At most the first 200 pinned ids count, as in the viewer.
    """
    wanted = set(pinned_ids[:200])
    pinned = [n for n in graph_node_ids if n in wanted]
    pinned_set = set(pinned)
    group_of, groups = _supernode_ids(pinned, supernodes)
    triples = [(str(link["source"]), str(link["target"]), float(link["weight"])) for link in links]
    in_abs = dict.fromkeys(pinned, 0.0)
    ext = dict.fromkeys(pinned, 0.0)
    for s, t, w in triples:
        if t in pinned_set:
            in_abs[t] += abs(w)
            if group_of.get(s) is None or group_of.get(s) != group_of.get(t):
                ext[t] += abs(w)
    share = {t: ext[t] / in_abs[t] if in_abs[t] else math.nan for t in pinned}
    members = {p: [p] for p in pinned if p not in group_of} | groups
    for group in members.values():
        total = _nansum([share[m] for m in group])
        for m in group:
            share[m] = share[m] / total if total else math.nan
    combined: dict[tuple[str, str], list[float]] = {}
    for s, t, w in triples:
        if s in pinned_set and t in pinned_set:
            key = (group_of.get(s, s), group_of.get(t, t))
            combined.setdefault(key, []).append(w / ext[t] * share[t] if ext[t] else math.nan)
    out = [SupernodeLink(s, t, _nansum(ws)) for (s, t), ws in combined.items() if s != t]
    return SupernodeView(members, sorted(out, key=lambda link: abs(link.weight)))


# ----------------------------------------------------------------------------- prune results on disk

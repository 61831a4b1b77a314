"""The viewer's supernode-edge formula as first written in ``tracer.graph.export`` (a frozen test oracle).

A line-by-line transcription of circuit-tracer's ``init-cg-subgraph.js`` on string ids (see
``research/geometry.md`` §3.3), kept unchanged while ``tracer.graph.export.supernode_edges`` runs on the
array implementation :func:`tracer.graph.export.aggregate_supernode_links`. Returns
``(members, [(source, target, weight), ...])`` in the viewer's order.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _supernode_ids(pinned: list[str],
                   supernodes: Sequence[Sequence[str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
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
    return sum(v for v in values if v == v)


def supernode_edges(graph_node_ids: Sequence[str], links: Sequence[Mapping[str, Any]],
                    pinned_ids: Sequence[str], supernodes: Sequence[Sequence[str]]
                    ) -> tuple[dict[str, list[str]], list[tuple[str, str, float]]]:
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
    out = [(s, t, _nansum(ws)) for (s, t), ws in combined.items() if s != t]
    return members, sorted(out, key=lambda link: abs(link[2]))

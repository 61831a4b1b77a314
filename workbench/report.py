"""A plain, self-contained HTML report of traced graphs and their analyses (inline SVG, no scripts,
no network).

Input is typed data (:class:`GraphSection`, with an optional :class:`CircuitView` of its readable
circuit, and :class:`ManifoldView` s), computed elsewhere; this module only renders. Figures made
by ``analyses`` Display objects arrive as SVG text (``Display.to_svg()``) and are inlined with their
element ids made unique to the page (:func:`scope_svg_ids`).
"""

import html
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from analyses.display import EDGE_COLOURS, NODE_COLOURS
from tracer.io import atomic_path

SCHEMA_VERSION = 2


@dataclass(frozen=True, kw_only=True)
class NodeView:
    node_id: str
    kind: str  # feature | error | token | logit
    layer: int  # tokens -1, logits n_layers
    pos: int
    label: str
    influence: float
    activation: float | None = None


@dataclass(frozen=True, kw_only=True)
class SupernodeRow:
    """One group of a readable circuit and its ablation check."""

    label: str
    kind: str  # supernode | feature
    n_members: int
    layers: tuple[int, int]
    positions: tuple[int, int]
    predicted_margin: float | None = None
    """change of the target's logit margin the graph predicts when the group is ablated"""
    measured_margin: dict[str, float] = field(default_factory=dict)
    """mode (frozen | free attention) -> the change measured on the real model"""
    win_rate: dict[str, float] = field(default_factory=dict)
    """mode -> share of random groups (matched in size, layer, position) whose ablation moved the margin less"""


@dataclass(frozen=True, kw_only=True)
class CircuitView:
    """The readable circuit of one graph: supernodes chosen under a node budget, scored."""

    budget: int
    n_groups: int
    n_supernodes: int
    n_features: int
    n_pruned_features: int
    compression: float
    subgraph: dict[str, dict[str, float]]
    """"pruned" | "circuit" -> {"replacement", "completeness"} (Neuronpedia's subgraph scores)"""
    sign_consistency: float
    """mass-weighted share of member-edge |weight| whose sign matches the supernode edge"""
    interventions: dict[str, dict[str, float]] | None
    """mode -> {"spearman_margin", "mean_win_rate", ...}; None without a model"""
    rows: list[SupernodeRow]
    figure_svg: str
    files: dict[str, str] = field(default_factory=dict)
    evidence: str = ""
    """what the groups were formed from, in words (e.g. "signed edge profiles, virtual weights")"""


@dataclass(frozen=True, kw_only=True)
class SteerRow:
    """The answer after steering one prompt to one value along a fitted curve."""

    target: str
    expected: str
    answer: str
    probability: float


@dataclass(frozen=True, kw_only=True)
class ManifoldView:
    """A fitted manifold: its figures (SVG), its scores and, optionally, one prompt steered along it."""

    title: str
    description: str
    facts: list[tuple[str, str]]
    """(what, value) rows, already formatted"""
    figures: list[tuple[str, str]]
    """(caption, SVG text)"""
    steering_caption: str = ""
    steering: list[SteerRow] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DiscoveryRow:
    """One feature family in a discovery ranking."""

    name: str
    n_members: int
    score: float
    """the ring score the ranking uses"""
    loop_score: float
    """the same without persistent H1"""
    h1: float | None
    """longest persistent-H1 bar over the bounding-box diagonal (None without ripser)"""
    cyclic: bool | None
    """what the world's truth says of the family (shown, never used to rank); None when unknown"""


@dataclass(frozen=True, kw_only=True)
class DiscoveryView:
    """An unsupervised ranking of a layer's families by ring evidence, with its figures."""

    title: str
    description: str
    rows: list[DiscoveryRow]
    figures: list[tuple[str, str]]
    """(caption, SVG text)"""
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GraphSection:
    title: str
    prompt_tokens: list[str]
    expected: str | None
    top_logits: list[tuple[str, float]]
    scores: dict[str, float]
    counts: dict[str, int]
    nodes: list[NodeView]
    edges: list[tuple[str, str, float]]  # (source id, target id, weight)
    n_layers: int
    files: dict[str, str] = field(default_factory=dict)
    circuit: CircuitView | None = None


_COLORS = {kind: NODE_COLOURS[kind] for kind in ("feature", "error", "token", "logit")}
"""Node colours: those of the supernode graph's figure (:data:`analyses.coarse.NODE_COLOURS`)."""
_MAX_EDGES = 400
"""The strongest edges drawn in a graph figure (the caption says how many of how many)."""
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;max-width:1200px;color:#222}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;display:block;overflow-x:auto;max-width:100%}
td,th{padding:.2rem .6rem;border-bottom:1px solid #eee;
text-align:left;font-size:.9rem} .num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#2a7d2a} .bad{color:#c0392b} figure{display:inline-block;margin:.5rem 1rem .5rem 0}
figure svg{border:none;background:none;max-width:100%;height:auto} figcaption{font-size:.85rem;color:#555}
.tok{display:inline-block;padding:.1rem .3rem;margin:.1rem;border:1px solid #ccc;border-radius:3px;
font-family:monospace} .muted{color:#595959} svg{border:1px solid #eee;background:#fcfcfc;max-width:100%;height:auto}
.row{display:flex;flex-wrap:wrap;gap:1rem 3rem} .wide{overflow-x:auto;max-width:100%}
.key{display:inline-block;width:.7rem;height:.7rem;border-radius:50%;margin:0 .2rem 0 .6rem}
@media (max-width:700px){body{margin:.8rem} td,th{padding:.15rem .3rem}}
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


_SVG_ELEMENT = re.compile(r"<svg\b.*?</svg>", re.S)
_ID = re.compile(r'\bid="([^"]+)"')


def scope_svg_ids(svg: str, prefix: str) -> str:
    """``svg`` with every id it defines, and every reference to one (``url(#id)``, ``href="#id"``,
    ``xlink:href="#id"``), prefixed: matplotlib names its glyphs, clip paths and markers alike in every
    figure, so figures inlined side by side would share ids (invalid HTML, and a figure whose
    definitions sit in a hidden one loses its text and clipping)."""
    ids = set(_ID.findall(svg))
    if not ids:
        return svg

    def ref(m: re.Match[str]) -> str:
        name = m.group(2)
        return f"{m.group(1)}{prefix}{name}{m.group(3)}" if name in ids else m.group(0)

    svg = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = re.sub(r"(url\(#)([^)\s]+)(\))", ref, svg)
    return re.sub(r'((?:xlink:)?href="#)([^"]+)(")', ref, svg)


def _scope_page_svgs(body: str) -> str:
    """Each inlined ``<svg>`` of the page with ids of its own (``f1-``, ``f2-``, ... in page order)."""
    count = itertools.count(1)
    return _SVG_ELEMENT.sub(lambda m: scope_svg_ids(m.group(0), f"f{next(count)}-"), body)


def _svg(sec: GraphSection, width: int = 1100, height: int = 520) -> str:
    """Nodes placed by (position, layer); edges drawn with width ~ |weight| (strongest first)."""
    n_pos = max(1, len(sec.prompt_tokens))
    rows = sec.n_layers + 2  # tokens, layers..., logits
    xs = lambda p: 40 + (width - 80) * (p + 0.5) / n_pos  # noqa: E731
    ys = lambda layer: height - 30 - (height - 60) * (layer + 1) / (rows - 1)  # noqa: E731
    place: dict[str, tuple[float, float]] = {}
    per_cell: dict[tuple[int, int], int] = {}
    for n in sec.nodes:
        k = per_cell.get((n.layer, n.pos), 0)
        per_cell[(n.layer, n.pos)] = k + 1
        place[n.node_id] = (xs(n.pos) + 9 * (k % 5) - 18, ys(n.layer) - 9 * (k // 5))
    wmax = max((abs(w) for _, _, w in sec.edges), default=1.0) or 1.0
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_esc(_graph_alt(sec))}">']
    for src, dst, w in sorted(sec.edges, key=lambda e: abs(e[2]))[-_MAX_EDGES:]:
        if src in place and dst in place:
            (x1, y1), (x2, y2) = place[src], place[dst]
            color = EDGE_COLOURS["inhibit" if w < 0 else "excite"]
            parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
                         f'stroke-opacity="0.35" stroke-width="{0.3 + 3 * abs(w) / wmax:.2f}"/>')
    for n in sec.nodes:
        x, y = place[n.node_id]
        title = _node_title(n, sec.prompt_tokens)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{_COLORS[n.kind]}"><title>{_esc(title)}'
                     "</title></circle>")
    for p, tok in enumerate(sec.prompt_tokens):
        parts.append(f'<text x="{xs(p):.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{_esc(tok)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _node_title(n: NodeView, tokens: list[str]) -> str:
    """A node's tooltip: what it is and where (a token node shows its token; an error node says so)."""
    if n.kind == "token":
        word = tokens[n.pos] if 0 <= n.pos < len(tokens) else n.label
        return f"token {word!r} at position {n.pos}"
    if n.kind == "error":
        return f"reconstruction error, layer {n.layer}, position {n.pos}"
    where = "logit" if n.kind == "logit" else f"feature {n.node_id}, layer {n.layer}, position {n.pos}"
    return f"{where}: {n.label}" if n.label else where


def _graph_alt(sec: GraphSection) -> str:
    kinds = {k: sum(n.kind == k for n in sec.nodes) for k in _COLORS}
    return (f"pruned attribution graph of {len(sec.nodes)} nodes ({kinds['feature']} features, {kinds['error']} "
            f"errors, {kinds['token']} tokens, {kinds['logit']} logits), the {min(len(sec.edges), _MAX_EDGES)} "
            f"strongest of {len(sec.edges)} edges drawn")


def _key() -> str:
    """The graph figures' colour key."""
    nodes = "".join(f'<span class=key style="background:{c}"></span>{k}s' for k, c in _COLORS.items())
    return f"Nodes:{nodes}. Edges: blue excite, red inhibit (width: strength)."


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "" if x is None or not math.isfinite(x) else format(x, fmt)


def _files(files: dict[str, str]) -> str:
    return "<ul>" + "".join(f"<li>{_esc(k)}: <code>{_esc(v)}</code></li>" for k, v in files.items()) + "</ul>"


def _figure(caption: str, svg: str) -> str:
    return f"<figure>{svg}<figcaption>{_esc(caption)}</figcaption></figure>"


def _span(lo_hi: tuple[int, int]) -> str:
    return str(lo_hi[0]) if lo_hi[0] == lo_hi[1] else f"{lo_hi[0]}-{lo_hi[1]}"


def _supernode_table(c: CircuitView, modes: list[str]) -> str:
    head = "".join(f"<th>measured, {_esc(m)}</th><th>beats random, {_esc(m)}</th>" for m in modes)
    rows = []
    for k, r in enumerate(c.rows):
        checks = "".join(f"<td class=num>{_num(r.measured_margin.get(m))}</td>"
                         f"<td class=num>{_num(r.win_rate.get(m), '.2f')}</td>" for m in modes)
        rows.append(f"<tr><td class=num>{k + 1}</td><td>{_esc(r.label)}</td><td class=num>{r.n_members}</td>"
                    f"<td class=num>{_span(r.layers)}</td><td class=num>{_span(r.positions)}</td>"
                    f"<td class=num>{_num(r.predicted_margin)}</td>{checks}</tr>")
    return ("<table><tr><th>#</th><th>group</th><th>features</th><th>layers</th><th>pos</th>"
            f"<th>predicted margin change</th>{head}</tr>{''.join(rows)}</table>")


def _circuit(c: CircuitView) -> str:
    sub = c.subgraph
    rows = [("subgraph replacement", sub["pruned"]["replacement"], sub["circuit"]["replacement"]),
            ("subgraph completeness", sub["pruned"]["completeness"], sub["circuit"]["completeness"])]
    scores = "".join(f"<tr><td>{k}</td><td class=num>{_num(a)}</td><td class=num>{_num(b)}</td></tr>"
                     for k, a, b in rows)
    checks = f"<tr><td>sign consistency of supernode edges</td><td class=num>{_num(c.sign_consistency)}</td></tr>"
    modes = sorted(c.interventions or {})
    for mode in modes:
        summ = (c.interventions or {})[mode]
        checks += (f"<tr><td>Spearman(predicted, measured margin change), attention {_esc(mode)}</td>"
                   f"<td class=num>{_num(summ.get('spearman_margin'))}</td></tr>"
                   f"<tr><td>mean share of matched random groups beaten, attention {_esc(mode)}</td>"
                   f"<td class=num>{_num(summ.get('mean_win_rate'))}</td></tr>")
    ablated = ("; each group is ablated on the real model and compared with the graph's prediction and with "
               "random groups matched in size, layer and position") if modes else ""
    caption = ("Supernode graph: groups (numbered as in the table below) at their mean position and layer; "
               "blue edges excite, red inhibit.")
    return (f"<h3>Readable circuit (supernodes)</h3><p>{c.n_features} of the pruned graph's {c.n_pruned_features} "
            f"features in {c.n_groups} groups ({c.n_supernodes} supernodes; budget {c.budget}): "
            f"{_num(c.compression, '.2f')} features per group. Grouped without labels (labels only name the "
            f"groups){' from ' + _esc(c.evidence) if c.evidence else ''}{ablated}.</p>"
            f"<div class=row><table><tr><th></th><th>pruned graph</th><th>readable circuit</th>"
            f"</tr>{scores}</table><table>{checks}</table></div>"
            f"{_figure(caption, c.figure_svg)}<div class=wide>{_supernode_table(c, modes)}</div>{_files(c.files)}")


def _manifold(m: ManifoldView) -> str:
    facts = "".join(f"<tr><td>{_esc(k)}</td><td class=num>{_esc(v)}</td></tr>" for k, v in m.facts)
    figures = "".join(_figure(cap, svg) for cap, svg in m.figures)
    steer = ""
    if m.steering:
        rows = "".join(
            f"<tr><td>{_esc(r.target)}</td><td>{_esc(r.expected)}</td>"
            f"<td class={'ok' if r.answer.strip() == r.expected else 'bad'}>{_esc(r.answer)}</td>"
            f"<td class=num>{_num(r.probability)}</td></tr>" for r in m.steering)
        hits = sum(r.answer.strip() == r.expected for r in m.steering)
        steer = (f"<h3>Steering</h3><p>{_esc(m.steering_caption)} The answer follows in {hits} of "
                 f"{len(m.steering)} cases.</p><table><tr><th>steered to</th><th>expected answer</th>"
                 f"<th>model's answer</th><th>probability</th></tr>{rows}</table>")
    return (f"<h2>{_esc(m.title)}</h2><p>{_esc(m.description)}</p><table>{facts}</table>{figures}{steer}"
            f"{_files(m.files)}")


def _discovery(d: DiscoveryView) -> str:
    def truth(c: bool | None) -> str:
        return "" if c is None else ("cyclic" if c else "not cyclic")

    rows = "".join(f"<tr><td class=num>{k + 1}</td><td>{_esc(r.name)}</td><td class=num>{r.n_members}</td>"
                   f"<td class=num>{_num(r.score)}</td><td class=num>{_num(r.loop_score)}</td>"
                   f"<td class=num>{_num(r.h1)}</td><td>{truth(r.cyclic)}</td></tr>" for k, r in enumerate(d.rows))
    figures = "".join(_figure(cap, svg) for cap, svg in d.figures)
    return (f"<h2>{_esc(d.title)}</h2><p>{_esc(d.description)}</p><table><tr><th>rank</th><th>family</th>"
            "<th>features</th><th>ring score</th><th>without H1</th><th>H1</th><th>truth (not used)</th></tr>"
            f"{rows}</table>{figures}{_files(d.files)}")


def _section(sec: GraphSection) -> str:
    toks = "".join(f'<span class="tok">{_esc(t)}</span>' for t in sec.prompt_tokens)
    logits = "".join(f"<tr><td>{_esc(t)}</td><td class=num>{p:.3f}</td></tr>" for t, p in sec.top_logits)
    scores = "".join(f"<tr><td>{_esc(k)}</td><td class=num>{v:.3f}</td></tr>" for k, v in sec.scores.items())
    counts = "".join(f"<tr><td>{_esc(k)}</td><td class=num>{v}</td></tr>" for k, v in sec.counts.items())
    feats = sorted((n for n in sec.nodes if n.kind == "feature"), key=lambda n: n.influence)[:40]
    rows = "".join(
        f"<tr><td>{_esc(n.node_id)}</td><td class=num>{n.layer}</td><td class=num>{n.pos}</td>"
        f"<td>{_esc(n.label)}</td><td class=num>{n.activation or 0:.3f}</td><td class=num>{n.influence:.3f}</td></tr>"
        for n in feats)
    expected = f"<p>Expected answer: <b>{_esc(sec.expected)}</b></p>" if sec.expected else ""
    return (f"<h2>{_esc(sec.title)}</h2><p>{toks}</p>{expected}"
            f"<div class=row><div><h3>Top predictions</h3><table>{logits}</table></div>"
            f"<div><h3>Scores</h3><table>{scores}</table></div><div><h3>Graph</h3><table>{counts}</table></div></div>"
            f"<h3>Pruned graph</h3><p class=muted>x: token position; y: tokens (bottom), layers, logits (top). "
            f"{_key()} The {min(len(sec.edges), _MAX_EDGES)} strongest of the {len(sec.edges)} kept edges are "
            f"drawn; hover a node for its label.</p>{_svg(sec)}"
            f"<h3>Most influential features</h3><div class=wide><table><tr><th>node</th><th>layer</th><th>pos</th>"
            f"<th>label</th><th>activation</th><th>cumulative influence</th></tr>{rows}</table></div>"
            f"{_files(sec.files)}"
            + (_circuit(sec.circuit) if sec.circuit is not None else ""))


def render_report(title: str, intro: str, sections: list[GraphSection],
                  manifolds: list[ManifoldView] | None = None, discoveries: list[DiscoveryView] | None = None) -> str:
    body = ("".join(_section(s) for s in sections) + "".join(_manifold(m) for m in manifolds or [])
            + "".join(_discovery(d) for d in discoveries or []))
    body = _scope_page_svgs(body)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_esc(title)}</title>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<meta name=generator content='manifold-workbench report schema {SCHEMA_VERSION}'>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1><p>{_esc(intro)}</p>{body}</body></html>")


def write_report(path: str | Path, title: str, intro: str, sections: list[GraphSection],
                 manifolds: list[ManifoldView] | None = None, discoveries: list[DiscoveryView] | None = None) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(title, intro, sections, manifolds, discoveries), encoding="utf-8")
    return Path(path)


def finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0

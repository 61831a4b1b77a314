"""A plain, self-contained HTML report of traced graphs (inline SVG, no scripts, no network).

Input is typed data (:class:`GraphSection`), computed elsewhere; this module only renders.
"""

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from tracer.io import atomic_path

SCHEMA_VERSION = 1


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


_COLORS = {"feature": "#4c78a8", "error": "#b0b0b0", "token": "#59a14f", "logit": "#e15759"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;max-width:1200px;color:#222}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0} td,th{padding:.2rem .6rem;border-bottom:1px solid #eee;
text-align:left;font-size:.9rem} .num{text-align:right;font-variant-numeric:tabular-nums}
.tok{display:inline-block;padding:.1rem .3rem;margin:.1rem;border:1px solid #ccc;border-radius:3px;
font-family:monospace} .muted{color:#777} svg{border:1px solid #eee;background:#fcfcfc}
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


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
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for src, dst, w in sorted(sec.edges, key=lambda e: abs(e[2]))[-400:]:
        if src in place and dst in place:
            (x1, y1), (x2, y2) = place[src], place[dst]
            color = "#d62728" if w < 0 else "#1f77b4"
            parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
                         f'stroke-opacity="0.35" stroke-width="{0.3 + 3 * abs(w) / wmax:.2f}"/>')
    for n in sec.nodes:
        x, y = place[n.node_id]
        title = f"{n.node_id} {n.kind} L{n.layer} p{n.pos}: {n.label}"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{_COLORS[n.kind]}"><title>{_esc(title)}'
                     "</title></circle>")
    for p, tok in enumerate(sec.prompt_tokens):
        parts.append(f'<text x="{xs(p):.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{_esc(tok)}</text>')
    parts.append("</svg>")
    return "".join(parts)


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
    files = "".join(f"<li>{_esc(k)}: <code>{_esc(v)}</code></li>" for k, v in sec.files.items())
    expected = f"<p>Expected answer: <b>{_esc(sec.expected)}</b></p>" if sec.expected else ""
    return (f"<h2>{_esc(sec.title)}</h2><p>{toks}</p>{expected}"
            f"<div style='display:flex;gap:3rem'><div><h3>Top predictions</h3><table>{logits}</table></div>"
            f"<div><h3>Scores</h3><table>{scores}</table></div><div><h3>Graph</h3><table>{counts}</table></div></div>"
            f"<h3>Pruned graph</h3><p class=muted>x: token position; y: tokens (bottom), layers, logits (top). "
            f"Blue edges excite, red inhibit; hover a node for its label.</p>{_svg(sec)}"
            f"<h3>Most influential features</h3><table><tr><th>node</th><th>layer</th><th>pos</th><th>label</th>"
            f"<th>activation</th><th>cumulative influence</th></tr>{rows}</table><ul>{files}</ul>")


def render_report(title: str, intro: str, sections: list[GraphSection]) -> str:
    body = "".join(_section(s) for s in sections)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_esc(title)}</title>"
            f"<meta name=generator content='manifold-workbench report schema {SCHEMA_VERSION}'>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1><p>{_esc(intro)}</p>{body}</body></html>")


def write_report(path: str | Path, title: str, intro: str, sections: list[GraphSection]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(title, intro, sections), encoding="utf-8")
    return Path(path)


def finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0

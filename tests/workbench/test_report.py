"""The report's page-level invariants that need no browser: inlined figures share no element ids."""

import re

import numpy as np

from workbench.report import ManifoldView, render_report, scope_svg_ids


def _figure_svg() -> str:
    from analyses.manifolds.display import FrequencyR2Display

    display = FrequencyR2Display(frequencies=[1, 2, 3], r2=[0.9, 0.2, 0.1], spectrum=np.array([0.8, 0.15, 0.05]),
                                 chosen=1)
    return display.to_svg()


def _ids(svg: str) -> list[str]:
    return re.findall(r'\bid="([^"]+)"', svg)


def _references(svg: str) -> set[str]:
    return set(re.findall(r"url\(#([^)\s]+)\)", svg)) | set(re.findall(r'href="#([^"]+)"', svg))


def test_two_identical_figures_on_one_page_share_no_ids_and_keep_their_references():
    svg = _figure_svg()
    assert _ids(svg) and _references(svg)  # matplotlib's glyphs and clip paths: the ids at stake
    view = ManifoldView(title="m", description="d", facts=[], figures=[("a", svg), ("b", svg)], steering_caption="",
                        steering=[], files={})
    page = render_report("t", "i", [], manifolds=[view])
    figures = re.findall(r"<svg\b.*?</svg>", page, re.S)
    assert len(figures) == 2
    ids = [i for f in figures for i in _ids(f)]
    assert len(ids) == len(set(ids)) == 2 * len(_ids(svg))
    for figure in figures:  # every reference names a definition in its own figure
        assert _references(figure) <= set(_ids(figure))


def test_scope_svg_ids_leaves_foreign_references_and_id_free_svgs_alone():
    assert scope_svg_ids('<svg><a href="#top">x</a></svg>', "f1-") == '<svg><a href="#top">x</a></svg>'
    svg = '<svg><clipPath id="c"/><g clip-path="url(#c)"/><use xlink:href="#c"/><a href="#elsewhere"/></svg>'
    assert scope_svg_ids(svg, "f2-") == ('<svg><clipPath id="f2-c"/><g clip-path="url(#f2-c)"/>'
                                         '<use xlink:href="#f2-c"/><a href="#elsewhere"/></svg>')


def test_graph_figures_share_the_supernode_figures_palette():
    """The report's pruned graph drew features blue (an edge colour) and tokens another green than the
    supernode graph beside it; both now draw from analyses.display's palette."""
    from analyses.display import EDGE_COLOURS, NODE_COLOURS
    from workbench.report import GraphSection, NodeView, _svg

    nodes = [NodeView(node_id=k, kind=k, layer=layer, pos=0, label=k, influence=1.0)
             for k, layer in (("token", -1), ("feature", 0), ("error", 0), ("logit", 1))]
    sec = GraphSection(title="t", prompt_tokens=["a"], expected=None, top_logits=[], scores={}, counts={},
                       nodes=nodes, edges=[("token", "feature", 1.0), ("feature", "logit", -0.5)], n_layers=1)
    svg = _svg(sec)
    fills = re.findall(r'<circle [^>]*fill="([^"]+)"', svg)  # in node order
    assert fills == [NODE_COLOURS[n.kind] for n in nodes]
    assert set(re.findall(r'stroke="([^"]+)"', svg)) == set(EDGE_COLOURS.values())

"""Viewer node ids (Neuronpedia / circuit-tracer), in node order.

    feature  "{layer}_{feature}_{pos}"     feature = cantor(layer, feature)
    error    "0_{layer}_{pos}"             (circuit-tracer's format: it can collide with a
                                            layer-0 feature id; kept as is for compatibility)
    token    "E_{token_id}_{pos}"
    logit    "{n_layers + 1}_{vocab_id}_{n_pos - 1}"
"""

from tracer.graph.core import Graph


def cantor_pairing(x: int, y: int) -> int:
    """The viewer's feature number for (layer, feature)."""
    return (x + y) * (x + y + 1) // 2 + y


def node_ids(graph: Graph) -> list[str]:
    """The viewer id of every node, in node order (see the module docstring)."""
    sel = graph.active_features[graph.selected_features].tolist()
    ids = [f"{layer}_{feat}_{pos}" for layer, pos, feat in sel]
    ids += [f"0_{layer}_{pos}" for layer in range(graph.n_layers) for pos in range(graph.n_pos)]
    ids += [f"E_{tok}_{pos}" for pos, tok in enumerate(graph.input_tokens.tolist())]
    ids += [f"{graph.n_layers + 1}_{vocab}_{graph.n_pos - 1}" for vocab in graph.logit_token_ids.tolist()]
    return ids

"""Attribution = intervention: an adjacency column is the change its source causes in the frozen model."""

from collections.abc import Sequence

import torch
from torch import Tensor

from tracer.graph.checks import check_transcoders_match
from tracer.graph.core import Graph
from tracer.interventions.api import (
    Intervention,
    InterventionResult,
    VectorAddition,
    _bad,
    _clean_for,
    add_to_embedding,
    add_to_output_location,
    feature_intervention,
)
from tracer.interventions.clean import CleanRun
from tracer.models.loaded import LoadedModel
from tracer.replacement import logit_vectors
from tracer.transcoders.base import Transcoders


def node_perturbation(graph: Graph, node: int, clean: CleanRun) -> Intervention | VectorAddition:
    """What adds source ``node``'s output vector once more: a feature's ``a * W_dec`` (an 'add' of
    its clean activation), an error vector at its output location, or a token's embedding."""
    if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < graph.logit_start:
        raise _bad("source node", f"a feature, error or token node index in [0, {graph.logit_start})", node,
                   "Logit nodes have no outgoing edges.")
    if node < graph.n_selected:
        layer, p, f = (int(x) for x in graph.active_features[graph.selected_features[node]])
        value = float(clean.activations(layer)[p, f])
        return Intervention(layer=layer, position=p, feature=f, value=value, mode="add")
    if node < graph.token_start:
        layer, p = divmod(node - graph.error_start, graph.n_pos)
        return add_to_output_location(layer, p, clean.error_vectors()[layer, p])
    p = node - graph.token_start
    return add_to_embedding(p, clean.token_vectors[p])


def readings(loaded: LoadedModel, graph: Graph, result: InterventionResult) -> Tensor:
    """(n_nodes,) every target's reading: selected features' pre-activations, and logit nodes'
    ``final_hidden[-1] @ (W_U[tok] - mean W_U)`` (the demeaned logit before any softcap);
    zero for error and token nodes. Needs ``apply_activation_function=False``."""
    if result.activations is None or not result.pre_activations or result.activations.is_sparse:
        raise _bad("result", "a run with dense pre-activations", "another run",
                   "Use return_activations=True, apply_activation_function=False, sparse=False.")
    acts = result.activations
    out = acts.new_zeros(graph.n_nodes)
    sel = graph.active_features[graph.selected_features].to(acts.device)  # (n_selected, 3)
    out[:graph.n_selected] = acts[sel[:, 0], sel[:, 1], sel[:, 2]]
    vecs = logit_vectors(loaded.W_U.detach().to(acts.dtype), graph.logit_token_ids)  # (n_logits, d)
    out[graph.logit_start:] = vecs @ result.final_hidden[-1].to(acts.dtype)
    return out


def measured_columns(loaded: LoadedModel, transcoders: Transcoders, graph: Graph, nodes: Sequence[int], *,
                     clean: CleanRun | None = None) -> Tensor:
    """(n_nodes, len(nodes)): the change of every target's reading when each source node's output
    vector is added once more to the frozen model (attention, norms and all MLP outputs frozen).
    Attribution promises ``graph.adjacency[:, nodes]`` equals this. ``transcoders`` must be the graph's."""
    check_transcoders_match(graph, transcoders, warn=False)
    clean = _clean_for(loaded, transcoders, graph.input_tokens, clean)

    def run(items: list[object]) -> Tensor:
        res = feature_intervention(loaded, transcoders, clean.tokens, items, freeze_attention=True,
                                   constrained_layers="all", apply_activation_function=False, clean=clean)
        return readings(loaded, graph, res)

    base = run([])
    return torch.stack([run([node_perturbation(graph, int(n), clean)]) - base for n in nodes], 1)

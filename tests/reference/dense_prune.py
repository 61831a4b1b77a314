"""Obviously-right dense implementations of circuit-tracer 0.5.0's prune and scores (the test oracle).

Written from the formulas in ``research/circuit-tracer-algorithm.md`` §6 and
``research/geometry.md`` §3.3-3.4: every N x N quantity is materialised, exactly as circuit-tracer
does, and nothing is clever. ``tracer.graph.prune`` must agree with these bit for bit (single-block
sizes) or to float32 rounding (blocked sizes).

Also :func:`random_graph`: small random attribution graphs with the real block structure.
"""

import torch
from torch import Tensor

from tracer.graph import Graph


# ----------------------------------------------------------------------------- random graphs
def random_graph(seed: int, *, n_layers: int = 3, n_pos: int = 5, max_features: int = 4,
                 n_logits: int = 3, density: float = 0.6, d_transcoder: int = 50,
                 n_selected: int | None = None) -> Graph:
    """A random acyclic attribution graph in circuit-tracer's node order.

    Features sit at positions >= 1 (BOS features are zeroed in real graphs). A feature at
    (layer l, pos p) reads features and errors of layers < l at positions <= p, and tokens at
    positions <= p; logits read everything. Error and token rows are zero; the BOS error
    columns are zero too (circuit-tracer zeroes the BOS error vectors).
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for layer in range(n_layers):
        for pos in range(1, n_pos):
            k = int(torch.randint(0, max_features + 1, (1,), generator=gen))
            for feat in sorted(torch.randperm(d_transcoder, generator=gen)[:k].tolist()):
                rows.append((layer, pos, feat))
    active = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)  # (n_active, 3)
    n_active = active.shape[0]
    if n_selected is None or n_selected >= n_active:
        selected = torch.arange(n_active)
    else:
        selected = torch.sort(torch.randperm(n_active, generator=gen)[:n_selected]).values
    sel = active[selected]  # (n_sel, 3)
    n_sel = sel.shape[0]
    n_nodes = n_sel + n_layers * n_pos + n_pos + n_logits
    layer_of = torch.cat([sel[:, 0], torch.arange(n_layers).repeat_interleave(n_pos),
                          torch.full((n_pos,), -1), torch.full((n_logits,), n_layers)])  # (n_nodes,)
    pos_of = torch.cat([sel[:, 1], torch.arange(n_pos).repeat(n_layers), torch.arange(n_pos),
                        torch.full((n_logits,), n_pos - 1)])  # (n_nodes,)
    is_target = torch.zeros(n_nodes, dtype=torch.bool)
    is_target[:n_sel] = True
    is_target[n_nodes - n_logits:] = True
    allowed = (layer_of[None, :] < layer_of[:, None]) & (pos_of[None, :] <= pos_of[:, None])
    allowed &= is_target[:, None]
    allowed[:, n_sel:n_sel + n_layers * n_pos:n_pos] = False  # BOS error columns
    allowed &= torch.rand(n_nodes, n_nodes, generator=gen) < density
    adjacency = torch.randn(n_nodes, n_nodes, generator=gen) * allowed  # (n_nodes, n_nodes)
    probs = torch.sort(torch.rand(n_logits, generator=gen), descending=True).values
    probs = probs / probs.sum() * 0.9  # (n_logits,)
    return Graph(
        adjacency=adjacency.float(), input_tokens=torch.randint(0, 100, (n_pos,), generator=gen),
        active_features=active, activation_values=torch.rand(n_active, generator=gen) * 3,
        selected_features=selected, logit_token_ids=torch.randperm(100, generator=gen)[:n_logits],
        logit_probabilities=probs.float(), logit_vectors=torch.randn(n_logits, 8, generator=gen),
        n_layers=n_layers, d_vocab=100, model_id="random/model", scan="random-scan",
        input_string=" ".join(f"t{i}" for i in range(n_pos)),
        logit_tokens=tuple(f"w{i}" for i in range(n_logits)),
    )


# ----------------------------------------------------------------------------- dense formulas
def logit_weights(graph: Graph) -> Tensor:
    w = torch.zeros(graph.n_nodes)
    w[graph.n_nodes - graph.n_logits:] = graph.logit_probabilities
    return w


def normalize(matrix: Tensor, clamp: float = 1e-10) -> Tensor:
    a = matrix.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=clamp)


def influence(a_hat: Tensor, w: Tensor) -> Tensor:
    current = w @ a_hat
    total = current.clone()
    for _ in range(1000):
        if not current.any():
            return total
        current = current @ a_hat
        total += current
    raise RuntimeError("did not converge")


def find_threshold(scores: Tensor, threshold: float) -> Tensor:
    s = torch.sort(scores, descending=True).values
    cum = torch.cumsum(s, 0) / torch.sum(s)
    return s[min(int(torch.searchsorted(cum, threshold)), len(cum) - 1)]


def prune(graph: Graph, node_threshold: float = 0.8,
          edge_threshold: float = 0.98) -> tuple[Tensor, Tensor, Tensor]:
    """(node_mask, dense edge_mask, cumulative_scores), exactly circuit-tracer's steps."""
    A, w = graph.adjacency, logit_weights(graph)
    n_inner, n_feat = graph.token_start, graph.n_selected
    node_infl = influence(normalize(A), w)
    node_mask = node_infl >= find_threshold(node_infl, node_threshold)
    node_mask[n_inner:] = True
    pruned = A.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    p_hat = normalize(pruned)
    edge_scores = p_hat * (influence(p_hat, w) + w)[:, None]
    edge_mask = edge_scores >= find_threshold(edge_scores.flatten(), edge_threshold)
    old = node_mask.clone()
    node_mask[:n_inner] &= edge_mask[:, :n_inner].any(0)
    node_mask[:n_feat] &= edge_mask[:n_feat].any(1)
    while not torch.equal(node_mask, old):
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[:n_inner] &= edge_mask[:, :n_inner].any(0)
        node_mask[:n_feat] &= edge_mask[:n_feat].any(1)
    s, order = torch.sort(node_infl, descending=True)
    cum = torch.zeros_like(node_infl)
    cum[order] = torch.cumsum(s, 0) / torch.sum(s)
    return node_mask, edge_mask, cum


def graph_scores(graph: Graph) -> tuple[float, float]:
    A, w = graph.adjacency, logit_weights(graph)
    a_hat = normalize(A)
    infl = influence(a_hat, w)
    err = slice(graph.error_start, graph.token_start)
    tok = infl[graph.token_start:graph.logit_start].sum()
    replacement = tok / (tok + infl[err].sum())
    out = infl + w
    completeness = ((1 - a_hat[:, err].sum(-1)) * out).sum() / out.sum()
    return float(replacement), float(completeness)


def partial_influences(edge_rows: Tensor, logit_p: Tensor, row_to_node: Tensor,
                       max_iter: int = 128) -> Tensor:
    a_hat = normalize(edge_rows, clamp=1e-8)
    infl = torch.zeros(edge_rows.shape[1])
    prod = torch.zeros(edge_rows.shape[1])
    prod[-len(logit_p):] = logit_p
    for _ in range(max_iter):
        prod = prod[row_to_node] @ a_hat
        if not prod.any():
            return infl
        infl += prod
    raise RuntimeError("did not converge")


def viewer_scores(graph: Graph, node_mask: Tensor, edge_mask: Tensor,
                  pinned: set[int] | None) -> tuple[float, float]:
    """Neuronpedia's score.worker.ts on the viewer graph, densely in float64.

    Viewer graph: kept edges between kept nodes; kept nodes touching one, plus tokens and logits.
    With `pinned` (node indices; None = no pins), unpinned feature columns are added to the
    column of the error node of their (layer, pos) if that node is shown, then the feature's
    row and column are zeroed.
    """
    n = graph.n_nodes
    em = edge_mask & node_mask[:, None] & node_mask[None, :]
    shown = (em.any(0) | em.any(1)) & node_mask
    shown[graph.token_start:] = True
    W = torch.where(em, graph.adjacency.double(), torch.zeros((), dtype=torch.float64))
    if pinned is not None:
        layer, pos = graph.node_layer(), graph.node_pos()
        for f in range(graph.n_selected):
            if not shown[f] or f in pinned:
                continue
            e = graph.error_start + int(layer[f]) * graph.n_pos + int(pos[f])
            if shown[e]:
                W[:, e] += W[:, f]
            W[f, :] = 0
            W[:, f] = 0
    w = torch.zeros(n, dtype=torch.float64)
    w[n - graph.n_logits:] = graph.logit_probabilities.double()
    a = W.abs()
    a_hat = a / a.sum(1, keepdim=True).clamp(min=1e-10)
    infl = influence(a_hat, w)
    err = slice(graph.error_start, graph.token_start)
    tok = infl[graph.token_start:graph.logit_start].sum()
    replacement = float(tok / (tok + infl[err].sum()))
    out = infl + w
    completeness = float(((1 - a_hat[:, err].sum(-1)) * out).sum() / out.sum())
    replacement, completeness = (0.0 if v != v else v for v in (replacement, completeness))  # NaN -> 0
    return replacement, completeness

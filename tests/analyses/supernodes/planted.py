"""Attribution graphs with planted supernodes: groups of features with one edge profile.

Every (layer, pos >= 1) cell holds a few planted groups and some lone features. A *unit* (a group,
a lone feature, an error node or a token) has a random sparse signed profile of incoming weights
from earlier units at positions <= its own; each member of a group reads that profile and is read
through its group's column, each weight jittered by a factor ``1 + jitter * N(0, 1)``. Members of
a group therefore have near-identical signed edge profiles; different units have independent ones.
Every unit feeds at least one logit or later unit, so no feature lacks outgoing edges.
"""

import numpy as np
import torch

from tracer.graph import Graph


def _units(rng: np.random.Generator, n_layers: int, n_pos: int, groups_per_cell: int,
           sizes: tuple[int, int], lone_per_cell: int) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Features (layer, pos, feature) sorted, and each one's unit id (groups first, then lone)."""
    feats, n_units = [], 0
    for layer in range(n_layers):
        for pos in range(1, n_pos):
            counts = [int(rng.integers(sizes[0], sizes[1] + 1)) for _ in range(groups_per_cell)]
            counts += [1] * lone_per_cell
            idx = rng.permutation(500)[: sum(counts)]
            k = 0
            for c in counts:
                for _ in range(c):
                    feats.append((layer, pos, int(idx[k]), n_units))
                    k += 1
                n_units += 1
    feats.sort()
    return [f[:3] for f in feats], [f[3] for f in feats]


def planted_graph(seed: int, *, n_layers: int = 3, n_pos: int = 4, groups_per_cell: int = 2,
                  sizes: tuple[int, int] = (2, 4), lone_per_cell: int = 1, jitter: float = 0.1,
                  density: float = 0.5, n_logits: int = 2) -> tuple[Graph, np.ndarray]:
    """(graph, truth): truth[i] is the planted unit of feature node i (lone features: their own)."""
    rng = np.random.default_rng(seed)
    feats, unit_of = _units(rng, n_layers, n_pos, groups_per_cell, sizes, lone_per_cell)
    F, L, P = len(feats), n_layers, n_pos
    n_units = max(unit_of) + 1
    N = F + L * P + P + n_logits
    # node -> unit: features by group; errors, tokens, logits are their own units
    node_unit = np.concatenate([unit_of, n_units + np.arange(N - F)])
    layer = np.array([f[0] for f in feats] + [x for x in range(L) for _ in range(P)] + [-1] * P + [L] * n_logits)
    pos = np.array([f[1] for f in feats] + list(range(P)) * L + list(range(P)) + [P - 1] * n_logits)
    U = n_units + N - F
    u_layer, u_pos = np.zeros(U, dtype=int), np.zeros(U, dtype=int)
    u_layer[node_unit], u_pos[node_unit] = layer, pos
    is_target = np.zeros(U, dtype=bool)
    is_target[node_unit[:F]] = True
    is_target[node_unit[N - n_logits:]] = True
    allowed = (u_layer[None, :] < u_layer[:, None]) & (u_pos[None, :] <= u_pos[:, None]) & is_target[:, None]
    allowed[:, node_unit[F:F + L * P:P]] = False  # BOS errors are zero
    W = rng.standard_normal((U, U)) * allowed * (rng.random((U, U)) < density)
    for u in np.unique(node_unit[:F]):  # every feature unit feeds some logit
        if not W[:, u].any():
            W[node_unit[N - 1 - rng.integers(n_logits)], u] = rng.standard_normal()
    A = W[np.ix_(node_unit, node_unit)] * (1 + jitter * rng.standard_normal((N, N)))
    A[F:N - n_logits] = 0.0  # error and token rows are empty
    probs = np.sort(rng.random(n_logits))[::-1]
    graph = Graph(
        adjacency=torch.tensor(A, dtype=torch.float32), input_tokens=torch.arange(10, 10 + P),
        active_features=torch.tensor(feats, dtype=torch.long).reshape(-1, 3),
        activation_values=torch.tensor(rng.uniform(0.5, 3.0, F), dtype=torch.float32),
        selected_features=torch.arange(F), logit_token_ids=torch.arange(50, 50 + n_logits),
        logit_probabilities=torch.tensor(probs / probs.sum() * 0.9, dtype=torch.float32),
        logit_vectors=torch.randn(n_logits, 8, generator=torch.Generator().manual_seed(seed)),
        n_layers=L, d_vocab=100, model_id="planted", input_string=" ".join(f"t{i}" for i in range(P)),
        logit_tokens=tuple(f"w{i}" for i in range(n_logits)),
    )
    return graph, np.asarray(unit_of)

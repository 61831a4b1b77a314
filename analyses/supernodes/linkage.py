"""Constrained, deterministic complete-linkage clustering (pure functions on arrays).

``research/geometry.md`` §7(a), steps 4-5: distances ``1 - affinity`` (affinity clipped to [0, 1]);
cannot-link pairs get distance :data:`FAR` (> 1), so complete linkage never joins them below any
admissible cut (a cluster's height is its largest pairwise distance). Items are sorted by their
canonical keys (for graph features: layer, position, feature) before scipy's ``linkage`` runs and
distances are rounded to 1e-6 (the similarities are float32 products), so the partition does not
depend on the order the items come in, nor on float noise in the last bits. Clusters are numbered
by their first item in canonical order.

Items come in blocks (graph features: one block per position unless cross-position groups are
allowed): each block is linked on its own and the block roots are joined at FAR, which gives the
partition one linkage of all items would give with cannot-links between blocks, at a fraction of
the cost (checked by a property test).

The cut: ``"threshold"`` cuts at ``max_height``; ``"auto"`` tries the merge heights up to
``max_height`` and keeps the one with the best mean silhouette (distances clipped to 1; a one-item
cluster scores 0), ties to the coarser cut. Clusters larger than ``max_size`` are split along the
dendrogram into their largest admissible sub-clusters.
"""

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

FAR = 2.0
"""Distance given to cannot-link pairs (admissible cuts are <= 1)."""
_AUTO_CANDIDATES = 12
_DENSE_SILHOUETTE = 512
"""Blocks up to this size compute silhouettes with a dense one-hot product (less overhead)."""
"""Most cut heights the automatic cut scores."""


class Clustering(NamedTuple):
    labels: np.ndarray
    """(n,) int64 cluster of each item (input order), numbered by first item in canonical order."""
    linkage: np.ndarray
    """(n - 1, 4) scipy linkage matrix over the items in canonical order."""
    order: np.ndarray
    """(n,) int64: canonical position k holds input item order[k]."""
    height: float
    """The cut height used (a distance, 1 - affinity)."""


def cannot_link(keys: np.ndarray, effects: np.ndarray, out_cos: np.ndarray, edges: np.ndarray,
                in_mass: np.ndarray, *, cross_position: bool, max_layer_span: int,
                negative_edge_tolerance: float) -> np.ndarray:
    """(n, n) bool: pairs that may not share a group (Anthropic's criteria, §7a step 4).

    keys (n, 3) (layer, pos, feature); effects (n,) signed effect on the target logits; out_cos
    (n, n) cosine of outgoing edge profiles; edges (n, n) ``A[target, source]`` among the items;
    in_mass (n,) each item's total incoming |weight|.
    """
    sign = np.sign(effects)
    bad = (sign[:, None] * sign[None, :]) < 0  # opposite pushes on the target logits
    bad |= out_cos <= 0
    limit = negative_edge_tolerance * in_mass  # (n,) per target
    negative = edges < -limit[:, None]  # (target, source)
    bad |= negative | negative.T
    if not cross_position:
        bad |= keys[:, 1][:, None] != keys[:, 1][None, :]
    bad |= np.abs(keys[:, 0][:, None] - keys[:, 0][None, :]) > max_layer_span
    np.fill_diagonal(bad, False)
    return bad


def role_cannot_link(roles: np.ndarray) -> np.ndarray:
    """(n, n) bool: pairs whose roles (n,) differ, where both have one (-1: no role, no constraint)."""
    known = roles >= 0
    return (roles[:, None] != roles[None, :]) & known[:, None] & known[None, :]


def _distances(affinity: np.ndarray, cannot: np.ndarray) -> np.ndarray:
    dist = 1.0 - np.clip(affinity, 0.0, 1.0)
    dist = np.maximum(dist, dist.T)  # symmetric whatever the input's rounding
    dist[cannot | cannot.T] = FAR
    np.fill_diagonal(dist, 0.0)
    return np.round(dist, 6)  # similarities come from float32 products: ignore their last bits


def cut_linkage(Z: np.ndarray, height: float, max_size: int) -> np.ndarray:
    """(n,) cluster of each canonical item: the largest dendrogram nodes with height <= ``height``
    and at most ``max_size`` items, numbered by their first item."""
    n = Z.shape[0] + 1
    merges = Z.tolist()
    parent = [-1] * (2 * n - 1)
    for k, (a, b, _, _) in enumerate(merges):
        parent[int(a)] = parent[int(b)] = n + k
    valid = [True] * n + [h <= height and size <= max_size for _, _, h, size in merges]
    root = list(range(2 * n - 1))
    for node in range(2 * n - 2, -1, -1):  # parents before children
        p = parent[node]
        if p >= 0 and valid[p]:
            root[node] = root[p]  # a valid parent is a valid node's cluster (valid is downward closed)
    _, first, inverse = np.unique(np.array(root[:n]), return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)]


class Block(NamedTuple):
    """Items clustered together; items of different blocks never share a cluster (distance FAR)."""

    affinity: np.ndarray
    """(n_b, n_b) affinities among the block's items."""
    cannot: np.ndarray
    """(n_b, n_b) bool cannot-link pairs."""
    items: np.ndarray
    """(n_b,) int64 the items' indices among all items (rows of ``keys``)."""


def silhouette(dist: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a partition under a symmetric ``dist`` clipped to 1 (one-item clusters score 0)."""
    n = labels.size
    k = int(labels.max()) + 1
    if k in (1, n):
        return 0.0
    return float(_block_silhouettes(dist, labels, others_outside=False).mean())


def _block_silhouettes(dist: np.ndarray, labels: np.ndarray, *, others_outside: bool) -> np.ndarray:
    """(n,) silhouette of each item of one block (labels 0..k-1 local); ``others_outside``: clusters
    outside the block exist, at distance 1 (the clipped FAR)."""
    n = labels.size
    k = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    clipped = dist if dist.max() <= 1.0 else np.minimum(dist, 1.0)
    if n <= _DENSE_SILHOUETTE:
        onehot = np.zeros((n, k), dtype=clipped.dtype)
        onehot[np.arange(n), labels] = 1.0
        sums = (clipped @ onehot).astype(np.float64)  # (n, k) summed distance to each cluster
    else:
        sparse = sp.csr_matrix((np.ones(n, dtype=clipped.dtype), (labels, np.arange(n))), shape=(k, n))
        sums = np.asarray(sparse @ clipped).T.astype(np.float64)  # (n, k) (dist is symmetric)
    own = sizes[labels]
    a = sums[np.arange(n), labels] / np.maximum(own - 1, 1)
    means = sums / sizes[None, :]
    means[np.arange(n), labels] = np.inf
    b = means.min(1)
    if others_outside:
        b = np.minimum(b, 1.0)
    return np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)


def _pooled_silhouette(parts: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray,
                       cache: dict[tuple[int, bytes], float] | None = None) -> float:
    """Mean silhouette over all items of a partition that never crosses blocks (cross-block distance 1).
    ``parts``: per block, (global canonical ids, clipped canonical distances). ``cache`` keeps each
    block's summed silhouette by its local partition (most blocks do not change between cuts)."""
    total = int(labels.max()) + 1
    if total in (1, labels.size):
        return 0.0
    cache = {} if cache is None else cache
    summed = 0.0
    for b, (ids, dist) in enumerate(parts):
        _, local = np.unique(labels[ids], return_inverse=True)
        local = local.reshape(-1)
        outside = total > int(local.max()) + 1
        key = (b * 2 + outside, local.tobytes())
        if key not in cache:
            cache[key] = float(_block_silhouettes(dist, local, others_outside=outside).sum())
        summed += cache[key]
    return summed / labels.size


def _auto_height(Z: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]], max_height: float,
                 max_size: int) -> float:
    heights = np.unique(Z[Z[:, 2] <= max_height, 2])
    if heights.size == 0:
        return float(max_height)
    if heights.size > _AUTO_CANDIDATES:
        picks = np.linspace(0, heights.size - 1, _AUTO_CANDIDATES).round().astype(np.int64)
        heights = np.unique(np.append(heights[picks], heights[-1]))
    best, best_score = float(heights[-1]), -np.inf
    cache: dict[tuple[int, bytes], float] = {}
    for h in heights[::-1]:  # coarse to fine: ties keep the coarser cut
        score = _pooled_silhouette(parts, cut_linkage(Z, float(h), max_size), cache)
        if score > best_score + 1e-12:
            best, best_score = float(h), score
    return best


def _combine(block_links: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """One (n - 1, 4) linkage from each block's (global canonical ids, local linkage): block merges
    sorted by (height, block, row), then the block roots joined at FAR in block order."""
    rows = sorted((float(Zb[k, 2]), b, k) for b, (_, Zb) in enumerate(block_links) for k in range(Zb.shape[0]))
    node_of: dict[tuple[int, int], int] = {}
    Z = np.zeros((n - 1, 4))
    for r, (_, b, k) in enumerate(rows):
        node_of[(b, k)] = n + r
    for r, (h, b, k) in enumerate(rows):
        ids, Zb = block_links[b]
        nb = ids.size
        a, c = (int(x) for x in Zb[k, :2])
        Z[r] = [ids[a] if a < nb else node_of[(b, a - nb)], ids[c] if c < nb else node_of[(b, c - nb)], h, Zb[k, 3]]
    roots = [(int(ids[0]) if ids.size == 1 else node_of[(b, Zb.shape[0] - 1)], ids.size)
             for b, (ids, Zb) in enumerate(block_links)]
    r, (node, size) = len(rows), roots[0]
    for other, other_size in roots[1:]:
        size += other_size
        Z[r] = [node, other, FAR, size]
        node, r = n + r, r + 1
    return Z


def cluster_blocks(blocks: list[Block], keys: np.ndarray, *, max_height: float, max_size: int,
                   cut: str = "auto") -> Clustering:
    """Complete-linkage clusters of the items of ``blocks`` (see the module docstring); items of
    different blocks are never joined below FAR. ``keys`` (n, k) int: the canonical order
    (lexicographic, first column first) of all n items; ties are an error."""
    n = keys.shape[0]
    order = np.lexsort(keys.T[::-1])  # (n,) canonical position -> item
    if n > 1 and (np.diff(keys[order], axis=0) == 0).all(1).any():
        raise ValueError("item keys must be unique; got a repeated key. Each item needs its own (layer, "
                         "pos, feature).")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    block_links, parts = [], []
    for blk in sorted(blocks, key=lambda b: int(rank[b.items].min())):
        local = np.argsort(rank[blk.items])  # the block's canonical order
        ids = rank[blk.items][local]
        dist = _distances(blk.affinity, blk.cannot)[np.ix_(local, local)]  # (n_b, n_b) canonical
        Zb = linkage(squareform(dist, checks=False), method="complete") if ids.size > 1 else np.zeros((0, 4))
        block_links.append((ids, Zb))
        parts.append((ids, np.minimum(dist, 1.0).astype(np.float32)))
    if n == 1:
        return Clustering(np.zeros(1, dtype=np.int64), np.zeros((0, 4)), order, float(max_height))
    Z = _combine(block_links, n)
    height = _auto_height(Z, parts, max_height, max_size) if cut == "auto" else float(max_height)
    labels = np.empty(n, dtype=np.int64)
    labels[order] = cut_linkage(Z, height, max_size)
    return Clustering(labels, Z, order, height)


def cluster_affinity(affinity: np.ndarray, cannot: np.ndarray, keys: np.ndarray, *, max_height: float,
                     max_size: int, cut: str = "auto") -> Clustering:
    """:func:`cluster_blocks` with every item in one block."""
    block = Block(affinity, cannot, np.arange(affinity.shape[0]))
    return cluster_blocks([block], keys, max_height=max_height, max_size=max_size, cut=cut)

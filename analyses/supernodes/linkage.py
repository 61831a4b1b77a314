"""Constrained, deterministic complete-linkage clustering (pure functions on arrays).

``research/geometry.md`` §7(a), steps 4-5: distances ``1 - affinity`` (affinity clipped to [0, 1]);
cannot-link pairs get distance :data:`FAR` (> 1), so complete linkage never joins them below any
admissible cut (a cluster's height is its largest pairwise distance). Items are sorted by their
canonical keys (for graph features: layer, position, feature) before scipy's ``linkage`` runs and
distances are rounded to 1e-9, so the partition does not depend on the order the items come in,
nor on float noise in the last bits. Clusters are numbered by their first item in canonical order.

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


def _distances(affinity: np.ndarray, cannot: np.ndarray) -> np.ndarray:
    dist = 1.0 - np.clip(affinity, 0.0, 1.0)
    dist = np.maximum(dist, dist.T)  # symmetric whatever the input's rounding
    dist[cannot | cannot.T] = FAR
    np.fill_diagonal(dist, 0.0)
    return np.round(dist, 9)


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


def silhouette(dist: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a partition under a symmetric ``dist`` clipped to 1 (one-item clusters score 0)."""
    n = labels.size
    k = int(labels.max()) + 1
    if k in (1, n):
        return 0.0
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    clipped = dist if dist.max() <= 1.0 else np.minimum(dist, 1.0)
    onehot = sp.csr_matrix((np.ones(n, dtype=clipped.dtype), (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(onehot @ clipped).T  # (n, k) summed distance to each cluster (dist is symmetric)
    sums = sums.astype(np.float64)
    own = sizes[labels]
    a = sums[np.arange(n), labels] / np.maximum(own - 1, 1)
    means = sums / sizes[None, :]
    means[np.arange(n), labels] = np.inf
    b = means.min(1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def _auto_height(Z: np.ndarray, dist: np.ndarray, max_height: float, max_size: int) -> float:
    dist = np.minimum(dist, 1.0).astype(np.float32)
    heights = np.unique(Z[Z[:, 2] <= max_height, 2])
    if heights.size == 0:
        return float(max_height)
    if heights.size > _AUTO_CANDIDATES:
        picks = np.linspace(0, heights.size - 1, _AUTO_CANDIDATES).round().astype(np.int64)
        heights = np.unique(np.append(heights[picks], heights[-1]))
    best, best_score = float(heights[-1]), -np.inf
    for h in heights[::-1]:  # coarse to fine: ties keep the coarser cut
        score = silhouette(dist, cut_linkage(Z, float(h), max_size))
        if score > best_score + 1e-12:
            best, best_score = float(h), score
    return best


def cluster_affinity(affinity: np.ndarray, cannot: np.ndarray, keys: np.ndarray, *, max_height: float,
                     max_size: int, cut: str = "auto") -> Clustering:
    """Complete-linkage clusters of n items (see the module docstring). ``keys`` (n, k) int: the
    canonical order (lexicographic, first column first); ties are an error."""
    n = affinity.shape[0]
    order = np.lexsort(keys.T[::-1])  # (n,)
    if n > 1 and (np.diff(keys[order], axis=0) == 0).all(1).any():
        raise ValueError("item keys must be unique; got a repeated key. Each item needs its own (layer, "
                         "pos, feature).")
    dist = _distances(affinity, cannot)[np.ix_(order, order)]  # (n, n) canonical
    if n == 1:
        return Clustering(np.zeros(1, dtype=np.int64), np.zeros((0, 4)), order, float(max_height))
    Z = linkage(squareform(dist, checks=False), method="complete")
    height = _auto_height(Z, dist, max_height, max_size) if cut == "auto" else float(max_height)
    canonical = cut_linkage(Z, height, max_size)
    labels = np.empty(n, dtype=np.int64)
    labels[order] = canonical
    return Clustering(labels, Z, order, height)

"""Clustering a feature-similarity structure into families, and the hierarchy inside a family.

Three methods for features, all deterministic:

* ``average``: scipy average linkage on a dense distance ``1 - similarity``, cut at a distance
  threshold (small layers: the dense matrix has n**2 entries);
* ``hdbscan``: scikit-learn's HDBSCAN on a sparse kNN distance graph, one connected component at
  a time (its sparse mode needs a connected graph); clusters whose kNN edges are weak on average
  are then dropped (:func:`drop_weak`);
* ``components``: connected components of a thresholded sparse affinity graph (Engels et al.'s
  clustering of Mistral-7B's SAE).

Labels are ints, -1 for features in no family; families are numbered by their first member.
"""

import logging

import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

CLUSTERINGS = ("auto", "average", "hdbscan", "components")


def relabel(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Families numbered 0.. in order of their first member; groups smaller than ``min_size``
    (and negative labels) become -1."""
    out = np.full(labels.shape, -1, dtype=np.int64)
    valid = np.flatnonzero(labels >= 0)
    if valid.size == 0:
        return out
    uniq, first, inverse, counts = np.unique(labels[valid], return_index=True, return_inverse=True,
                                             return_counts=True)
    big = counts >= min_size
    rank = np.full(len(uniq), -1, dtype=np.int64)
    by_first = np.argsort(first[big], kind="stable")  # big groups in order of their first member
    rank[np.flatnonzero(big)[by_first]] = np.arange(int(big.sum()))
    out[valid] = rank[inverse]
    return out


def average_families(S: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage clusters of a dense similarity (n, n), cut where the distance ``1 - S``
    between clusters exceeds ``threshold``."""
    n = S.shape[0]
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    D = np.clip(1.0 - S, 0.0, 2.0).astype(np.float64)
    iu = np.triu_indices(n, 1)
    Z = linkage(D[iu], method="average")
    return fcluster(Z, t=threshold, criterion="distance").astype(np.int64) - 1


def dense_hdbscan_families(S: np.ndarray, *, min_cluster_size: int, selection: str,
                           in_place: bool = False) -> np.ndarray:
    """scikit-learn's HDBSCAN on a dense similarity (n, n) as the distance ``1 - S`` (clipped at 0, zero
    diagonal), clusters chosen by ``selection`` ("leaf" or "eom"); -1 for points in no cluster. No cut: a
    ring of points, whose opposite members are far apart, stays one cluster where its neighbours link it.
    Deterministic for a given row order. ``in_place``: ``S`` (float64) becomes the distance, saving a copy."""
    from sklearn.cluster import HDBSCAN

    n = S.shape[0]
    if n < max(2, min_cluster_size):  # no cluster can reach the size (and HDBSCAN needs n > min_samples)
        return np.full(n, -1, dtype=np.int64)
    D = S if in_place and S.dtype == np.float64 else np.array(S, dtype=np.float64)  # (n, n)
    np.subtract(1.0, D, out=D)
    np.clip(D, 0.0, 2.0, out=D)
    np.fill_diagonal(D, 0.0)
    return HDBSCAN(min_cluster_size=min_cluster_size, metric="precomputed", cluster_selection_method=selection,
                   copy=False).fit(D).labels_.astype(np.int64)


def component_families(W: sp.csr_matrix) -> np.ndarray:
    """Connected components of a sparse affinity graph (n, n); isolated nodes are their own."""
    _, labels = connected_components(W, directed=False)
    return labels.astype(np.int64)


def hdbscan_families(index: np.ndarray, sims: np.ndarray, *, min_cluster_size: int,
                     min_samples: int | None, key: np.ndarray | None = None) -> np.ndarray:
    """HDBSCAN on the kNN distance graph ``1 - sims`` (neighbour lists (n, k), -1 padded), run on
    each connected component with more than ``min_samples`` members; other features get -1. ``key``
    (n,), a value that depends only on each feature's content, orders the members HDBSCAN sees (its
    result depends on the order of the points: without it, the features' order in X changed which
    ones were left unassigned)."""
    from sklearn.cluster import HDBSCAN

    n, k = index.shape
    ms = min_samples or min(min_cluster_size, k)
    rows = np.repeat(np.arange(n), k)
    cols, vals = index.ravel(), sims.ravel()
    keep = (cols >= 0) & np.isfinite(vals)
    dist = np.maximum(1.0 - vals[keep], 1e-6).astype(np.float64)
    G = sp.csr_matrix((dist, (rows[keep], cols[keep])), shape=(n, n))
    G = G.maximum(G.T).tocsr()
    n_comp, comp = connected_components(G, directed=False)
    out = np.full(n, -1, dtype=np.int64)
    offset = 0
    for c in range(n_comp):
        members = np.flatnonzero(comp == c)
        if len(members) < max(min_cluster_size, ms + 1):
            continue
        if key is not None:
            members = members[np.argsort(key[members], kind="stable")]  # (m,) in content order
        sub = G[members][:, members]
        sub_labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=ms, metric="precomputed",
                             copy=True).fit(sub).labels_
        found = sub_labels >= 0
        out[members[found]] = sub_labels[found] + offset
        offset += int(sub_labels.max()) + 1 if found.any() else 0
    return out


def family_linkage(U: np.ndarray) -> np.ndarray:
    """Average-linkage hierarchy `(m - 1, 4)` of unit decoder rows ``U`` (m, d) on ``1 - cosine``
    (scipy's linkage format; empty for m < 2)."""
    m = U.shape[0]
    if m < 2:
        return np.zeros((0, 4), dtype=np.float64)
    D = np.clip(1.0 - U @ U.T, 0.0, 2.0).astype(np.float64)  # (m, m)
    return linkage(D[np.triu_indices(m, 1)], method="average")


def drop_weak(labels: np.ndarray, index: np.ndarray, sims: np.ndarray, min_similarity: float) -> np.ndarray:
    """Labels with every cluster whose within-cluster kNN edges (lists (n, k)) have a mean
    similarity below ``min_similarity`` set to -1 (a loose cloud of unrelated features, such as
    the background HDBSCAN may keep as one cluster, is not a family)."""
    n, k = index.shape
    rows = np.repeat(np.arange(n), k)
    cols = index.ravel()
    ok = cols >= 0
    same = np.zeros(rows.shape, dtype=bool)
    same[ok] = (labels[rows[ok]] == labels[cols[ok]]) & (labels[rows[ok]] >= 0)
    if not same.any():
        return labels
    lab = labels[rows[same]]
    total = np.bincount(lab, weights=sims.ravel()[same], minlength=int(labels.max()) + 1)
    count = np.bincount(lab, minlength=int(labels.max()) + 1)
    mean = np.where(count > 0, total / np.maximum(count, 1), -np.inf)
    out = labels.copy()
    weak = np.flatnonzero(mean < min_similarity)
    out[np.isin(labels, weak)] = -1
    return out

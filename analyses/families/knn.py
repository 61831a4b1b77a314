"""Nearest neighbours by cosine: exact blocked GEMMs for small sets, pynndescent for large ones.

Every function here takes rows that are already unit-normalised (:func:`unit_rows`) and returns
``(index, cosine)`` arrays of shape ``(n_samples, k)``, sorted by decreasing cosine, a row's own
index excluded. Rows with fewer than ``k`` other rows are padded with index -1 and cosine -inf.
"""

import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

KNN_METHODS = ("auto", "exact", "pynndescent")


def _scaled_norms(rows: np.ndarray) -> np.ndarray:
    """(n,) Euclidean norms of float64 ``rows`` (n, d), each computed on the row divided by its largest
    |entry| (no square underflows or overflows, whatever the scale)."""
    top = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(len(rows))  # (n,)
    safe = np.where(top > 0, top, 1.0)
    return top * np.linalg.norm(rows / safe[:, None], axis=1)


def content_key(rows: np.ndarray, seed: int) -> np.ndarray:
    """(n,) each row's projection on a seeded random direction: a value that depends only on the row's
    content, so sorting by it puts the same rows in one order whatever order they came in (pynndescent and
    HDBSCAN depend on the order of their points)."""
    direction = np.asarray(np.random.default_rng(seed).standard_normal(rows.shape[1]))  # (d,)
    return rows @ direction.astype(rows.dtype if rows.dtype.kind == "f" else np.float64)  # (n,): no float64 copy


def unit_rows(X: np.ndarray, *, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``X`` (n_samples, n_features) scaled to unit norm as float32, boolean mask of the
    rows that had a non-zero norm). Zero rows stay zero. A float32 array whose rows already have
    unit norm is returned as is (no copy: a large dictionary is not duplicated)."""
    X = np.asarray(X)
    # norms in float64, from the rows as given: float32 squares of rows near 1e-30 underflow to 0 (read as
    # dead rows) and rows near 1e30 overflow, though a row's direction does not depend on its scale
    norms = np.concatenate([_scaled_norms(np.asarray(X[s:s + chunk], dtype=np.float64))
                            for s in range(0, len(X), chunk)]) if len(X) else np.zeros(0)  # (n_samples,)
    live = norms > 0
    if X.dtype == np.float32 and live.all() and np.allclose(norms, 1.0, rtol=0, atol=1e-4):
        return X, live
    out = np.zeros(X.shape, dtype=np.float32)
    for s in range(0, len(X), chunk):
        rows = np.flatnonzero(live[s:s + chunk]) + s
        block = np.asarray(X[rows], dtype=np.float64)  # (n_live, d)
        top = np.abs(block).max(axis=1, keepdims=True)
        out[rows] = ((block / top) / (norms[rows, None] / top)).astype(np.float32)
    return out, live


def _pad(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)


def exact_knn(U: np.ndarray, k: int, *, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine neighbours of unit rows ``U`` (n, d), one (block, n) GEMM at a time."""
    n = U.shape[0]
    index, cosine = _pad(n, k)
    kk = min(k, n - 1)
    if kk <= 0:
        return index, cosine
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = U[start:stop] @ U.T  # (block, n)
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]  # (block, kk)
        vals = np.take_along_axis(sims, part, axis=1)  # (block, kk)
        order = np.lexsort((part, -vals), axis=1)  # by cosine, ties by index
        index[start:stop, :kk] = np.take_along_axis(part, order, axis=1)
        cosine[start:stop, :kk] = np.take_along_axis(vals, order, axis=1)
    return index, cosine


def approx_knn(U: np.ndarray, k: int, *, random_state: int = 0, proj_dim: int = 256,
               oversample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-``k`` cosine neighbours of unit rows ``U`` (n, d) with pynndescent (one
    thread, seeded: reproducible). Wide rows (d > ``proj_dim``) are searched in a seeded Gaussian
    projection to ``proj_dim`` dimensions for ``oversample * k`` candidates, which are then
    re-ranked by their exact cosine in the full space."""
    try:
        from pynndescent import NNDescent
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("knn='pynndescent' needs pynndescent (pip install 'manifold-workbench[maps]').") from err
    n, d = U.shape
    index, cosine = _pad(n, k)
    if n <= 1:
        return index, cosine
    search = U
    n_cand = k
    if d > proj_dim:
        R = np.random.default_rng(random_state).standard_normal((d, proj_dim)).astype(np.float32)  # (d, proj_dim)
        search, _ = unit_rows(U @ R)  # (n, proj_dim)
        n_cand = oversample * k
    canon = np.argsort(content_key(search, random_state), kind="stable")  # (n,) rows in content order
    nnd = NNDescent(search[canon], metric="dot", n_neighbors=min(n_cand + 1, n), random_state=random_state,
                    n_jobs=1, low_memory=True, compressed=True)
    found, _ = nnd.neighbor_graph  # (n, n_cand + 1) in canonical order: each row's own index usually among them
    cand = np.empty_like(found)
    cand[canon] = np.where(found >= 0, canon[np.maximum(found, 0)], -1)  # back to the rows' own order
    rows = np.repeat(np.arange(n), cand.shape[1])
    cols = cand.ravel()
    ok = (cols >= 0) & (cols != rows)
    sims = np.full(cols.shape, -np.inf, dtype=np.float32)
    pairs = np.flatnonzero(ok)
    for s in range(0, len(pairs), 8192):  # exact cosines of the candidates, in chunks
        sel = pairs[s:s + 8192]
        sims[sel] = np.einsum("ij,ij->i", U[rows[sel]], U[cols[sel]])
    sims = sims.reshape(cand.shape)
    order = np.lexsort((cand, -sims), axis=1)[:, :k]  # (n, k): best first, ties by index
    got_idx, got_sim = np.take_along_axis(cand, order, axis=1), np.take_along_axis(sims, order, axis=1)
    keep = np.isfinite(got_sim)
    index[:, : got_idx.shape[1]] = np.where(keep, got_idx, -1)
    cosine[:, : got_idx.shape[1]] = got_sim
    return index, cosine


def neighbour_width(n_neighbors: int, groups: Sequence[np.ndarray]) -> int:
    """Columns of the kNN lists: ``n_neighbors``, but no more than the largest group has other rows (at least 1),
    so that a huge ``n_neighbors`` asks for no more memory than every neighbour takes."""
    largest = max((len(g) for g in groups), default=1)
    return max(1, min(int(n_neighbors), largest - 1))


def knn(U: np.ndarray, k: int, *, method: str = "auto", exact_max: int = 50_000,
        random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of unit rows: exact below ``exact_max`` rows (``method="auto"``),
    pynndescent above."""
    use_exact = method == "exact" or (method == "auto" and U.shape[0] <= exact_max)
    logger.debug("kNN of %d rows (k=%d) by %s", U.shape[0], k, "exact GEMM" if use_exact else "pynndescent")
    return exact_knn(U, k) if use_exact else approx_knn(U, k, random_state=random_state)


def knn_affinity(index: np.ndarray, cosine: np.ndarray, n: int, *, min_cosine: float) -> sp.csr_matrix:
    """Symmetric sparse affinity (n, n) from kNN lists: cosine where it is >= ``min_cosine`` (and
    > 0), the larger of the two directions when both lists hold the pair."""
    rows = np.repeat(np.arange(index.shape[0]), index.shape[1])
    cols = index.ravel()
    vals = cosine.ravel()
    keep = (cols >= 0) & np.isfinite(vals) & (vals >= min_cosine) & (vals > 0)
    W = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n, n))
    return W.maximum(W.T).tocsr()

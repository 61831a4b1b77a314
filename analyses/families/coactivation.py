"""Co-activation evidence from an activation sample: which features fire together, and where.

Input: a sparse token x feature matrix ``A`` (rows = token rows of a corpus sample, columns = the
features being grouped; values = activations) and optionally a wider ``context`` matrix over the
same rows (for example every layer's features). Two kinds of evidence:

* **co-activation profiles** (second order): feature i's profile is ``sum_t a_i(t) c(t)``, the
  context vector summed over the rows where it fires, its own entry removed. Two features of one
  family fire on the same *kind* of row (the answer position of day arithmetic) even when they
  never fire on the same row (a "say Monday" and a "say Thursday" feature), so their profiles
  agree where their firing sets do not; rings of cyclic values come out as one family. Wide
  contexts are compressed by a seeded Gaussian random projection (cosines are preserved).
* **Jaccard** of firing sets (first order), for given pairs: ``|S_i & S_j| / |S_i | S_j|``.
"""

import logging

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

WEIGHTINGS = ("activation", "binary")


def as_csr(A: object, name: str, n_cols: int | None = None) -> sp.csr_matrix:
    """A scipy sparse (or dense) matrix as float32 CSR with non-negative finite values."""
    if not (sp.issparse(A) or isinstance(A, np.ndarray)):
        raise TypeError(f"{name} must be a scipy.sparse matrix or a numpy array; got {type(A).__name__}.")
    M = sp.csr_matrix(A, dtype=np.float32)
    if M.ndim != 2 or (n_cols is not None and M.shape[1] != n_cols):
        raise ValueError(f"{name} must have shape (n_rows, {n_cols}); got {M.shape!r}. Its columns are the "
                         "features, in the order of X's rows.")
    if M.nnz and (not np.isfinite(M.data).all() or (M.data < 0).any()):
        raise ValueError(f"{name} must hold finite, non-negative activations; got negative or non-finite values.")
    return M


def _weighted(M: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    if weighting == "binary":
        B = M.copy()
        B.data = (B.data > 0).astype(np.float32)
        return B
    return M


def coactivation_profiles(A: sp.csr_matrix, context: sp.csr_matrix | None = None, *,
                          self_column: np.ndarray | None = None, weighting: str = "activation",
                          dim: int = 256, exact_max: int = 4096, random_state: int = 0) -> np.ndarray:
    """Co-activation profiles `(n_features, n_dims)` of the columns of ``A`` (n_rows, n_features).

    ``context`` (n_rows, n_context) defaults to ``A``; ``self_column[i]`` is feature i's column in
    the context (default: ``i`` when the context is ``A``; -1 for none), whose entry is removed.
    Up to ``exact_max`` context columns the profile is exact; beyond, it is projected on ``dim``
    seeded Gaussian directions."""
    Aw = _weighted(A, weighting)
    C = Aw if context is None else _weighted(context, weighting)
    n_features, n_context = Aw.shape[1], C.shape[1]
    if self_column is None:
        self_column = np.arange(n_features) if context is None else np.full(n_features, -1)
    own = np.asarray(Aw.multiply(Aw).sum(axis=0)).ravel()  # (n_features,) sum of a_i(t)^2
    has_self = self_column >= 0
    if n_context <= exact_max:
        P = np.asarray((Aw.T @ C).todense(), dtype=np.float32)  # (n_features, n_context)
        P[np.flatnonzero(has_self), self_column[has_self]] = 0.0
        return P
    rng = np.random.default_rng(random_state)
    R = rng.standard_normal((n_context, dim)).astype(np.float32) / np.sqrt(dim)  # (n_context, dim)
    CR = C @ R  # (n_rows, dim)
    P = np.asarray(Aw.T @ CR, dtype=np.float32)  # (n_features, dim)
    P[has_self] -= own[has_self, None].astype(np.float32) * R[self_column[has_self]]
    return P


def jaccard_pairs(A: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, *, chunk: int = 200_000) -> np.ndarray:
    """Jaccard index of the firing sets of feature pairs ``(rows[i], cols[i])`` of ``A``."""
    B = _weighted(A, "binary").tocsc()
    counts = np.asarray(B.sum(axis=0)).ravel()  # (n_features,)
    out = np.zeros(len(rows), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        r, c = rows[start:start + chunk], cols[start:start + chunk]
        inter = np.asarray(B[:, r].multiply(B[:, c]).sum(axis=0)).ravel()  # (chunk,)
        union = counts[r] + counts[c] - inter
        out[start:start + chunk] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return out

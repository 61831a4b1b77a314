"""Co-activation evidence from an activation sample: which features fire together, and where.

Input: a sparse token x feature matrix ``A`` (rows = token rows of a corpus sample, columns = the
features being grouped; values = activations) and optionally a wider ``context`` matrix over the
same rows (for example every layer's features). Two kinds of evidence:

* **co-activation profiles** (second order): feature i's profile is ``sum_t a_i(t) c(t)``, the
  context vector summed over the rows where it fires, its own entry removed. Two features of one
  family fire on the same *kind* of row (the answer position of day arithmetic) even when they
  never fire on the same row (a "say Monday" and a "say Thursday" feature), so their profiles
  agree where their firing sets do not; rings of cyclic values come out as one family. Wide
  contexts are compressed by a seeded count sketch (inner products preserved in expectation;
  memory O(n_context)): :class:`CoactivationContext`.
* **Jaccard** of firing sets (first order), for given pairs: ``|S_i & S_j| / |S_i | S_j|``.
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from analyses.base import as_indices, as_integers, check_number

if TYPE_CHECKING:
    from tracer.activations import ActivationStore

logger = logging.getLogger(__name__)

WEIGHTINGS = ("activation", "binary")
PROFILE_CACHE_BYTES = 1 << 30
"""How much of its computed profiles (float32) a :class:`CoactivationContext` keeps; beyond, they are recomputed."""


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


def check_self_column(name: str, self_column: object, n_features: int, n_context: int) -> np.ndarray:
    """``self_column`` as (n_features,) int64: each feature's own column in a context of ``n_context``
    columns, -1 for none (a ``ValueError`` names the wrong length or the first entry out of range)."""
    cols = as_integers(name, self_column)
    if cols.shape != (n_features,):
        raise ValueError(f"{name} must have one entry per feature ({n_features},); got shape {cols.shape}.")
    return as_indices(name, cols, n_context, what="hold context columns", lo=-1, note=" (-1: none)", item="feature")


def _weighted(M: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    if weighting == "binary":
        B = M.copy()
        B.data = (B.data > 0).astype(np.float32)
        return B
    return M


@dataclass(frozen=True, eq=False)
class CoactivationContext:
    """An activation sample prepared so that the co-activation profile of any of its columns costs
    one sparse product: ``profile_i = sum_t a_i(t) c(t)``, with ``c(t)`` row t of the context. Profiles read
    through :meth:`column_profiles` are kept, and :meth:`prepare_profiles` computes them all ahead of many graphs.

    Up to ``exact_max`` context columns ``c(t)`` is the (weighted) row itself; beyond, a count sketch
    of it (each column added, with a seeded random sign, to one of ``dim`` seeded random coordinates:
    inner products are preserved in expectation and memory is O(n_context), so a whole model's
    dictionary can be the context). Build it with :meth:`from_activations`."""

    activations: sp.csc_matrix
    """(n_rows, n_context) the weighted sample, by column (the features whose profiles can be read)."""
    rows: sp.csr_matrix | np.ndarray
    """(n_rows, k) each row's context: the sample itself (exact) or its sketch (k = dim)."""
    coordinate: np.ndarray
    """(n_context,) int64 the coordinate of ``rows`` that each context column is added to."""
    sign: np.ndarray
    """(n_context,) float32 the sign it is added with (all 1 when exact)."""
    keys: np.ndarray | None
    """(n_context, 2) int64 (layer, feature) of each column, or None (columns are addressed by index)."""
    weighting: str
    """How activations count: their values ("activation") or 1 where a feature fires ("binary")."""
    transcoder_kind: str | None = None
    """The kind of transcoders ("plt" / "clt") of the run it was read from (:meth:`from_store`), or None."""
    transcoder_signature: str | None = None
    """That run's transcoder signature (:func:`tracer.transcoders.identity.transcoder_signature`), or None."""
    transcoder_source: str | None = None
    """That run's transcoder folder, or None."""
    _profiles: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    """Column -> its (k,) profile, kept by :meth:`column_profiles` and :meth:`prepare_profiles`."""

    @classmethod
    def from_activations(cls, A: object, keys: object = None, *, weighting: str = "activation", dim: int = 256,
                         exact_max: int = 2048, random_state: int = 0) -> "CoactivationContext":
        """The context of ``A`` (n_rows, n_context) non-negative activations; ``keys`` (n_context, 2)
        names each column (layer, feature) for :meth:`columns`."""
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}; got {weighting!r}.")
        check_number("dim", dim, lo=1, integer=True)
        C = _weighted(as_csr(A, "activations"), weighting)
        n_context = C.shape[1]
        key_arr = None
        if keys is not None:
            key_arr = np.asarray(keys, dtype=np.int64)
            if key_arr.shape != (n_context, 2):
                raise ValueError(f"keys must have shape ({n_context}, 2) (layer, feature per column of the "
                                 f"activations); got {key_arr.shape!r}.")
        if n_context <= exact_max:
            return cls(C.tocsc(), C, np.arange(n_context, dtype=np.int64), np.ones(n_context, np.float32), key_arr,
                       weighting)
        rng = np.random.default_rng(random_state)
        coordinate = rng.integers(0, dim, n_context).astype(np.int64)  # (n_context,)
        sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), n_context)  # (n_context,)
        sketch = sp.csr_matrix((sign, (np.arange(n_context), coordinate)), shape=(n_context, dim))
        rows = np.asarray((C @ sketch).todense(), dtype=np.float32)  # (n_rows, dim)
        return cls(C.tocsc(), rows, coordinate, sign, key_arr, weighting)

    @classmethod
    def from_store(cls, store: "ActivationStore", layers: list[int] | None = None, *, weighting: str = "activation",
                   dim: int = 256, exact_max: int = 2048, random_state: int = 0) -> "CoactivationContext":
        """The context of a collected activation run (:func:`tracer.activations.collect_activations`,
        ``workbench activations``): ``layers``' features (default: every collected layer) at every
        position >= 1, columns keyed by (layer, feature)."""
        A, keys = store.feature_matrix(layers)
        context = cls.from_activations(A, keys, weighting=weighting, dim=dim, exact_max=exact_max,
                                       random_state=random_state)
        def text(key: str) -> str | None:
            value = store.index.get(key)
            return value if isinstance(value, str) and value else None

        return dataclasses.replace(context, transcoder_kind=text("transcoder_kind"),
                                   transcoder_signature=text("transcoder_signature"),
                                   transcoder_source=text("transcoder_id"))

    @property
    def n_context(self) -> int:
        return int(self.activations.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self.activations.shape[0])

    @property
    def sketched(self) -> bool:
        """Whether rows are a count sketch (more than ``exact_max`` context columns)."""
        return isinstance(self.rows, np.ndarray)

    def columns(self, keys: np.ndarray) -> np.ndarray:
        """(n,) the column of each (layer, feature) row of ``keys`` (n, 2); -1 where the sample has none."""
        if self.keys is None:
            raise ValueError("keys must have been given to CoactivationContext.from_activations to look up "
                             "(layer, feature) columns; got none. Pass the sample's column keys.")
        code, order = self._sorted_codes
        want = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
        query = want[:, 0] * (1 << 32) + want[:, 1]  # (n,)
        if not len(order):
            return np.full(len(query), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(code, query), len(order) - 1)  # (n,)
        return np.where(code[at] == query, order[at], -1).astype(np.int64)

    @cached_property
    def _sorted_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted (layer, feature) codes, the column of each): computed once, reused by every lookup."""
        assert self.keys is not None
        code = self.keys[:, 0] * (1 << 32) + self.keys[:, 1]  # (n_context,)
        order = np.argsort(code, kind="stable")
        return code[order], order

    def profiles(self, A: object, self_column: np.ndarray | None = None) -> np.ndarray:
        """Co-activation profiles ``(n_features, k)`` of the columns of ``A`` (n_rows, n_features),
        weighted as the context; ``self_column[i]``: feature i's column in the context (-1: none),
        whose own entry is removed."""
        Aw = _weighted(as_csr(A, "A"), self.weighting)
        if Aw.shape[0] != self.activations.shape[0]:
            raise ValueError(f"A must have the context's {self.activations.shape[0]} rows; got {Aw.shape[0]}.")
        # (n_features, n_rows) @ (n_rows, k): by rows, so the product touches only the rows where the features fire
        # (A.T of a CSR matrix is CSC, and CSC @ CSR converted the whole context once per call)
        P = Aw.T.tocsr() @ self.rows  # (n_features, k)
        P = np.asarray(P.todense() if sp.issparse(P) else P, dtype=np.float32)
        if self_column is None:
            return P
        own_col = check_self_column("self_column", self_column, Aw.shape[1], self.n_context)
        has = np.flatnonzero(own_col >= 0)
        cols = own_col[has]
        if self.sketched:  # sketch: remove sum_t a_i(t)^2 * sign at its coordinate
            own = np.asarray(Aw.multiply(Aw).sum(axis=0)).ravel()  # (n_features,)
            np.subtract.at(P, (has, self.coordinate[cols]), (own[has] * self.sign[cols]).astype(np.float32))
        else:
            P[has, cols] = 0.0
        return P

    def column_profiles(self, cols: np.ndarray) -> np.ndarray:
        """(n, k) profiles of the context's own columns ``cols`` (-1: a zero row), self entries removed. Each
        column's profile is computed once (one sparse product over the columns not seen yet, touching only the rows
        where they fire) and kept while the kept profiles fit in ``PROFILE_CACHE_BYTES``, so graphs that share a
        sample share the work."""
        cols = np.asarray(cols, dtype=np.int64)
        out = np.zeros((len(cols), self.rows.shape[1]), dtype=np.float32)
        ok = np.flatnonzero(cols >= 0)
        if ok.size:
            fresh = self._compute(np.unique(cols[ok]))
            out[ok] = np.stack([self._profiles[c] if c in self._profiles else fresh[c] for c in cols[ok].tolist()])
        return out

    def prepare_profiles(self, max_bytes: int = PROFILE_CACHE_BYTES) -> bool:
        """Compute and keep the profile of every column that fires in the sample, ahead of the graphs, when they
        fit in ``max_bytes`` (float32); returns whether they did (else each is computed when first asked for).
        Afterwards a graph's co-activation similarity is a lookup, whatever the sample's size."""
        live = np.flatnonzero(self.activations.max(axis=0).toarray().ravel() > 0)  # (n_live,) columns that fire
        need = live.size * self.rows.shape[1] * 4
        if need > max_bytes:
            logger.info("co-activation profiles of %d columns need %.1f GiB, over %.1f: computed per graph",
                        live.size, need / 2**30, max_bytes / 2**30)
            return False
        self._compute(live, keep_bytes=max(max_bytes, PROFILE_CACHE_BYTES))
        return True

    def _compute(self, cols: np.ndarray, *, keep_bytes: int | None = None,
                 chunk: int = 4096) -> dict[int, np.ndarray]:
        """Compute the profiles of the columns of ``cols`` (unique, >= 0) not kept yet, ``chunk`` columns a product;
        keep them while the kept profiles fit in ``keep_bytes`` (None: ``PROFILE_CACHE_BYTES``) and return the
        others (column -> (k,) profile)."""
        missing = np.asarray([c for c in cols.tolist() if c not in self._profiles], dtype=np.int64)  # (n_missing,)
        budget = PROFILE_CACHE_BYTES if keep_bytes is None else keep_bytes
        capacity = budget // (self.rows.shape[1] * 4)  # profiles the cache may hold
        fresh: dict[int, np.ndarray] = {}
        for start in range(0, missing.size, chunk):
            part = missing[start:start + chunk]
            P = self.profiles(self.activations[:, part], part)  # (len(part), k)
            room = max(0, capacity - len(self._profiles))
            self._profiles.update(zip(part[:room].tolist(), P[:room]))
            fresh.update(zip(part[room:].tolist(), P[room:]))
        return fresh


def coactivation_profiles(A: sp.csr_matrix, context: sp.csr_matrix | None = None, *,
                          self_column: np.ndarray | None = None, weighting: str = "activation",
                          dim: int = 256, exact_max: int = 2048, random_state: int = 0) -> np.ndarray:
    """Co-activation profiles `(n_features, k)` of the columns of ``A`` (n_rows, n_features).

    ``context`` (n_rows, n_context) defaults to ``A``; ``self_column[i]`` is feature i's column in
    the context (default: ``i`` when the context is ``A``; -1 for none), whose entry is removed.
    Up to ``exact_max`` context columns the profile is exact (k = n_context); beyond, it is read
    through a seeded count sketch of ``dim`` coordinates (:class:`CoactivationContext`)."""
    ctx = CoactivationContext.from_activations(A if context is None else context, weighting=weighting, dim=dim,
                                               exact_max=exact_max, random_state=random_state)
    if self_column is None:
        self_column = np.arange(A.shape[1]) if context is None else np.full(A.shape[1], -1)
    return ctx.profiles(A, self_column)


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

"""``FeatureFamilies``: group the features of a whole dictionary into families.

Per layer (or over all given layers at once):

1. unit-normalise the decoder rows (``X``) and find each feature's ``n_neighbors`` nearest by
   cosine: exact blocked GEMMs up to ``exact_max`` features, pynndescent above;
2. with an activation sample (a sparse token x feature matrix), add co-activation evidence:
   the cosine of co-activation profiles (``coactivation="profile"``: features that fire on the
   same *kind* of row, which joins the opposite values of a cyclic family that decoder cosine
   splits) or the Jaccard index of firing sets (``"jaccard"``); the similarity is
   ``(1 - coactivation_weight) * decoder + coactivation_weight * coactivation``;
3. cluster: average linkage on the dense similarity for layers up to ``dense_max`` features
   (``clustering="auto"``), HDBSCAN on the sparse kNN graph above; or connected components of
   the graph thresholded at ``min_similarity``;
4. with the sample's token ids and the model's unembedding, token-class evidence
   (:mod:`analyses.families.tokens`): a feature with at least ``min_token_share`` of its energy on one
   class of tokens, read or predicted, moves out of its family into that class's (one per layer, or one
   overall across layers);
5. inside each family, a scipy average-linkage hierarchy on decoder cosine; family labels come
   from member labels when given.
"""

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from analyses.base import Estimator, as_integers, atomic_fit
from analyses.families.cluster import (
    average_families,
    component_families,
    drop_weak,
    family_linkage,
    hdbscan_families,
    relabel,
)
from analyses.families.coactivation import as_csr, check_self_column, coactivation_profiles, jaccard_pairs
from analyses.families.config import FamiliesConfig
from analyses.families.knn import content_key, knn, knn_affinity, neighbour_width, unit_rows
from analyses.families.results import Family, FeatureFamiliesResult, family_label
from analyses.families.tokens import (
    assign_token_families,
    check_token_inputs,
    check_token_words,
    dominant_class,
    token_classes,
    token_energy,
)

logger = logging.getLogger(__name__)

_D = FamiliesConfig()



class FeatureFamilies(Estimator):
    """Families of features from decoder geometry and (optionally) co-activation.

    Parameters are stored unchanged and validated in :meth:`fit`; their defaults and meaning are
    those of :class:`analyses.families.config.FamiliesConfig` (``FeatureFamilies.from_config``);
    see the module docstring for the algorithm. Fitted attributes: ``result_``
    (:class:`FeatureFamiliesResult`), ``labels_`` (family per row of X, -1 for none), ``n_families_``,
    ``timings_`` (seconds per phase)."""

    def __init__(self, *, n_neighbors: int = _D.n_neighbors,
                 min_similarity: float = _D.min_similarity, knn: str = _D.knn,
                 exact_max: int = _D.exact_max, coactivation: str = _D.coactivation,
                 coactivation_weight: float = _D.coactivation_weight,
                 weighting: str = _D.weighting, coactivation_dim: int = _D.coactivation_dim,
                 clustering: str = _D.clustering, dense_max: int = _D.dense_max,
                 distance_threshold: float = _D.distance_threshold,
                 min_cluster_size: int = _D.min_cluster_size,
                 min_samples: int | None = _D.min_samples,
                 min_family_size: int = _D.min_family_size, per_layer: bool = _D.per_layer,
                 max_hierarchy: int = _D.max_hierarchy,
                 random_state: int = _D.random_state, token_families: bool = _D.token_families,
                 token_clustering: str = _D.token_clustering, token_selection: str = _D.token_selection,
                 token_cut: float = _D.token_cut, fold_case: bool = _D.fold_case,
                 min_token_class: int = _D.min_token_class,
                 min_token_share: float = _D.min_token_share, max_tokens: int = _D.max_tokens) -> None:
        self.n_neighbors = n_neighbors
        self.min_similarity = min_similarity
        self.knn = knn
        self.exact_max = exact_max
        self.coactivation = coactivation
        self.coactivation_weight = coactivation_weight
        self.weighting = weighting
        self.coactivation_dim = coactivation_dim
        self.clustering = clustering
        self.dense_max = dense_max
        self.distance_threshold = distance_threshold
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.min_family_size = min_family_size
        self.per_layer = per_layer
        self.max_hierarchy = max_hierarchy
        self.random_state = random_state
        self.token_families = token_families
        self.token_clustering = token_clustering
        self.token_selection = token_selection
        self.token_cut = token_cut
        self.fold_case = fold_case
        self.min_token_class = min_token_class
        self.min_token_share = min_token_share
        self.max_tokens = max_tokens

    def _validate_params(self) -> None:
        FamiliesConfig(**self.get_params(deep=False))  # its __post_init__ checks every parameter

    # ------------------------------------------------------------------ fit

    @atomic_fit
    def fit(self, X: np.ndarray, *, layer: Sequence[int] | np.ndarray | None = None,
            feature: Sequence[int] | np.ndarray | None = None, activations: Any = None, context: Any = None,
            context_self: Sequence[int] | np.ndarray | None = None,
            labels: Sequence[str | None] | Mapping[tuple[int, int], Any] | None = None,
            tokens: Sequence[int] | np.ndarray | None = None, next_tokens: Sequence[int] | np.ndarray | None = None,
            token_vectors: np.ndarray | None = None, token_words: Sequence[str] | None = None,
            verbose: bool = False) -> "FeatureFamilies":
        """Find the families of the features whose decoder rows are ``X`` (n_features, d).

        ``layer`` / ``feature``: each row's layer and index (default: layer 0, index = row); integers,
        one distinct (layer, feature) pair per row.
        ``activations``: sparse (n_rows, n_features) activation sample, columns in X's row order.
        ``context``: sparse (n_rows, n_context) wider activations on the same rows (default:
        ``activations``), with ``context_self[i]`` = row i's own column in it (-1: none).
        ``labels``: one label per row, or a mapping (layer, feature) -> label (or FeatureLabel).
        ``tokens`` / ``next_tokens``: (n_rows,) token id of each row of ``activations`` and of the token after
        it (-1: none), with ``token_vectors`` (n_tokens, d_model) the model's unembedding rows: token-class
        evidence (:mod:`analyses.families.tokens`; with ``token_families=False`` they are ignored).
        ``token_words``: (n_tokens,) each token's text (the tokenizer's): tokens spelling one word up to case and
        whitespace are one word (``fold_case``), and the texts order the words (results never depend on the ids);
        None: every token is its own word, ordered by its unembedding row.
        ``verbose``: a progress bar over the layers (or the one group), showing the phase that ran last."""
        self._validate_params()
        self.timings_: dict[str, float] = {}
        self._last_tick = time.perf_counter()
        U, live, layers, feats = self._check_X(X, layer, feature)
        self._tick("inputs")
        A = None if activations is None else as_csr(activations, "activations", U.shape[0])
        C = None if context is None else as_csr(context, "context")
        if C is not None and (A is None or C.shape[0] != A.shape[0]):
            raise ValueError(f"context must have the rows of activations; got {C.shape!r}. Pass both over one sample.")
        ctx_self = None if context_self is None else self._check_context_self(context_self, A, C)
        names = self._labels(labels, layers, feats)
        groups = [np.flatnonzero(layers == lay) for lay in np.unique(layers)] if self.per_layer \
            else [np.arange(U.shape[0])]
        token_inputs = check_token_inputs(tokens, next_tokens, token_vectors, A) if self.token_families else None
        if token_words is not None and tokens is None and self.token_families:
            raise ValueError("token_words must come with tokens, next_tokens, token_vectors and activations; got "
                             "token_words alone. Pass all of them, or none.")
        words = check_token_words(token_words, token_inputs[2].shape[0]) if token_inputs else None
        family, knn_index, knn_cos = self._fit_groups(groups, U, live, A, C, ctx_self, verbose)
        tokens_of = None
        if token_inputs is not None:
            assert A is not None  # check_token_inputs refuses tokens without activations
            self._last_tick = time.perf_counter()
            vocab_class, token_class, token_side = self._token_classes(A, *token_inputs, words)
            token_class[~live] = token_side[~live] = -1  # dead decoder rows are in no family
            family = assign_token_families(family, token_class, layers if self.per_layer else np.zeros_like(layers))
            tokens_of = (vocab_class, token_class, token_side)
            self._tick("token_classes")
        self._last_tick = time.perf_counter()
        self.result_ = self._result(U, layers, feats, relabel(family, self.min_family_size), knn_index, knn_cos, names,
                                    tokens_of)
        self._tick("hierarchy_and_result")
        del self._last_tick  # a fitted estimator holds only its fitted state (and its params)
        self.labels_ = self.result_.family
        self.n_families_ = len(self.result_.families)
        logger.info("FeatureFamilies: %d families over %d features (%d in none)", self.n_families_,
                    U.shape[0], int((self.labels_ < 0).sum()))
        return self

    def _check_X(self, X: np.ndarray, layer: Any, feature: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                         np.ndarray]:
        arr = np.asarray(X)
        if arr.dtype.kind not in "iuf":  # complex would lose its imaginary part, bools and text mean nothing here
            raise TypeError(f"X must hold real numbers (decoder rows); got dtype {arr.dtype}.")
        if arr.ndim != 2 or arr.shape[0] < 1:
            raise ValueError(f"X must be a numeric array (n_features, d_model) of decoder rows; got shape "
                             f"{arr.shape!r}. Flatten CLT decoders to (n_features, n_out * d_model).")
        if not np.isfinite(arr).all():
            raise ValueError("X must be finite; got NaN or inf in the decoder rows.")
        n = arr.shape[0]
        layers = np.zeros(n, dtype=np.int64) if layer is None else as_integers("layer", layer)
        feats = np.arange(n, dtype=np.int64) if feature is None else as_integers("feature", feature)
        if layers.shape != (n,) or feats.shape != (n,):
            raise ValueError(f"layer and feature must have one entry per row of X ({n}); got "
                             f"{layers.shape!r} and {feats.shape!r}.")
        keys, counts = np.unique(np.stack([layers, feats], 1), axis=0, return_counts=True)  # (n_unique, 2)
        if (counts > 1).any():
            lay, feat = keys[np.argmax(counts > 1)].tolist()
            raise ValueError(f"(layer, feature) pairs must be unique (one row of X per feature); got ({lay}, {feat}) "
                             f"{counts.max()} times.")
        U, live = unit_rows(arr)
        return U, live, layers, feats

    def _token_classes(self, A: sp.csr_matrix, tokens: np.ndarray, next_tokens: np.ndarray,
                       vectors: np.ndarray, words: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(each token's class (n_tokens,), each feature's variable (token class) and side (0 read, 1 predict),
        (n_features,) each, -1 for none); see :mod:`analyses.families.tokens`."""
        reads, predicts = token_energy(A, tokens, next_tokens, vectors.shape[0])
        counts = np.bincount(tokens, minlength=vectors.shape[0])
        classes = token_classes(vectors, reads, predicts, counts, clustering=self.token_clustering,
                                cut=self.token_cut, min_class_size=self.min_token_class,
                                selection=self.token_selection, max_tokens=self.max_tokens, words=words,
                                fold=self.fold_case, seed=self.random_state)
        total = np.asarray(reads.sum(axis=1)).ravel()  # (n_features,) every row has a token: all the energy, float64
        return (classes, *dominant_class(reads, predicts, total, classes, min_class_size=self.min_token_class,
                                         min_share=self.min_token_share))

    @staticmethod
    def _check_context_self(context_self: Any, A: sp.csr_matrix | None, C: sp.csr_matrix | None) -> np.ndarray:
        """(n_features,) each row's own column in the context (``C``, default ``A``), -1 for none."""
        if A is None:
            raise ValueError("context_self must come with activations (it names columns of the context); got "
                             "no activations. Pass activations= too, or drop context_self.")
        n_context = (A if C is None else C).shape[1]
        return check_self_column("context_self", context_self, A.shape[1], n_context)

    def _labels(self, labels: Any, layers: np.ndarray, feats: np.ndarray) -> list[str | None] | None:
        if labels is None:
            return None
        if isinstance(labels, Mapping):
            out = []
            for lay, f in zip(layers.tolist(), feats.tolist()):
                lab = labels.get((lay, f))
                out.append(None if lab is None else str(getattr(lab, "label", lab)))
            return out
        out = [None if lab is None else str(lab) for lab in labels]
        if len(out) != len(layers):
            raise ValueError(f"labels must have one entry per row of X ({len(layers)}); got {len(out)}.")
        return out

    # ------------------------------------------------------------- per group

    def _fit_groups(self, groups: list[np.ndarray], U: np.ndarray, live: np.ndarray, A: sp.csr_matrix | None,
                    C: sp.csr_matrix | None, ctx_self: np.ndarray | None,
                    verbose: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(family per row, decoder kNN index (n, k), cosine (n, k)) over every group (layer) of rows."""
        family = np.full(U.shape[0], -1, dtype=np.int64)
        k = neighbour_width(self.n_neighbors, groups)
        knn_index = np.full((U.shape[0], k), -1, dtype=np.int64)
        knn_cos = np.full((U.shape[0], k), -np.inf, dtype=np.float32)
        self._bar = tqdm(groups, desc="feature families", unit="layer" if self.per_layer else "group",
                         disable=not verbose)
        try:
            for rows in self._bar:
                rows = rows[live[rows]]
                if rows.size == 0:
                    continue
                sub_A = None if A is None else A[:, rows]
                sub_self = None if ctx_self is None else ctx_self[rows]
                contiguous = rows[-1] - rows[0] + 1 == rows.size
                U_rows = U[rows[0]:rows[-1] + 1] if contiguous else U[rows]  # a view when it can be: no copy
                fam, idx, cos = self._fit_group(U_rows, sub_A, C, sub_self, k)
                family[rows] = np.where(fam >= 0, fam + family.max() + 1, -1)
                knn_index[rows] = np.where(idx >= 0, rows[np.maximum(idx, 0)], -1)
                knn_cos[rows] = cos
        finally:
            self._bar.close()
            del self._bar  # a fitted estimator holds no progress bar
        return family, knn_index, knn_cos

    def _fit_group(self, U: np.ndarray, A: sp.csr_matrix | None, C: sp.csr_matrix | None,
                   ctx_self: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(family labels, decoder kNN index, cosine (n, k)) of one group of unit decoder rows U (n, d)."""
        n = U.shape[0]
        idx, cos = knn(U, k, method=self.knn, exact_max=self.exact_max,
                       random_state=self.random_state)
        self._tick("knn")
        method = self.clustering if self.clustering != "auto" else ("average" if n <= self.dense_max else "hdbscan")
        lam = float(self.coactivation_weight) if A is not None else 0.0
        profiles = None
        if A is not None and self.coactivation == "profile":
            profiles, _ = unit_rows(coactivation_profiles(A, C, self_column=ctx_self, weighting=self.weighting,
                                                          dim=self.coactivation_dim, random_state=self.random_state))
            self._tick("coactivation")
        if method == "average":
            S = U @ U.T  # (n, n)
            if lam > 0:
                co = profiles @ profiles.T if profiles is not None else _dense_jaccard(A)
                S = (1.0 - lam) * S + lam * co
            fam = average_families(S, self.distance_threshold)
            self._tick("clustering")
            return fam, idx, cos
        g_idx, g_sim = self._combined_lists(U, idx, cos, profiles, A, lam)
        self._tick("graph")
        if method == "hdbscan":
            fam = hdbscan_families(g_idx, g_sim, min_cluster_size=self.min_cluster_size, min_samples=self.min_samples,
                                   key=content_key(U, self.random_state))
            fam = drop_weak(fam, g_idx, g_sim, self.min_similarity)
        else:
            fam = component_families(knn_affinity(g_idx, g_sim, n, min_cosine=self.min_similarity))
        self._tick("clustering")
        return fam, idx, cos

    def _tick(self, phase: str) -> None:
        """Add the seconds since the last tick to ``timings_[phase]``."""
        now = time.perf_counter()
        self.timings_[phase] = self.timings_.get(phase, 0.0) + now - self._last_tick
        self._last_tick = now
        bar = getattr(self, "_bar", None)
        if bar is not None and not bar.disable:
            bar.set_postfix_str(f"{phase} done", refresh=True)

    def _combined_lists(self, U: np.ndarray, idx: np.ndarray, cos: np.ndarray, profiles: np.ndarray | None,
                        A: sp.csr_matrix | None, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """Top-k neighbour lists (n, k) under the combined similarity, over the candidate pairs of
        the decoder kNN and (with profiles) the profile kNN."""
        n, k = idx.shape
        if lam == 0 or A is None:
            return idx, cos
        cands = idx
        if profiles is not None:
            p_idx, _ = knn(profiles, k, method=self.knn, exact_max=self.exact_max, random_state=self.random_state)
            cands = np.concatenate([idx, p_idx], axis=1)  # (n, 2k)
        rows = np.repeat(np.arange(n), cands.shape[1])
        cols = cands.ravel()
        ok = cols >= 0
        flat = np.full(cols.shape, -np.inf, dtype=np.float32)  # (n * n_candidates,)
        flat[ok] = _row_dots(U, rows[ok], cols[ok])
        if lam > 0 and A is not None:
            co = _row_dots(profiles, rows[ok], cols[ok]) if profiles is not None \
                else jaccard_pairs(A, rows[ok], cols[ok])
            flat[ok] = (1.0 - lam) * flat[ok] + lam * co
        sim: Any = flat.reshape(cands.shape)  # (n, n_candidates)
        # a pair listed twice (both kNNs) counts once: sort each row by neighbour, drop repeats
        by_col = np.argsort(cands, axis=1, kind="stable")
        cands, sim = np.take_along_axis(cands, by_col, axis=1), np.take_along_axis(sim, by_col, axis=1)
        dup = np.zeros(cands.shape, dtype=bool)
        dup[:, 1:] = cands[:, 1:] == cands[:, :-1]
        sim = np.where(dup | (cands < 0), -np.inf, sim)
        order = np.lexsort((cands, -sim), axis=1)[:, :k]  # best first, ties by index
        out_idx = np.take_along_axis(cands, order, axis=1)
        out_sim = np.take_along_axis(sim, order, axis=1)
        return np.where(np.isfinite(out_sim), out_idx, -1), out_sim

    # ---------------------------------------------------------------- result

    def _result(self, U: np.ndarray, layers: np.ndarray, feats: np.ndarray, family: np.ndarray,
                knn_index: np.ndarray, knn_cos: np.ndarray, names: list[str | None] | None,
                tokens_of: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> FeatureFamiliesResult:
        families: list[Family] = []
        links: list[np.ndarray] = []
        start = 0
        n_fam = int(family.max()) + 1 if family.size else 0
        order = np.argsort(family, kind="stable")  # members of each family together, in row order
        bounds = np.searchsorted(family[order], np.arange(n_fam + 1))
        for fid in range(n_fam):
            rows = order[bounds[fid]:bounds[fid + 1]]
            Um = U[rows]
            m = len(rows)
            mean_cos = float((Um.sum(0) @ Um.sum(0) - m) / (m * (m - 1))) if m > 1 else 1.0
            Z = family_linkage(Um) if m <= self.max_hierarchy else np.zeros((0, 4))
            links.append(Z)
            label = family_label([names[r] for r in rows]) if names is not None else None
            families.append(Family(id=fid, size=m, layers=sorted(set(layers[rows].tolist())), label=label,
                                   mean_cosine=round(mean_cos, 6), hierarchy_start=start,
                                   hierarchy_stop=start + len(Z), **_token_fields(rows, tokens_of)))
            start += len(Z)
        hierarchy = np.concatenate(links) if links else np.zeros((0, 4))
        return FeatureFamiliesResult(layer=layers, feature=feats, family=family, knn_index=knn_index,
                                     knn_cosine=knn_cos, hierarchy=hierarchy, families=families, labels=names,
                                     params=self.get_params(deep=False))

    # --------------------------------------------------------------- queries

    def search(self, text: str, **kwargs: Any) -> list[Family]:
        """Families matching ``text`` in their labels (see :meth:`FeatureFamiliesResult.search`)."""
        self._check_fitted("result_")
        return self.result_.search(text, **kwargs)

    def family_of(self, layer: int, feature: int) -> Family | None:
        """The family of a feature, or None."""
        self._check_fitted("result_")
        return self.result_.family_of(layer, feature)

    def neighbors(self, layer: int, feature: int, k: int | None = None) -> list[tuple[int, int, float]]:
        """Nearest features by decoder cosine."""
        self._check_fitted("result_")
        return self.result_.neighbors(layer, feature, k)


def _token_fields(rows: np.ndarray, tokens_of: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """A token-class family's ``tokens`` (its class's token ids) and ``token_sides``; nothing for another family
    (members of a token family all carry its class, others none: see :func:`assign_token_families`)."""
    if tokens_of is None or tokens_of[1][rows[0]] < 0:
        return {}
    vocab_class, token_class, token_side = tokens_of
    sides = [name for side, name in enumerate(("read", "predict")) if (token_side[rows] == side).any()]
    return {"tokens": np.flatnonzero(vocab_class == token_class[rows[0]]).tolist(), "token_sides": sides}


def _row_dots(M: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``M[rows[i]] . M[cols[i]]`` for each pair, in chunks."""
    out = np.empty(len(rows), dtype=np.float32)
    for s in range(0, len(rows), chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", M[rows[s:s + chunk]], M[cols[s:s + chunk]])
    return out


def _dense_jaccard(A: sp.csr_matrix) -> np.ndarray:
    """Jaccard index of every pair of columns' firing sets (n_features, n_features)."""
    B = A.copy()
    B.data = (B.data > 0).astype(np.float32)
    inter = np.asarray((B.T @ B).todense())  # (n, n)
    counts = np.diag(inter).copy()
    union = counts[:, None] + counts[None, :] - inter
    J = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.fill_diagonal(J, 1.0)
    return J

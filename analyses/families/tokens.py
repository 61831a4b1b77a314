"""Token-class evidence: a feature's family is the class of tokens it reads or predicts.

With the token ids of an activation sample's rows (the token at each row, and the next one), every
feature's activation energy (sum of squared activations) splits over the tokens it fires *on* (it
reads them) and the tokens that come *next* (it predicts them). Tokens are grouped into classes
without labels:

1. tokens whose text is the same word up to case and surrounding whitespace ("Two" at a sentence's
   start, "two" inside it) are joined into one word where the token texts are given (their energies
   add up, their unit unembedding rows are averaged); text with a replacement character (a partial
   UTF-8 byte of a byte-level tokenizer) or only whitespace never joins another token. Folding is
   Unicode case folding ("Straße" and "STRASSE" are one word), and on a subword tokenizer fragments fold
   too ("AS" and "as");
2. two words seen in the sample are alike by half the cosine of their centred unembedding rows (the
   model's output geometry: tokens the model predicts in the same places) plus a quarter each of the
   cosines of their *read* profiles (the features firing on them) and their *predict* profiles (the
   features firing just before them). The weights are fixed: a word no feature fires before (a
   sentence's first word) has no predict term, so its similarity to itself is 0.75, not 1 (the tuned
   defaults were chosen with this weighting);
3. the words are clustered on the distance 1 - similarity, by scikit-learn's HDBSCAN (the default; leaf
   or excess-of-mass selection) or by average linkage cut at a threshold. HDBSCAN needs no
   cut: a ring of values (hues around the wheel), whose opposite members are dissimilar, stays one
   class where its neighbours link it. A class of at least ``min_class_size`` words is a *variable*
   (days of the week, month names, number words), smaller ones are not (HDBSCAN's minimum cluster
   size). HDBSCAN finds classes by contrast: a sample whose only class sits among unrelated words
   yields none.

A feature whose largest share of energy on one variable, read or predicted, is at least
``min_share`` belongs to that variable's family (reading and predicting days are one family; the
family records the class's tokens and which sides its members take). Where the sample gives no such
share the feature keeps the family the geometry gave it.
"""

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from analyses.base import as_integers
from analyses.families.cluster import average_families, dense_hdbscan_families
from analyses.families.knn import unit_rows


def token_energy(A: sp.csr_matrix, tokens: np.ndarray, next_tokens: np.ndarray,
                 n_tokens: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(reads, predicts): (n_features, n_tokens) sums of squared activations of each feature (column of
    ``A``, (n_rows, n_features)) on the rows whose token / next token (-1: none) is each token."""
    n_rows = A.shape[0]
    E = A.multiply(A).T.tocsr()  # (n_features, n_rows)
    return (E @ one_hot(tokens, n_rows, n_tokens)).tocsr(), (E @ one_hot(next_tokens, n_rows, n_tokens)).tocsr()


def one_hot(ids: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """(n_rows, n_cols) with a 1 at (row, ids[row]) where ids[row] >= 0."""
    keep = np.flatnonzero(ids >= 0)
    return sp.csr_matrix((np.ones(keep.size), (keep, ids[keep])), shape=(n_rows, n_cols))


def token_classes(W_U: np.ndarray, reads: sp.csr_matrix, predicts: sp.csr_matrix, counts: np.ndarray, *,
                  clustering: str, cut: float, min_class_size: int, selection: str, max_tokens: int,
                  words: Sequence[str] | None = None, fold: bool = True, seed: int = 0) -> np.ndarray:
    """(n_tokens,) class of each token, -1 for tokens not in the sample (or beyond the ``max_tokens``
    most frequent: the similarity is dense) and for tokens in no class of at least ``min_class_size`` words
    (HDBSCAN's noise, and the smaller classes: they are no variable).
    ``W_U``: (n_tokens, d_model) unembedding rows; ``counts``: (n_tokens,) rows per token in the sample;
    ``words``: each token's text, or None; ``fold``: join the tokens spelling one word (see :func:`word_groups`).
    Nothing depends on the token ids: HDBSCAN breaks ties by the order of its points, so the words are clustered
    in the order of their content (:func:`token_key`: text, then unembedding row) shuffled by ``seed``, and the
    ``max_tokens`` cut breaks ties in count by the same key."""
    seen = np.flatnonzero(counts > 0)
    keys = {i: token_key(W_U, words, i) for i in seen.tolist()}
    if seen.size > max_tokens:
        seen = np.sort(np.asarray(sorted(seen.tolist(), key=lambda i: (-counts[i], keys[i]))[:max_tokens]))
    out = np.full(W_U.shape[0], -1, dtype=np.int64)
    if seen.size == 0:
        return out
    group = word_order(word_groups(words if fold else None, seen), [keys[i] for i in seen.tolist()], seed)
    G = one_hot(group, seen.size, int(group.max()) + 1).T.tocsr()  # (n_words, n_seen)
    mean = W_U.mean(0, dtype=np.float64)  # (d_model,) over the whole vocabulary, without a centred copy of it
    U, _ = unit_rows(np.asarray(W_U[seen], dtype=np.float64) - mean)  # (n_seen, d_model)
    U, _ = unit_rows(np.asarray(G @ U))  # (n_words, d_model): a word's direction, the mean of its tokens'
    halves = [_unit_sparse_rows((G @ M[:, seen].T).sqrt()) for M in (reads, predicts)]  # (n_words, n_features) each
    S = U @ U.T  # (n_words, n_words); weighted in place (see the module)
    S *= 0.5
    for H in halves:
        _add_gram(S, H, 0.25)
    if clustering == "hdbscan":
        word_class = dense_hdbscan_families(S, min_cluster_size=min_class_size, selection=selection, in_place=True)
    else:
        word_class = average_families(S, cut)
    sizes = np.bincount(word_class + 1)[word_class + 1]  # (n_words,) words in each word's class (-1 counted apart)
    word_class[(word_class >= 0) & (sizes < min_class_size)] = -1  # too small to be a variable
    out[seen] = word_class[group]
    return out


def word_groups(words: Sequence[str] | None, seen: np.ndarray) -> np.ndarray:
    """(n_seen,) the word of each token ``seen`` (ids), numbered 0.. in order of first appearance: tokens whose
    text is equal up to case and surrounding whitespace ("Two", "two", " two") are one word; a token whose text
    spells none (:func:`_fold`), and every token when ``words`` is None, is its own."""
    if words is None:
        return np.arange(seen.size, dtype=np.int64)
    keys = [_fold(words[i]) or i for i in seen.tolist()]  # no foldable text: the id stands alone
    first: dict[str | int, int] = {}
    return np.asarray([first.setdefault(k, len(first)) for k in keys], dtype=np.int64)


def token_key(W_U: np.ndarray, words: Sequence[str] | None, i: int) -> tuple[str, str]:
    """A token's content: its folded text (or its text, when that folds to nothing; "" without ``words``), then a
    digest of its unembedding row. Orders tokens without their ids."""
    text = "" if words is None else (_fold(words[i]) or words[i])
    return text, hashlib.blake2b(np.ascontiguousarray(W_U[i]).tobytes(), digest_size=8).hexdigest()


def word_order(group: np.ndarray, keys: Sequence[tuple[str, str]], seed: int) -> np.ndarray:
    """``group`` (n_seen,) renumbered so that word k is the k-th of a seeded shuffle of the words sorted by
    content (the smallest :func:`token_key` of their tokens, ``keys``, one per seen token): the numbering, and
    so the clustering's order, depends on the tokens' content and ``seed``, not on their ids."""
    n_words = int(group.max()) + 1
    key: dict[int, tuple[str, str]] = {}
    for g, k in zip(group.tolist(), keys):
        if g not in key or k < key[g]:
            key[g] = k
    ranked = sorted(range(n_words), key=key.__getitem__)  # word numbers in content order
    order = np.asarray(ranked, dtype=np.int64)[np.random.default_rng(seed).permutation(n_words)]
    new = np.empty(n_words, dtype=np.int64)
    new[order] = np.arange(n_words)
    return new[group]


def _add_gram(S: np.ndarray, H: sp.csr_matrix, weight: float, block: int = 1024) -> None:
    """``S += weight * H @ H.T`` for sparse rows ``H`` (n, m), a block of rows at a time: the sparse product of
    profiles that overlap widely holds more than the dense square would."""
    HT = H.T.tocsc()  # (m, n)
    for start in range(0, H.shape[0], block):
        rows = slice(start, start + block)
        S[rows] += weight * (H[rows] @ HT).toarray()  # (block, n)


def _fold(text: str) -> str:
    """The word a token's text spells, up to case and surrounding whitespace; "" for text that spells none
    (only whitespace, or a replacement character: one byte of a multi-byte character)."""
    return "" if "\ufffd" in text else text.strip().casefold()


def _unit_sparse_rows(M: sp.spmatrix) -> sp.csr_matrix:
    """Rows scaled to unit norm (zero rows stay zero)."""
    M = sp.csr_matrix(M)
    norms = np.sqrt(np.asarray(M.multiply(M).sum(1)).ravel())  # (n,)
    return sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ M


def dominant_class(reads: sp.csr_matrix, predicts: sp.csr_matrix, total: np.ndarray, classes: np.ndarray, *,
                   min_class_size: int, min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(class, side), each (n_features,): the variable (a token class with at least ``min_class_size`` tokens;
    :func:`token_classes` already keeps only classes of that many words) holding the largest share of each
    feature's energy ``total`` (n_features,), read (side 0) or predicted (side 1), where that share is at least
    ``min_share``; -1 elsewhere."""
    n_features = reads.shape[0]
    none = np.full(n_features, -1, dtype=np.int64)
    sizes = np.bincount(classes[classes >= 0], minlength=int(classes.max()) + 1 if classes.size else 0)
    variable = np.flatnonzero(sizes >= min_class_size)
    if variable.size == 0:
        return none, none.copy()
    col = np.full(classes.shape[0], -1, dtype=np.int64)
    member = (classes >= 0) & np.isin(classes, variable)
    col[member] = np.searchsorted(variable, classes[member])
    M = one_hot(col, classes.shape[0], variable.size)  # (n_tokens, n_variables)
    shares = sp.hstack([reads @ M, predicts @ M]).tocsr()  # (n_features, 2 n_variables) energies
    best = np.asarray(shares.argmax(axis=1)).ravel()  # (n_features,)
    top = np.asarray(shares.max(axis=1).todense()).ravel()  # (n_features,)
    ok = reaches(top, total, min_share)
    return (np.where(ok, variable[best % variable.size], -1).astype(np.int64),
            np.where(ok, best // variable.size, -1).astype(np.int64))


def reaches(top: np.ndarray, total: np.ndarray, min_share: float) -> np.ndarray:
    """(n,) bool: energy ``top`` (n,) is at least ``min_share`` of ``total`` (n,), and not zero. The two sums round
    differently, so a share of exactly 1 passes ``min_share`` 1."""
    need = min_share * total  # (n,)
    return ((top >= need) | np.isclose(top, need, rtol=1e-9, atol=0.0)) & (top > 0)


def assign_token_families(family: np.ndarray, token_class: np.ndarray, group: np.ndarray) -> np.ndarray:
    """``family`` (n_features,) with every feature that has a ``token_class`` moved into one new family per
    (``group``, class): the group is the layer when families never span layers."""
    out = family.copy()
    has = np.flatnonzero(token_class >= 0)
    if has.size:
        _, inverse = np.unique(np.stack([group[has], token_class[has]], 1), axis=0, return_inverse=True)
        out[has] = (int(family.max()) + 1 if family.size else 0) + inverse.ravel()
    return out


def check_token_inputs(tokens: Any, next_tokens: Any, token_vectors: Any,
                       A: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(tokens, next_tokens, token_vectors) checked against the sample, or None when none is given."""
    given = [x is not None for x in (tokens, next_tokens, token_vectors)]
    if not any(given):
        return None
    if not all(given) or A is None:
        names = ["tokens", "next_tokens", "token_vectors"]
        missing = names[given.index(False)] if not all(given) else "activations"
        raise ValueError(f"tokens, next_tokens and token_vectors must come together, with activations; got no "
                         f"{missing}. Pass all four, or none.")
    vectors = np.asarray(token_vectors)  # not copied: a large model's unembedding is gigabytes
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.dtype.kind != "f":
        raise ValueError(f"token_vectors must be a float (n_tokens, d_model) array (the unembedding); got shape "
                         f"{vectors.shape!r} and dtype {vectors.dtype}.")
    ids = [as_integers(name, x) for name, x in (("tokens", tokens), ("next_tokens", next_tokens))]
    for name, x, lo in (("tokens", ids[0], 0), ("next_tokens", ids[1], -1)):
        if x.shape != (A.shape[0],):
            raise ValueError(f"{name} must have one entry per row of activations ({A.shape[0]}); got shape "
                             f"{x.shape!r}.")
        if x.size and (x.min() < lo or x.max() >= vectors.shape[0]):
            raise ValueError(f"{name} must be token ids in [{lo}, {vectors.shape[0]}) (rows of token_vectors); "
                             f"got {int(x.min() if x.min() < lo else x.max())}.")
    for start in range(0, vectors.shape[0], 8192):  # every row centres the classes; in blocks, never a copy
        if not np.isfinite(vectors[start:start + 8192]).all():
            raise ValueError(f"token_vectors must be finite; got NaN or inf in rows {start}-"
                             f"{min(start + 8192, vectors.shape[0]) - 1}. Pass the model's unembedding rows.")
    return ids[0], ids[1], vectors


def check_token_words(token_words: Sequence[str] | None, n_tokens: int) -> Sequence[str] | None:
    """``token_words`` checked: one string per row of token_vectors (None: no folding)."""
    if token_words is None:
        return None
    if isinstance(token_words, (str, bytes)) or not hasattr(token_words, "__len__"):
        raise TypeError(f"token_words must be a sequence of texts, one per token id; got "
                        f"{type(token_words).__name__}. Pass a list of the tokenizer's texts, or None.")
    if len(token_words) != n_tokens:
        raise ValueError(f"token_words must hold one text per row of token_vectors ({n_tokens}); got "
                         f"{len(token_words)} entries. Pass the tokenizer's text of every token id, or None.")
    for i, w in enumerate(token_words):
        if not isinstance(w, str):
            raise TypeError(f"token_words must be strings (each token's text); got {w!r} at token id {i}.")
    return token_words

"""Feature roles: what each feature does on an unlabelled corpus, read from its tokens alone.

On an activation sample with the token id of every row (and of the next position's in the same prompt), a
feature's activation energy (sum of squared activations) splits over the tokens it fires *on* and the
tokens that come *next* (:func:`analyses.families.tokens.token_energy`). With the token classes of
:func:`analyses.families.tokens.token_classes` (the variables: days, month names, hues, ... found
without labels, with :class:`FamiliesConfig`'s token-class settings), every feature gets one role:

1. **predicts a variable** when at least ``min_share`` of its energy is on rows whose next token is in
   one class ("predicts Monday, Tuesday, ..."), or **reads a variable** when it is on rows whose token is
   (the larger of the two, as FeatureFamilies' token families decide it; a tie is "reads"). A feature that
   predicts a class *and* holds ``min_share`` of its energy on one word it reads has that word in its role
   ("predicts Monday, Tuesday, ... on 'is'": a say-a-day feature of the answer, not of the middle of a
   sentence; ``predicts_on_word``);
2. else **reads a word** when at least ``min_share`` of it is on one word (tokens folded into words as
   the classes fold them: "Is" and "is" are one word);
3. else **mixed**: no single word, class or next class holds that share.

A feature that never fires in the sample has no role (-1): there is no evidence about it.
``min_share`` is 0.5 by default: a role is what holds the majority of a feature's energy.

The roles are the supernode clustering's hard constraint (``SupernodeClustering.fit(roles=...)``,
``role_constraint``): two features of different roles never share a group, so a group that reads "is"
holds no feature that predicts a day. Each role's name also names the groups when no labels are given.
"""

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from analyses.base import check_number
from analyses.families.config import FamiliesConfig
from analyses.families.tokens import (
    check_token_inputs,
    check_token_words,
    dominant_class,
    one_hot,
    reaches,
    token_classes,
    token_energy,
    word_groups,
)
from analyses.results import check_shapes, register_result

KINDS: tuple[str, ...] = ("predicts", "reads", "word", "mixed")
"""Role kinds, in the order a feature is tested for them (a variable predicted or read, one word, neither)."""


@dataclass(frozen=True, kw_only=True)
class RolesConfig:
    """How :func:`feature_roles` reads roles (the token classes use ``families``' token-class settings)."""

    min_share: float = 0.5
    """Share of a feature's activation energy on one class (read or predicted) or one word that makes its role."""
    predicts_on_word: bool = True
    """A feature that predicts a class and holds at least min_share of its energy on one word it reads has a role
    of its own ("predicts Monday, ... on 'is'"); off: every feature that predicts a class shares its class's role."""
    families: FamiliesConfig = dataclasses.field(default_factory=FamiliesConfig)
    """The token-class settings (token_clustering, token_selection, token_cut, fold_case, min_token_class,
    max_tokens, random_state): the token classes are those FeatureFamilies finds on the same sample."""

    def __post_init__(self) -> None:
        check_number("min_share", self.min_share, lo=0.0, hi=1.0)
        if self.min_share <= 0.0:
            raise ValueError(f"min_share must be > 0 (a share of 0 gives every feature every role); got "
                             f"{self.min_share!r}. Use 0.5, a majority of the energy.")
        if not isinstance(self.predicts_on_word, bool):
            raise TypeError(f"predicts_on_word must be True or False; got {self.predicts_on_word!r}.")
        if not isinstance(self.families, FamiliesConfig):
            raise TypeError(f"families must be a FamiliesConfig; got {type(self.families).__name__}.")


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class FeatureRoles:
    """The role of every feature of an activation sample (saveable: ``analyses.results.save_result``)."""

    SCHEMA_VERSION = 1

    keys: np.ndarray
    """(n, 2) int64 (layer, feature) of each feature."""
    role: np.ndarray
    """(n,) int64 each feature's role (an index into ``names``), -1 where the feature never fires."""
    share: np.ndarray
    """(n,) float64 the share of the feature's energy its role holds (for 'mixed': the largest share that
    fell short; 0 where it never fires)."""
    names: tuple[str, ...]
    """Each role's name: "predicts Monday, Tuesday, ... (7 tokens)", "reads 'is'", "mixed"."""
    kinds: tuple[str, ...]
    """Each role's kind (one of :data:`KINDS`)."""
    min_share: float = 0.5
    """The share that made the roles."""
    predicts_on_word: bool | None = None
    """Whether a "predicts" role names the word its features read (RolesConfig.predicts_on_word); None: not
    recorded (a table saved before the option existed)."""
    transcoder_kind: str | None = None
    """The kind of transcoders ("plt" / "clt") whose features these are, when known: the clustering refuses roles
    of another kind than its graph's."""
    transcoder_source: str | None = None
    """The transcoder folder whose features these are, when known: the clustering refuses roles of other
    transcoders (by the folders' signatures, as it refuses a co-activation sample of other transcoders)."""

    def __post_init__(self) -> None:
        """Refuse an inconsistent table (a damaged file): arrays of other lengths, keys named twice, roles that
        name no role, shares outside [0, 1], names that contradict their kinds."""
        check_shapes(self, {"keys": (None, 2)}, kinds={"keys": "iu"})
        n = len(self.keys)
        check_shapes(self, {"role": (n,), "share": (n,)}, kinds={"role": "iu"})
        object.__setattr__(self, "keys", np.asarray(self.keys, dtype=np.int64))  # int32 tables encode as int64
        check_number("FeatureRoles min_share", self.min_share, lo=0.0, hi=1.0)
        bad_kind = next((k for k in self.kinds if k not in KINDS), None)
        if len(self.kinds) != len(self.names) or bad_kind is not None:
            got = bad_kind if bad_kind is not None else f"{len(self.kinds)} kinds"
            raise ValueError(f"FeatureRoles kinds must be one of {list(KINDS)}, one per name; got {got!r} (for "
                             f"{len(self.names)} names). The table is inconsistent.")
        if any((name == "mixed") != (kind == "mixed") for name, kind in zip(self.names, self.kinds)):
            raise ValueError("FeatureRoles names must be 'mixed' exactly where the kind is 'mixed'; got a name that "
                             "contradicts its kind. The table is inconsistent.")
        if n and (int(self.role.min()) < -1 or int(self.role.max()) >= len(self.names)):
            raise ValueError(f"FeatureRoles role must be -1 or an index into its {len(self.names)} names; got values "
                             f"in [{int(self.role.min())}, {int(self.role.max())}]. The table is inconsistent.")
        share = np.asarray(self.share, dtype=np.float64)
        if n and (not np.isfinite(share).all() or share.min() < 0 or share.max() > 1 + 1e-9):
            raise ValueError("FeatureRoles share must be finite shares in [0, 1]; got values outside. The table is "
                             "inconsistent.")
        _, inverse, counts = np.unique(_codes(self.keys), return_inverse=True, return_counts=True)
        if n and counts.max() > 1:
            dup = self.keys[np.flatnonzero(counts[inverse.ravel()] > 1)[0]]  # (2,) the first key named twice
            raise ValueError(f"FeatureRoles keys must name each (layer, feature) once; got {tuple(map(int, dup))!r} "
                             "more than once. The table is inconsistent.")

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(n,) the role of each (layer, feature) row of ``keys`` (n, 2); -1 where the table has none."""
        want = np.asarray(keys)
        if want.ndim != 2 or want.shape[1] != 2 or (want.size and want.dtype.kind not in "iu"):
            raise ValueError(f"keys must be integers of shape (n, 2) (layer, feature); got shape {want.shape} and "
                             f"dtype {want.dtype}. Pass keys[:, [0, 2]] of (layer, pos, feature) rows.")
        code, order = self._sorted_codes  # (n_table,) each
        if not order.size:
            return np.full(len(want), -1, dtype=np.int64)
        query = _codes(want)  # (n,)
        at = np.minimum(np.searchsorted(code, query), order.size - 1)  # (n,) insertion points
        found = code[at] == query  # (n,)
        return np.where(found, self.role[order[at]], -1).astype(np.int64)

    @cached_property
    def _sorted_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(the table's (layer, feature) codes sorted, the row of each): computed once, reused by every lookup."""
        code = _codes(self.keys)  # (n_table,)
        order = np.argsort(code, kind="stable")  # (n_table,)
        return code[order], order

    def names_of(self, keys: np.ndarray) -> list[str | None]:
        """The role's name of each (layer, feature) row of ``keys`` (n, 2); None where it has none."""
        return [self.names[r] if r >= 0 else None for r in self.lookup(keys).tolist()]

    def as_mapping(self) -> dict[tuple[int, int], int]:
        """(layer, feature) -> role, for the features that have one."""
        return {(int(k[0]), int(k[1])): int(r) for k, r in zip(self.keys, self.role) if r >= 0}

    def describe(self, layer: int, feature: int) -> str | None:
        """The role's name of one feature, or None when it has no role."""
        return self.names_of(np.array([[layer, feature]]))[0]


@dataclass(frozen=True, kw_only=True)
class RoleAgreement:
    """How far two role tables (of the same transcoders, read on two samples) agree: see :func:`role_agreement`."""

    n_features: int
    """Features with a role in either table (a feature that fires in neither sample has no evidence either way)."""
    agreement: float
    """Share of those features whose role has the same name in both tables (nan when there are none)."""
    matched_agreement: float
    """Share of those features whose roles correspond under the best one-to-one matching of the two tables' roles
    (the optimal assignment on their contingency table; a feature with a role in one table only never
    corresponds): the features kept together whatever the roles are called. It exceeds ``agreement`` where a
    role's name changed with the sample while its features stayed together (a token class that gained or lost
    one token renames all its roles)."""
    changes: tuple[tuple[str | None, str | None, int], ...]
    """The most common disagreements, (name in the first table, name in the second, features), largest first;
    None: no role there (the feature did not fire in that sample)."""

    def as_dict(self) -> dict[str, Any]:
        """The agreement as plain JSON values."""
        return {"n_features": self.n_features, "agreement": self.agreement,
                "matched_agreement": self.matched_agreement,
                "changes": [{"from": a, "to": b, "n": n} for a, b, n in self.changes]}


def role_agreement(a: FeatureRoles, b: FeatureRoles, *, top: int = 10) -> RoleAgreement:
    """How steady roles are from one sample to another: the share of the features with a role in either table
    whose role is the same in both, compared by name (each table numbers its roles itself), the share whose roles
    correspond under the best one-to-one matching of the two tables' roles, and the ``top`` most common changes.
    Two samples of the same size and kind give the roles' steadiness at that size; a feature near a role's
    ``min_share`` lands on either side with the sample."""
    if a.transcoder_kind is not None and b.transcoder_kind is not None and a.transcoder_kind != b.transcoder_kind:
        raise ValueError(f"role tables must be of the same transcoders to compare; got kinds {a.transcoder_kind!r} and "
                         f"{b.transcoder_kind!r}. Read both on samples of one transcoder set.")
    keys = np.unique(np.concatenate([a.keys, b.keys]), axis=0)  # (n_union, 2)
    name_a, name_b = a.names_of(keys), b.names_of(keys)
    pairs = [(x, y) for x, y in zip(name_a, name_b) if x is not None or y is not None]
    if not pairs:
        return RoleAgreement(n_features=0, agreement=float("nan"), matched_agreement=float("nan"), changes=())
    same = sum(x == y for x, y in pairs)
    counts = Counter((x, y) for x, y in pairs if x != y)
    changes = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:top]
    return RoleAgreement(n_features=len(pairs), agreement=same / len(pairs),
                         matched_agreement=_matched_share(pairs),
                         changes=tuple((x, y, n) for (x, y), n in changes))


def _matched_share(pairs: Sequence[tuple[str | None, str | None]]) -> float:
    """The share of ``pairs`` (each feature's role in two tables; None: no role) on the best one-to-one matching
    of the two tables' roles: the largest sum of a contingency table's cells with at most one cell per row and
    column, over the features with a role in both. Exact and sparse (thousands of roles, as a large model's words
    give, stay cheap): each role of the first table may also take a dummy column of its own at a weight below
    1 / (n_roles + 1), so a full matching exists and the dummies never displace a feature."""
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    both = [(x, y) for x, y in pairs if x is not None and y is not None]
    if not both:
        return 0.0
    _, a = np.unique(np.array([x for x, _ in both]), return_inverse=True)  # (n_both,) each role of table a
    _, b = np.unique(np.array([y for _, y in both]), return_inverse=True)  # (n_both,)
    n_a, n_b = int(a.max()) + 1, int(b.max()) + 1
    counts = sp.coo_matrix((np.ones(len(both)), (a.ravel(), b.ravel())), shape=(n_a, n_b)).tocsr()  # summed
    dummy = sp.identity(n_a, format="csr") / (2.0 * (n_a + 1))  # (n_a, n_a)
    graph = sp.hstack([counts, dummy]).tocsr()  # (n_a, n_b + n_a)
    rows, cols = min_weight_full_bipartite_matching(graph, maximize=True)
    real = cols < n_b  # (n_matched,) matched to a role, not a dummy
    matched = float(np.asarray(counts[rows[real], cols[real]]).sum()) if real.any() else 0.0
    return matched / len(pairs)


def split_half_agreement(A: sp.spmatrix, keys: np.ndarray, *, prompt: np.ndarray, tokens: np.ndarray,
                         next_tokens: np.ndarray, token_vectors: np.ndarray, token_words: Sequence[str] | None = None,
                         config: RolesConfig | None = None) -> RoleAgreement:
    """The roles' steadiness on one sample: :func:`role_agreement` of the roles read (as :func:`feature_roles`
    reads them) on the rows of its even prompts and on those of its odd ones (``prompt`` (n_rows,): each row's
    prompt). Each half holds half the sample, so this is the steadiness at half its size, which is lower where
    steadiness grows with the sample (on the demo world the split half of N sentences tracks two independent
    samples of N / 2 within 0.04)."""
    prompt = np.asarray(prompt)
    n_rows = A.shape[0]
    if prompt.shape != (n_rows,) or (prompt.size and prompt.dtype.kind not in "iu"):
        raise ValueError(f"prompt must be integers of shape ({n_rows},) (each row's prompt); got shape {prompt.shape} "
                         f"and dtype {prompt.dtype}.")
    A = sp.csr_matrix(A)
    halves = []
    for parity in (0, 1):
        rows = np.flatnonzero(prompt % 2 == parity)  # (n_half,)
        if not rows.size:
            raise ValueError(f"a split half needs prompts of both parities (even and odd ids); got prompts "
                             f"{np.unique(prompt).tolist()[:5]}. Give a sample of two or more prompts.")
        halves.append(feature_roles(A[rows], keys, tokens=np.asarray(tokens)[rows],
                                    next_tokens=np.asarray(next_tokens)[rows], token_vectors=token_vectors,
                                    token_words=token_words, config=config))
    return role_agreement(*halves)


def _codes(keys: np.ndarray) -> np.ndarray:
    """(n,) int64 one code per (layer, feature) row of ``keys`` (n, 2)."""
    k = np.asarray(keys, dtype=np.int64)
    return k[:, 0] * (1 << 32) + k[:, 1]


def row_tokens(prompt: np.ndarray, pos: np.ndarray, token: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, next_tokens) of the rows at position >= 1 (an activation store's feature rows), from its row
    table (each (n_rows,)): each row's token and the token at the next position of the same prompt (-1 where the
    table has no such row: a prompt's end). Rows may come in any order."""
    order = np.lexsort((pos, prompt))  # (n_rows,) rows by prompt, then position
    twice = (prompt[order][1:] == prompt[order][:-1]) & (pos[order][1:] == pos[order][:-1])  # (n_rows - 1,)
    if twice.any():
        at = order[1:][twice][0]
        raise ValueError(f"row table must hold each (prompt, position) once; got prompt {int(prompt[at])}, position "
                         f"{int(pos[at])} more than once. The activation run is damaged: collect it again.")
    follows = (prompt[order][1:] == prompt[order][:-1]) & (pos[order][1:] == pos[order][:-1] + 1)  # (n_rows - 1,)
    nxt = np.full(token.shape, -1, dtype=np.int64)  # (n_rows,)
    nxt[order[:-1][follows]] = token[order[1:][follows]]
    keep = pos > 0  # (n_rows,) BOS rows are never active: left out, as the feature matrix leaves them
    return token[keep].astype(np.int64), nxt[keep]


def feature_roles(A: sp.spmatrix, keys: np.ndarray, *, tokens: np.ndarray, next_tokens: np.ndarray,
                  token_vectors: np.ndarray, token_words: Sequence[str] | None = None,
                  config: RolesConfig | None = None, transcoder_kind: str | None = None,
                  transcoder_source: str | None = None) -> FeatureRoles:
    """The roles of the columns of ``A`` (n_rows, n_features) non-negative activations, named by ``keys``
    (n_features, 2) (layer, feature); ``tokens`` / ``next_tokens`` (n_rows,) each row's token id and the next
    one's (-1: none); ``token_vectors`` (d_vocab, d_model) the model's unembedding; ``token_words`` each token's
    text (folds tokens into words; None: every token is its own word); ``transcoder_kind`` / ``transcoder_source``
    the kind ("plt" / "clt") and folder of the sample's transcoders, recorded in the table. See the module
    docstring."""
    cfg = config or RolesConfig()
    A, keys, tokens, next_tokens, token_vectors, token_words = _checked(A, keys, tokens, next_tokens, token_vectors,
                                                                        token_words)
    fam = cfg.families
    n_tokens = token_vectors.shape[0]
    reads, predicts = token_energy(A, tokens, next_tokens, n_tokens)  # (n_features, n_tokens) each
    counts = np.bincount(tokens, minlength=n_tokens)  # (n_tokens,) rows per token
    classes = token_classes(token_vectors, reads, predicts, counts, clustering=fam.token_clustering,
                            cut=fam.token_cut, min_class_size=fam.min_token_class, selection=fam.token_selection,
                            max_tokens=fam.max_tokens, words=token_words, fold=fam.fold_case, seed=fam.random_state)
    # classes: (n_tokens,) each token's class, -1 for none
    total = np.asarray(reads.sum(axis=1)).ravel()  # (n_features,)
    seen = np.flatnonzero(counts > 0)  # (n_seen,) token ids in the sample
    word = np.full(n_tokens, -1, dtype=np.int64)  # (n_tokens,) each seen token's word
    word[seen] = word_groups(token_words if fam.fold_case else None, seen)
    by_word = one_hot(word, n_tokens, int(word.max()) + 1 if seen.size else 0)  # (n_tokens, n_words)
    top_word = _row_max((reads @ by_word).tocsr())  # (word, energy) each (n_features,): the word read most
    kind, index, share = _assign(reads, predicts, classes, top_word, total, fam.min_token_class, cfg.min_share)
    on = (_on_word(kind, top_word, total, cfg.min_share) if cfg.predicts_on_word  # (n_features,)
          else np.full(kind.shape, -1))
    texts = _word_texts(word, seen, token_words)
    names = {"predicts": _class_names(classes, token_words, "predicts"),
             "reads": _class_names(classes, token_words, "reads"),
             "word": {w: f"reads {t}" for w, t in texts.items()}}
    table = _table(keys, np.stack([kind, index, on], 1), share, names, texts, cfg.min_share)  # parts (n_features, 3)
    return dataclasses.replace(table, predicts_on_word=cfg.predicts_on_word, transcoder_kind=transcoder_kind,
                               transcoder_source=transcoder_source)


def _checked(A: Any, keys: Any, tokens: Any, next_tokens: Any, token_vectors: Any,
             token_words: Sequence[str] | None) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                         Sequence[str] | None]:
    """The inputs of :func:`feature_roles` checked as FeatureFamilies checks its token inputs (one error naming
    the value that is wrong): A non-negative and finite, keys one (layer, feature) per column."""
    from analyses.families.coactivation import as_csr

    A = as_csr(A, "A")
    keys = np.asarray(keys)
    if keys.shape != (A.shape[1], 2) or (keys.size and keys.dtype.kind not in "iu"):
        raise ValueError(f"keys must be integers of shape ({A.shape[1]}, 2) (layer, feature per column of A); got "
                         f"shape {keys.shape} and dtype {keys.dtype}.")
    checked = check_token_inputs(tokens, next_tokens, token_vectors, A)
    if checked is None:
        raise ValueError("tokens, next_tokens and token_vectors must be given; got none. Pass the sample's token ids "
                         "and the model's unembedding.")
    tokens, next_tokens, vectors = checked
    return A, keys.astype(np.int64), tokens, next_tokens, vectors, check_token_words(token_words, vectors.shape[0])


def _assign(reads: sp.csr_matrix, predicts: sp.csr_matrix, classes: np.ndarray, top_word: tuple[np.ndarray, np.ndarray],
            total: np.ndarray, min_class_size: int, min_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind, index, share), each (n_features,): the kind of each feature's role (an index into :data:`KINDS`,
    -1 where it never fires), its class or word (-1 for 'mixed' and none), and the share behind it (for 'mixed',
    the largest share that fell short). The class part is FeatureFamilies' own (:func:`dominant_class`: the
    largest class share, read or predicted; a tie is 'reads'); ``top_word``: each feature's most-read word and
    its energy, (n_features,) each."""
    dom, side = dominant_class(reads, predicts, total, classes, min_class_size=min_class_size, min_share=min_share)
    n_classes = int(classes.max()) + 1 if classes.size else 0
    by_class = one_hot(classes, classes.shape[0], n_classes)  # (n_tokens, n_classes)
    class_energy = sp.hstack([reads @ by_class, predicts @ by_class]).tocsr()  # (n_features, 2 n_classes)
    w_at, w_top = top_word  # (n_features,) each
    _, c_top = _row_max(class_energy)  # (n_features,)
    has_class = dom >= 0
    word_ok = ~has_class & reaches(w_top, total, min_share)  # (n_features,)
    kind = np.select([total <= 0, has_class & (side == 1), has_class, word_ok], [-1, 0, 1, 2], default=3)
    index = np.select([kind == 0, kind == 1, kind == 2], [dom, dom, w_at], default=-1)
    picked = np.zeros(dom.size) if n_classes == 0 else np.asarray(  # (n_features,) the role's class energy
        class_energy[np.arange(dom.size), np.where(has_class, dom + n_classes * side, 0)]).ravel()
    top = np.select([has_class, word_ok], [picked, w_top], default=np.maximum(c_top, w_top))  # (n_features,)
    share = np.divide(top, total, out=np.zeros_like(total), where=total > 0)
    return kind.astype(np.int64), index.astype(np.int64), np.clip(share, 0.0, 1.0)


def _row_max(M: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(column, value) of each row's largest entry, (n_rows,) each (0, 0 for a matrix without columns)."""
    if M.shape[1] == 0:
        return np.zeros(M.shape[0], np.int64), np.zeros(M.shape[0])
    return np.asarray(M.argmax(axis=1)).ravel(), np.asarray(M.max(axis=1).todense()).ravel()


def _class_names(classes: np.ndarray, words: Sequence[str] | None, verb: str, shown: int = 5) -> dict[int, str]:
    """Each class's name: "predicts Monday, Tuesday, ... (7 tokens)" (its tokens in id order)."""
    out = {}
    for c in np.unique(classes[classes >= 0]).tolist():
        ids = np.flatnonzero(classes == c)
        texts = [_text(words, i) for i in ids.tolist()]
        more = ", ..." if len(texts) > shown else ""
        out[c] = f"{verb} {', '.join(texts[:shown])}{more} ({len(texts)} tokens)"
    return out


def _on_word(kind: np.ndarray, top_word: tuple[np.ndarray, np.ndarray], total: np.ndarray,
             min_share: float) -> np.ndarray:
    """(n_features,) the word a 'predicts' feature reads with at least ``min_share`` of its energy (``top_word``:
    each feature's most-read word and its energy), -1 for every other feature."""
    at, top = top_word  # (n_features,) each
    return np.where((kind == KINDS.index("predicts")) & reaches(top, total, min_share), at, -1)


def _word_texts(word: np.ndarray, seen: np.ndarray, words: Sequence[str] | None) -> dict[int, str]:
    """Each word's text for a name: "'is'" (the text of its lowest token id)."""
    out: dict[int, str] = {}
    for i in seen.tolist():
        out.setdefault(int(word[i]), repr(_text(words, i)))
    return out


def _text(words: Sequence[str] | None, i: int) -> str:
    """A token's text for a name: stripped of surrounding whitespace unless that leaves nothing; its id without
    texts."""
    return str(i) if words is None else (words[i].strip() or words[i])


def _table(keys: np.ndarray, parts: np.ndarray, share: np.ndarray, names: Mapping[str, Mapping[int, str]],
           texts: Mapping[int, str], min_share: float) -> FeatureRoles:
    """The roles, one per distinct row of ``parts`` (n_features, 3) (kind, class or word, word read by a
    'predicts' feature or -1), numbered in the order of their names (then the parts: two words may print
    alike), so the same sample gives the same numbers."""
    kind = parts[:, 0]  # (n_features,)
    has = kind >= 0
    rows, inverse = np.unique(parts[has], axis=0, return_inverse=True)  # (n_roles, 3)
    label = [(_role_name(k, j, on, names, texts), k, j, on) for k, j, on in rows.tolist()]
    order = sorted(range(len(label)), key=label.__getitem__)
    number = np.empty(len(label), dtype=np.int64)
    number[order] = np.arange(len(label))
    role = np.full(kind.shape, -1, dtype=np.int64)
    role[has] = number[inverse.ravel()]
    return FeatureRoles(keys=keys, role=role, share=share.astype(np.float64),
                        names=tuple(label[k][0] for k in order), kinds=tuple(KINDS[label[k][1]] for k in order),
                        min_share=float(min_share))


def _role_name(kind: int, index: int, on: int, names: Mapping[str, Mapping[int, str]],
               texts: Mapping[int, str]) -> str:
    """One role's name from its parts: "mixed", "reads 'is'", "predicts Monday, ... (7 tokens) on 'is'"."""
    if KINDS[kind] == "mixed":
        return "mixed"
    name = names[KINDS[kind]][index]
    return name if on < 0 else f"{name} on {texts[on]}"

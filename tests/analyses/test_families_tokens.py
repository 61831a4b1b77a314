"""Token-class evidence for FeatureFamilies (analyses.families.tokens), on planted samples."""

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses.families import FeatureFamilies
from analyses.families.tokens import assign_token_families, dominant_class, token_classes, token_energy

DAYS, MONTHS, OTHER, FILLER = np.arange(0, 7), np.arange(7, 19), np.arange(19, 27), np.arange(27, 30)


def _planted(seed: int = 0, n_rows: int = 3000) -> dict:
    """Rows of random tokens; feature f < 6 predicts one day (fires where the next token is day f), feature
    6 <= f < 12 reads two months, features 12-17 read "other" tokens. Like the values of a ring, the day (or
    month) features never fire together, so co-activation cannot join them; the unembedding puts days, months
    and the others in four directions (month and "other" features fire only before one of three filler tokens,
    too few to be a variable, so nothing co-fires with a day feature). Decoder rows are random: geometry alone
    finds no family."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 30, n_rows)
    nxt = np.append(tokens[1:], -1)
    acts = np.zeros((n_rows, 18))
    for f in range(6):
        acts[:, f] = nxt == DAYS[f]
    for f in range(6, 12):
        acts[:, f] = np.isin(tokens, MONTHS[2 * (f - 6):2 * (f - 6) + 2]) * np.isin(nxt, FILLER)
    for f in range(12, 18):
        acts[:, f] = np.isin(tokens, OTHER) * np.isin(nxt, FILLER) * (rng.random(n_rows) < 0.3)
    acts *= rng.uniform(0.5, 1.5, acts.shape)  # (n_rows, 18)
    base = rng.normal(size=(4, 16)) * 3
    W_U = np.concatenate([base[k] + rng.normal(size=(len(t), 16)) for k, t in enumerate((DAYS, MONTHS, OTHER, FILLER))])
    return {"A": sp.csr_matrix(acts), "tokens": tokens, "next_tokens": nxt, "W_U": W_U,
            "X": rng.normal(size=(18, 32))}


def test_token_energy_splits_squared_activations_by_read_and_next_token() -> None:
    A = sp.csr_matrix(np.array([[1.0, 0.0], [2.0, 3.0], [0.0, 1.0]]))
    reads, predicts = token_energy(A, np.array([0, 1, 1]), np.array([1, 1, -1]), 3)
    assert reads.toarray().tolist() == [[1.0, 4.0, 0.0], [0.0, 10.0, 0.0]]
    assert predicts.toarray().tolist() == [[0.0, 5.0, 0.0], [0.0, 9.0, 0.0]]  # the last row has no next token


def test_planted_token_classes_and_families_are_recovered() -> None:
    d = _planted()
    reads, predicts = token_energy(d["A"], d["tokens"], d["next_tokens"], 30)
    classes = token_classes(d["W_U"], reads, predicts, np.bincount(d["tokens"], minlength=30), clustering="average",
                            cut=0.6, min_class_size=1, selection="leaf", max_tokens=100)
    assert len({*classes[DAYS]}) == len({*classes[MONTHS]}) == 1 and classes[0] != classes[7]
    total = np.asarray(d["A"].multiply(d["A"]).sum(0)).ravel()
    dom, side = dominant_class(reads, predicts, total, classes, min_class_size=5, min_share=0.5)
    assert len({*dom[:6]}) == 1 and dom[0] == classes[0] and len({*dom[6:12]}) == 1 and dom[6] == classes[7]
    assert (side[:6] == 1).all() and (side[6:12] == 0).all()  # day features predict, month features read
    fam = FeatureFamilies(token_clustering="average", token_cut=0.6, min_token_share=0.5).fit(
        d["X"], activations=d["A"], tokens=d["tokens"], next_tokens=d["next_tokens"], token_vectors=d["W_U"])
    labels = fam.labels_
    assert len({*labels[:6]}) == 1 and len({*labels[6:12]}) == 1 and labels[0] != labels[6] and labels[0] >= 0
    assert "token_classes" in fam.timings_
    off = FeatureFamilies(token_clustering="average", token_cut=0.6, token_families=False).fit(
        d["X"], activations=d["A"], tokens=d["tokens"], next_tokens=d["next_tokens"], token_vectors=d["W_U"])
    assert "token_classes" not in off.timings_
    for rows in (slice(0, 6), slice(6, 12)):  # co-activation and geometry alone do not make these families
        assert len({*off.labels_[rows]}) > 1 or off.labels_[rows][0] < 0


def test_a_share_below_the_threshold_or_a_small_class_makes_no_family() -> None:
    reads = sp.csr_matrix(np.array([[3.0, 3.0, 4.0, 0.0]]))
    predicts = sp.csr_matrix(np.zeros((1, 4)))
    classes = np.array([0, 0, 1, -1])  # class 0 has two tokens, class 1 one
    assert dominant_class(reads, predicts, np.array([10.0]), classes, min_class_size=2, min_share=0.5)[0][0] == 0
    assert dominant_class(reads, predicts, np.array([10.0]), classes, min_class_size=2, min_share=0.7)[0][0] == -1
    assert dominant_class(reads, predicts, np.array([10.0]), classes, min_class_size=1, min_share=0.5)[0][0] == 0
    assert dominant_class(reads, predicts, np.array([10.0]), classes, min_class_size=3, min_share=0.1)[0][0] == -1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-1, 3), min_size=1, max_size=12), st.integers(0, 2))
def test_assign_token_families_moves_exactly_the_classed_features(classes: list[int], n_groups: int) -> None:
    cls = np.array(classes)
    family = np.arange(len(cls)) % 3
    group = np.arange(len(cls)) % (n_groups + 1)
    out = assign_token_families(family, cls, group)
    has = cls >= 0
    assert (out[~has] == family[~has]).all() and (out[has] > family.max()).all()
    for i in np.flatnonzero(has):  # one family per (group, class)
        for j in np.flatnonzero(has):
            assert (out[i] == out[j]) == (cls[i] == cls[j] and group[i] == group[j])


@pytest.mark.parametrize("kwargs, match", [
    ({"tokens": [0] * 3000}, "must come together"),
    ({"tokens": [0] * 5, "next_tokens": [0] * 5, "token_vectors": np.ones((30, 4))}, "one entry per row"),
    ({"tokens": [40] * 3000, "next_tokens": [0] * 3000, "token_vectors": np.ones((30, 4))}, r"in \[0, 30\).*got 40"),
    ({"tokens": [0] * 3000, "next_tokens": [-2] * 3000, "token_vectors": np.ones((30, 4))}, r"in \[-1, 30\).*got -2"),
    ({"tokens": [0] * 3000, "next_tokens": [0] * 3000, "token_vectors": np.ones(30)}, "token_vectors must be a float"),
    ({"tokens": [0] * 3000, "next_tokens": [0] * 3000, "token_vectors": np.ones((30, 4), int)}, "dtype int64"),
    ({"tokens": [0] * 3000, "next_tokens": [0] * 3000, "token_vectors": np.full((30, 4), np.nan)}, "must be finite"),
])
def test_bad_token_inputs_are_one_clear_error(kwargs: dict, match: str) -> None:
    d = _planted()
    with pytest.raises(ValueError, match=match):
        FeatureFamilies().fit(d["X"], activations=d["A"], **kwargs)
    with pytest.raises(ValueError, match="with activations"):
        FeatureFamilies().fit(d["X"], tokens=d["tokens"], next_tokens=d["next_tokens"], token_vectors=d["W_U"])


def test_a_nan_in_any_unembedding_row_is_refused() -> None:
    """Every row centres the token classes: a NaN in a row the sample never uses made the mean NaN and silently
    dropped the unembedding half of the similarity."""
    d = _planted()
    W_U = np.concatenate([d["W_U"], np.full((1, 16), np.nan)])  # token 30 never occurs
    with pytest.raises(ValueError, match="token_vectors must be finite; got NaN or inf in rows 0-30"):
        FeatureFamilies().fit(d["X"], activations=d["A"], tokens=d["tokens"], next_tokens=d["next_tokens"],
                              token_vectors=W_U)


def test_a_share_of_exactly_one_passes_min_share_one() -> None:
    """The class energy (a sparse product) and the total (a column sum) round differently in float64."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, 2000)
    A = sp.csr_matrix((np.isin(tokens, [0, 1, 2]) * rng.uniform(0.1, 3.0, 2000))[:, None])  # (2000, 1)
    reads, predicts = token_energy(A, tokens, np.full(2000, -1), 6)
    total = np.asarray(A.multiply(A).sum(0)).ravel()
    classes = np.array([0, 0, 0, 1, 1, 1])
    assert dominant_class(reads, predicts, total, classes, min_class_size=3, min_share=1.0)[0][0] == 0


def test_token_families_record_their_tokens_and_sides_and_survive_a_round_trip(tmp_path) -> None:
    from analyses.families.results import FeatureFamiliesResult
    from analyses.results import load_result, save_result

    d = _planted()
    est = FeatureFamilies(token_clustering="average", token_cut=0.6, min_token_share=0.5).fit(
        d["X"], activations=d["A"], tokens=d["tokens"], next_tokens=d["next_tokens"], token_vectors=d["W_U"])
    days, months = (est.family_of(0, f) for f in (0, 6))
    assert days is not None and months is not None
    assert days.tokens == DAYS.tolist() and days.token_sides == ["predict"]
    assert months.tokens == MONTHS.tolist() and months.token_sides == ["read"]
    rows = {tuple(r["features"]): r for r in est.result_.to_json_families()}
    assert rows[tuple(range(6))]["tokens"] == DAYS.tolist() and rows[tuple(range(6))]["token_sides"] == ["predict"]
    others = est.family_of(0, 12)  # the "other" readers: a class of 8 tokens is a variable too
    assert others is not None and others.tokens == OTHER.tolist() and others.token_sides == ["read"]
    back = load_result(save_result(est.result_, tmp_path / "fam.json"), FeatureFamiliesResult)
    assert back.families[days.id].tokens == days.tokens and back.families[days.id].token_sides == ["predict"]


def test_min_share_one_passes_through_the_estimator_with_float32_activations() -> None:
    """The estimator casts activations to float32; its total energy must round like the class energies."""
    d = _planted(n_rows=20000)
    for seed in range(3):
        d = _planted(seed, n_rows=20000)
        est = FeatureFamilies(token_clustering="average", token_cut=0.6, min_token_share=1.0).fit(
            d["X"], activations=d["A"], tokens=d["tokens"], next_tokens=d["next_tokens"], token_vectors=d["W_U"])
        assert len({*est.labels_[:6]}) == 1 and est.labels_[0] >= 0, seed  # each day feature: share exactly 1


def test_token_inputs_are_ignored_when_token_classes_are_off() -> None:
    d = _planted()
    bad = np.full_like(d["W_U"], np.nan)
    off = FeatureFamilies(token_families=False).fit(d["X"], activations=d["A"], tokens=d["tokens"],
                                                     next_tokens=d["next_tokens"], token_vectors=bad)
    plain = FeatureFamilies(token_families=False).fit(d["X"], activations=d["A"])
    assert np.array_equal(off.labels_, plain.labels_)


def test_max_tokens_keeps_the_most_frequent_tokens() -> None:
    counts = np.array([5, 50, 0, 40, 1])
    reads = sp.csr_matrix(np.ones((2, 5)))
    classes = token_classes(np.eye(5), reads, reads, counts, clustering="average", cut=0.5, min_class_size=1,
                            selection="leaf", max_tokens=2)
    assert (classes[[0, 2, 4]] == -1).all() and (classes[[1, 3]] >= 0).all()


def test_cross_layer_token_families_join_layers() -> None:
    d = _planted()
    X = np.concatenate([d["X"], d["X"] + 0.01])  # the same 18 features in two layers
    layer = np.repeat([0, 1], 18)
    feature = np.tile(np.arange(18), 2)
    A = sp.hstack([d["A"], d["A"]]).tocsr()
    kw = {"tokens": d["tokens"], "next_tokens": d["next_tokens"], "token_vectors": d["W_U"]}
    per = FeatureFamilies(token_clustering="average", token_cut=0.6, min_token_share=0.5).fit(
        X, layer=layer, feature=feature, activations=A, **kw)
    cross = FeatureFamilies(token_clustering="average", token_cut=0.6, min_token_share=0.5, per_layer=False).fit(
        X, layer=layer, feature=feature, activations=A, **kw)
    assert per.labels_[0] != per.labels_[18] and cross.labels_[0] == cross.labels_[18]  # day features of both layers
    fam = cross.family_of(1, 0)
    assert fam is not None and fam.layers == [0, 1] and fam.tokens == DAYS.tolist()


def _ring_sample(seed: int = 0) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """(W_U (32, 16), reads (22, 32), predicts): tokens 0-11 on a ring in the unembedding (opposite values
    anti-aligned), each read by two place-cell features with its neighbours; tokens 12-17 and 18-23 two tight
    classes (one feature reads each); tokens 24-31 unrelated."""
    rng = np.random.default_rng(seed)
    theta = 2 * np.pi * np.arange(12) / 12
    W_U = np.zeros((32, 16))
    W_U[:12, 0], W_U[:12, 1] = np.cos(theta), np.sin(theta)
    W_U[12:18, 2] = W_U[18:24, 3] = 1.0
    W_U[24:] = rng.normal(size=(8, 16))
    W_U = 4 * W_U + 0.3 * rng.normal(size=(32, 16))
    R = np.zeros((22, 32))
    for k in range(12):
        R[k, [k, (k + 1) % 12]] = 1.0
    R[12, 12:18] = R[13, 18:24] = 1.0
    R[np.arange(14, 22), np.arange(24, 32)] = 1.0
    return W_U, sp.csr_matrix(R), sp.csr_matrix((22, 32))


@pytest.mark.parametrize("selection", ["leaf", "eom"])
def test_hdbscan_keeps_a_ring_of_tokens_one_class_where_an_average_linkage_cut_splits_it(selection: str) -> None:
    W_U, reads, predicts = _ring_sample()
    kw: dict[str, Any] = {"min_class_size": 5, "selection": selection, "max_tokens": 100}
    classes = token_classes(W_U, reads, predicts, np.ones(32, int), clustering="hdbscan", cut=0.0, **kw)
    assert len({*classes[:12]}) == 1 and classes[0] >= 0  # the whole ring
    assert len({*classes[12:18]}) == len({*classes[18:24]}) == 1 and len({classes[0], classes[12], classes[18]}) == 3
    assert (classes[24:] == -1).all()  # unrelated tokens are in no class
    for cut in (0.4, 0.6, 0.8, 0.9):  # no cut keeps the ring whole without mixing it with other tokens
        avg = token_classes(W_U, reads, predicts, np.ones(32, int), clustering="average", cut=cut, **kw)
        ring = avg[:12]
        assert not ((ring == ring[0]).all() and ring[0] >= 0 and (avg[12:] != ring[0]).all()), cut


def test_tokens_spelling_one_word_up_to_case_and_whitespace_are_one_word() -> None:
    from analyses.families.tokens import word_groups

    words = ["Two", "two", " two", "  ", "\t", "Three", "TWO\n", "\ufffd", "\ufffd"]  # two partial UTF-8 bytes
    assert word_groups(words, np.arange(9)).tolist() == [0, 0, 0, 1, 2, 3, 0, 4, 5]
    assert word_groups(words, np.array([3, 5, 6])).tolist() == [0, 1, 2]
    assert word_groups(None, np.arange(4)).tolist() == [0, 1, 2, 3]


def test_folding_case_joins_the_sentence_start_forms_of_a_class() -> None:
    """Capitalised number words (tokens 5-9) and lowercase ones (0-4): different unembedding directions and
    different reading features, so apart they are two classes; spelled alike, they are one. Tokens 10-15 are
    another class (HDBSCAN finds classes by contrast: a lone class among unrelated tokens is no cluster), 16-25
    unrelated."""
    rng = np.random.default_rng(0)
    W_U = np.zeros((26, 8))
    W_U[:5, 0] = W_U[5:10, 1] = W_U[10:16, 2] = 1.0
    W_U[16:] = rng.normal(size=(10, 8))
    W_U = 4 * W_U + 0.3 * rng.normal(size=(26, 8))
    R = np.zeros((13, 26))
    R[0, :5] = R[1, 5:10] = R[2, 10:16] = 1.0
    R[np.arange(3, 13), np.arange(16, 26)] = 1.0
    numbers = ["one", "two", "three", "four", "five"]
    words = numbers + [w.capitalize() for w in numbers] + [f"w{i}" for i in range(16)]
    kw: dict[str, Any] = {"clustering": "hdbscan", "cut": 0.0, "min_class_size": 5, "selection": "leaf",
                          "max_tokens": 100}
    reads, predicts = sp.csr_matrix(R), sp.csr_matrix((13, 26))
    apart = token_classes(W_U, reads, predicts, np.ones(26, int), **kw)
    joined = token_classes(W_U, reads, predicts, np.ones(26, int), words=words, **kw)
    assert apart[0] >= 0 and apart[5] >= 0 and apart[0] != apart[5]
    assert joined[0] >= 0 and (joined[:10] == joined[0]).all()
    assert joined[10] >= 0 and (joined[10:16] == joined[10]).all() and joined[10] != joined[0]


def test_the_estimator_folds_case_only_when_asked_and_checks_the_words() -> None:
    d = _planted()
    kw = {"activations": d["A"], "tokens": d["tokens"], "next_tokens": d["next_tokens"], "token_vectors": d["W_U"]}
    same = ["Day", " day"] * 3 + ["DAY"] + [f"m{i}" for i in range(23)]  # the day tokens spell one word
    distinct = [f"t{i}" for i in range(30)]

    def fit(words: list[str] | None, fold_case: bool = True) -> tuple[list[int], list[list[int] | None]]:
        est = FeatureFamilies(min_token_share=0.5, fold_case=fold_case).fit(d["X"], token_words=words, **kw)
        return est.labels_.tolist(), [f.tokens for f in est.result_.families]

    plain = fit(None)
    assert len({*plain[0][:6]}) == 1 and plain[0][0] >= 0
    assert fit(distinct) == plain  # words spelled apart change nothing
    assert fit(same, fold_case=False) == plain  # words are ignored without fold_case
    assert fit(same) != plain  # one word of 7 tokens is no class of 5 words
    with pytest.raises(ValueError, match=r"token_words must hold one text per row of token_vectors \(30\); got 3"):
        FeatureFamilies().fit(d["X"], token_words=["a", "b", "c"], **kw)
    with pytest.raises(TypeError, match="token_words must be a sequence of texts.*got str"):
        FeatureFamilies().fit(d["X"], token_words="a" * 30, **kw)
    with pytest.raises(TypeError, match="got int"):
        FeatureFamilies().fit(d["X"], token_words=30, **kw)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(TypeError, match="token_words must be strings"):
        FeatureFamilies().fit(d["X"], token_words=[1] * 30, **kw)  # type: ignore[list-item]  # wrong on purpose
    with pytest.raises(TypeError, match="got None at token id 0"):  # None was taken for "nothing wrong"
        FeatureFamilies().fit(d["X"], token_words=[None] + ["a"] * 29, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="token_words must come with tokens"):
        FeatureFamilies().fit(d["X"], activations=d["A"], token_words=distinct)


def test_hdbscan_token_classes_need_a_minimum_class_of_two() -> None:
    with pytest.raises(ValueError, match="min_token_class must be >= 2 when HDBSCAN makes the token classes"):
        FeatureFamilies(min_token_class=1).fit(np.eye(4))
    FeatureFamilies(min_token_class=1, token_clustering="average").fit(np.eye(4))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 24), st.integers(2, 5), st.sampled_from(["hdbscan", "average"]), st.sampled_from(["leaf", "eom"]),
       st.integers(0, 2**16))
def test_token_classes_are_variables_of_min_class_size_words_or_none(n_tokens: int, min_class: int, clustering: str,
                                                                     selection: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    W_U = rng.normal(size=(n_tokens, 6))
    reads = sp.csr_matrix(rng.random((4, n_tokens)) * (rng.random((4, n_tokens)) < 0.5))
    counts = rng.integers(0, 3, n_tokens)
    words = [str(w) for w in rng.choice(["a", "A", " b", "c ", "C", "d"], n_tokens)]
    classes = token_classes(W_U, reads, reads, counts, clustering=clustering, cut=0.5, min_class_size=min_class,
                            selection=selection, max_tokens=64, words=words)
    assert classes.shape == (n_tokens,) and (classes[counts == 0] == -1).all()
    for c in np.unique(classes[classes >= 0]):  # counted in words: tokens spelled alike are one
        assert len({words[i].strip().casefold() for i in np.flatnonzero(classes == c)}) >= min_class


def test_token_classes_do_not_depend_on_the_token_ids() -> None:
    """Renumbering the vocabulary gives the same classes: the words are ordered by their text (this sample has no
    ties; tests/workbench/test_families_eval.py has a world sample where the id order changed the classes)."""
    W_U, reads, predicts = _ring_sample()
    words = [f"v{i}" for i in range(32)]
    kw: dict[str, Any] = {"clustering": "hdbscan", "cut": 0.0, "min_class_size": 3, "selection": "leaf",
                          "max_tokens": 100}
    counts = np.ones(32, int)
    base = token_classes(W_U, reads, predicts, counts, words=words, **kw)

    def partition(classes: np.ndarray, names: list[str]) -> set[frozenset[str]]:
        return {frozenset(names[i] for i in np.flatnonzero(classes == c)) for c in np.unique(classes[classes >= 0])}

    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(32)  # new id j holds old token perm[j]
        moved = token_classes(W_U[perm], reads[:, perm], predicts[:, perm], counts[perm],
                              words=[words[i] for i in perm], **kw)
        assert partition(moved, [words[i] for i in perm]) == partition(base, words), seed
    same = ["\ufffd"] * 32  # one text for every token (partial UTF-8 bytes): the unembedding rows order them
    base = token_classes(W_U, reads, predicts, counts, words=same, **kw)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(32)
        moved = token_classes(W_U[perm], reads[:, perm], predicts[:, perm], counts[perm], words=same, **kw)
        assert {frozenset(perm[moved == c].tolist()) for c in np.unique(moved[moved >= 0])} == \
            {frozenset(np.flatnonzero(base == c).tolist()) for c in np.unique(base[base >= 0])}, seed

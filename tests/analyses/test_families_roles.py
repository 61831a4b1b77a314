"""Feature roles (analyses.families.roles) on planted samples, and the clustering's role constraint."""

from collections.abc import Sequence

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses.families.config import FamiliesConfig
from analyses.families.roles import (
    FeatureRoles,
    RolesConfig,
    feature_roles,
    role_agreement,
    row_tokens,
    split_half_agreement,
)
from analyses.results import load_result, save_result
from analyses.supernodes.clustering import SupernodeClustering
from tests.analyses.supernodes.planted import planted_graph

DAYS, MONTHS, OTHER, FILLER = np.arange(0, 7), np.arange(7, 19), np.arange(19, 27), np.arange(27, 30)
WORDS = [f"w{i}" for i in range(30)]
AVERAGE = RolesConfig(families=FamiliesConfig(token_clustering="average"))  # a tiny vocabulary: a linkage cut


def _planted(seed: int = 0, n_rows: int = 3000) -> dict:
    """Rows of random tokens over a vocabulary whose unembedding puts days, months, others and fillers in four
    directions. Feature 0 predicts days (fires where the next token is a day), 1 reads months, 2 reads the one
    filler token 27, 3 fires everywhere (mixed), 4 never fires."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 30, n_rows)
    nxt = np.append(tokens[1:], -1)
    acts = np.zeros((n_rows, 5))
    acts[:, 0] = np.isin(nxt, DAYS)
    acts[:, 1] = np.isin(tokens, MONTHS)
    acts[:, 2] = tokens == 27
    acts[:, 3] = 1.0
    acts[:, :4] *= rng.uniform(0.5, 1.5, (n_rows, 4))
    base = rng.normal(size=(4, 16)) * 3
    W_U = np.concatenate([base[k] + rng.normal(size=(len(t), 16)) for k, t in enumerate((DAYS, MONTHS, OTHER, FILLER))])
    return {"A": sp.csr_matrix(acts), "keys": np.stack([np.full(5, 2), np.arange(5)], 1), "tokens": tokens,
            "next_tokens": nxt, "token_vectors": W_U}


def _roles(d: dict, config: RolesConfig = AVERAGE) -> FeatureRoles:
    return feature_roles(d["A"], d["keys"], tokens=d["tokens"], next_tokens=d["next_tokens"],
                         token_vectors=d["token_vectors"], token_words=d.get("words", WORDS), config=config)


def test_planted_roles_are_read_from_the_tokens_alone() -> None:
    roles = _roles(_planted())
    names: list[str] = [roles.describe(2, f) or "" for f in range(4)]
    assert roles.describe(2, 4) is None  # feature 4 never fires
    assert names[0].startswith("predicts w0, w1, w2, w3, w4, ...") and names[0].endswith("(7 tokens)")
    assert names[1].startswith("reads w7, w8") and names[1].endswith("(12 tokens)")
    assert names[2] == "reads 'w27'" and names[3] == "mixed"
    assert [roles.kinds[r] for r in roles.role[:4]] == ["predicts", "reads", "word", "mixed"]
    assert roles.role[4] == -1 and roles.share[4] == 0.0
    assert (roles.share[:3] >= 0.5).all() and roles.share[3] < 0.5  # 'mixed' keeps its largest share, short of it
    assert roles.lookup(np.array([[2, 1], [2, 9], [0, 1]])).tolist() == [roles.role[1], -1, -1]
    assert roles.as_mapping() == {(2, f): int(roles.role[f]) for f in range(4)}


def test_a_feature_predicting_a_class_from_one_word_has_a_role_of_its_own() -> None:
    """Feature 5 predicts days only where it reads w27 (a say-a-day feature of one position): its role names the
    word and differs from feature 0's (predicts days after any token); predicts_on_word=False merges them."""
    d = _planted()
    A = d["A"].toarray()
    on_27 = (d["tokens"] == 27) & np.isin(d["next_tokens"], DAYS)  # (n_rows,)
    d["A"] = sp.csr_matrix(np.c_[A, on_27 * 1.0])
    d["keys"] = np.stack([np.full(6, 2), np.arange(6)], 1)
    roles = _roles(d)
    name = roles.describe(2, 5) or ""
    assert name.startswith("predicts w0, w1") and name.endswith("(7 tokens) on 'w27'")
    assert roles.role[5] != roles.role[0] and roles.kinds[roles.role[5]] == "predicts"
    assert not (roles.describe(2, 0) or "").endswith("'w27'")  # feature 0 reads no one word
    merged = _roles(d, RolesConfig(predicts_on_word=False, families=AVERAGE.families))
    assert merged.role[5] == merged.role[0] and merged.describe(2, 5) == roles.describe(2, 0)
    assert roles.predicts_on_word is True and merged.predicts_on_word is False  # the table says how it was read


def test_min_share_decides_between_a_role_and_mixed() -> None:
    d = _planted()
    d["A"] = sp.csr_matrix(np.c_[d["A"].toarray()[:, :2], (d["A"].toarray()[:, 0] + d["A"].toarray()[:, 1])])
    d["keys"] = d["keys"][:3]
    half = _roles(d, RolesConfig(min_share=0.45, families=AVERAGE.families))
    strict = _roles(d, RolesConfig(min_share=0.9, families=AVERAGE.families))
    assert half.describe(2, 2) != "mixed" and strict.describe(2, 2) == "mixed"  # days predicted + months read
    assert (strict.describe(2, 0) or "").startswith("predicts")  # a share of 1 passes any min_share


def test_a_share_of_exactly_one_passes_min_share_one() -> None:
    roles = _roles(_planted(), RolesConfig(min_share=1.0, families=AVERAGE.families))
    assert roles.describe(2, 2) == "reads 'w27'" and (roles.describe(2, 0) or "").startswith("predicts")


def test_roles_do_not_depend_on_the_order_of_the_features() -> None:
    d = _planted()
    perm = np.array([3, 0, 4, 2, 1])
    moved = dict(d, A=d["A"][:, perm], keys=d["keys"][perm])
    a, b = _roles(d), _roles(moved)
    assert a.names == b.names
    assert [a.describe(2, f) for f in range(5)] == [b.describe(2, f) for f in range(5)]


def test_roles_save_and_load_and_a_damaged_table_is_refused(tmp_path) -> None:
    roles = _roles(_planted())
    back = load_result(save_result(roles, tmp_path / "roles.json"), FeatureRoles)
    assert back.names == roles.names and back.role.tolist() == roles.role.tolist()
    assert back.predicts_on_word is True and back.min_share == roles.min_share
    with pytest.raises(ValueError, match="role must be -1 or an index into its"):
        FeatureRoles(keys=roles.keys, role=roles.role + 10, share=roles.share, names=roles.names, kinds=roles.kinds)
    with pytest.raises(ValueError, match="kinds must be one of"):
        FeatureRoles(keys=roles.keys, role=roles.role, share=roles.share, names=roles.names,
                     kinds=("reads",) * len(roles.names[:-1]))


@pytest.mark.parametrize("change, match", [
    ({"keys": np.zeros((4, 2), np.int64)}, r"keys must be integers of shape \(5, 2\)"),
    ({"keys": np.zeros((5, 2))}, r"keys must be integers of shape \(5, 2\)"),
    ({"tokens": np.zeros(3, np.int64)}, "tokens must have one entry per row of activations"),
    ({"tokens": np.full(3000, 30)}, r"tokens must be token ids in \[0, 30\)"),
    ({"next_tokens": np.full(3000, -2)}, r"next_tokens must be token ids in \[-1, 30\)"),
    ({"tokens": None, "next_tokens": None, "token_vectors": None}, "tokens, next_tokens and token_vectors must be"),
    ({"token_vectors": np.full((30, 4), np.nan)}, "token_vectors must be finite"),
    ({"A": sp.csr_matrix(-np.ones((3000, 5)))}, "A must hold finite, non-negative activations"),
    ({"words": WORDS[:3]}, "token_words must hold one text per row of token_vectors"),
])
def test_bad_inputs_are_one_clear_error(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _roles({**_planted(), **change})


@pytest.mark.parametrize("kwargs, error, match", [
    ({"min_share": 0.0}, ValueError, "min_share must be > 0"),
    ({"min_share": 1.5}, ValueError, "min_share must be a number in"),
    ({"families": {}}, TypeError, "families must be a FamiliesConfig"),
    ({"predicts_on_word": 1}, TypeError, "predicts_on_word must be True or False"),
])
def test_bad_config_is_refused(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        RolesConfig(**kwargs)


def test_row_tokens_pairs_each_row_with_the_next_in_its_prompt_and_drops_bos_rows() -> None:
    prompt, pos, token = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 0, 1]), np.array([9, 4, 5, 9, 6])
    tokens, nxt = row_tokens(prompt, pos, token)
    assert tokens.tolist() == [4, 5, 6] and nxt.tolist() == [5, -1, -1]


def test_row_tokens_refuse_a_position_given_twice() -> None:
    with pytest.raises(ValueError, match="each \\(prompt, position\\) once; got prompt 0, position 1 more than once"):
        row_tokens(np.array([0, 0, 0, 0]), np.array([0, 1, 1, 2]), np.array([9, 5, 5, 6]))


def test_row_tokens_pairs_by_position_whatever_the_row_order_and_gaps() -> None:
    """Rows shuffled, and a prompt whose position 2 is missing: the next token is the one at the next position
    of the same prompt, never a neighbouring row of another prompt or across the gap."""
    prompt, pos, token = np.array([1, 0, 1, 0, 0, 1]), np.array([1, 2, 0, 0, 1, 3]), np.array([6, 5, 9, 9, 4, 7])
    tokens, nxt = row_tokens(prompt, pos, token)
    assert tokens.tolist() == [6, 5, 4, 7] and nxt.tolist() == [-1, -1, 5, -1]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.2, 1.0))
def test_every_role_holds_its_share_and_mixed_features_hold_none(seed: int, min_share: float) -> None:
    rng = np.random.default_rng(seed)
    n_rows, n_features = 400, 6
    tokens = rng.integers(0, 30, n_rows)
    nxt = np.append(tokens[1:], -1)
    A = sp.csr_matrix(rng.random((n_rows, n_features)) * (rng.random((n_rows, n_features)) < 0.2))
    d = {"A": A, "keys": np.stack([np.zeros(n_features, np.int64), np.arange(n_features)], 1), "tokens": tokens,
         "next_tokens": nxt, "token_vectors": _planted()["token_vectors"]}
    roles = _roles(d, RolesConfig(min_share=min_share, families=AVERAGE.families))
    E = A.multiply(A).toarray()  # (n_rows, n_features)
    for f in range(n_features):
        r = roles.role[f]
        if E[:, f].sum() == 0:
            assert r == -1
            continue
        word_share = max(E[tokens == t, f].sum() for t in range(30)) / E[:, f].sum()
        if roles.kinds[r] == "mixed":
            assert word_share < min_share and roles.share[f] < min_share
        else:
            assert roles.share[f] >= min_share - 1e-9
        if roles.kinds[r] == "word":
            assert roles.share[f] == pytest.approx(word_share)


# ----------------------------------------------------------------------------- the clustering's constraint
def _split_roles(graph, truth: np.ndarray) -> FeatureRoles:
    """Roles that split planted unit 0 in two (its first member's (layer, feature) alone) and leave every other
    feature without one."""
    keys = graph.active_features.numpy()[:, [0, 2]]  # (n_active, 2)
    unit0 = np.flatnonzero(truth[:len(keys)] == 0)
    table = {tuple(map(int, keys[i])): 1 for i in unit0}
    table[tuple(map(int, keys[unit0[0]]))] = 0
    others = {tuple(map(int, k)) for i, k in enumerate(keys) if truth[i] != 0}
    assert not others & table.keys()  # a key of unit 0 is nowhere else: the roles split only unit 0
    uniq = np.unique(keys, axis=0)  # (n_keys, 2) each (layer, feature) once
    role = np.array([table.get(tuple(map(int, k)), -1) for k in uniq], dtype=np.int64)
    return FeatureRoles(keys=uniq.astype(np.int64), role=role, share=np.ones(len(uniq)),
                        names=("reads 'a'", "reads 'b'"), kinds=("word", "word"))


def test_features_of_different_roles_never_share_a_group_and_roles_name_the_groups() -> None:
    graph, truth = planted_graph(0)
    mask = torch.ones(graph.n_nodes, dtype=torch.bool)
    free = SupernodeClustering().fit(graph, node_mask=mask)
    roles = _split_roles(graph, truth)
    unit0 = np.flatnonzero(truth[free.candidates_] == 0)
    assert len({int(free.labels_[i]) for i in unit0}) == 1  # without roles, unit 0 is one group
    split = SupernodeClustering().fit(graph, node_mask=mask, roles=roles)
    assert split.labels_[unit0[0]] not in {int(split.labels_[i]) for i in unit0[1:]}
    assert len({int(split.labels_[i]) for i in unit0[1:]}) == 1  # the rest stays together
    assert split.cannot_link_[unit0[0], unit0[1]] and not split.cannot_link_[unit0[1], unit0[2]]
    assert split.group_labels_[int(split.labels_[unit0[1]])] == "reads 'b'"  # no labels: the role names it
    others = np.flatnonzero(truth[free.candidates_] != 0)  # no role: unconstrained, the same groups as before
    assert np.array_equal(free.cannot_link_[np.ix_(others, others)], split.cannot_link_[np.ix_(others, others)])
    assert split.roles_used_ and not free.roles_used_
    off = SupernodeClustering(role_constraint=False).fit(graph, node_mask=mask, roles=roles)
    assert len({int(off.labels_[i]) for i in unit0}) == 1 and not off.roles_used_
    with pytest.raises(TypeError, match="roles must be an analyses.families.roles.FeatureRoles"):
        SupernodeClustering().fit(graph, node_mask=mask, roles={(0, 0): 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="role_constraint must be a bool"):
        SupernodeClustering(role_constraint="yes").fit(graph, node_mask=mask)  # type: ignore[arg-type]


def test_roles_of_another_transcoder_kind_are_refused_and_roles_of_no_candidate_warn(caplog) -> None:
    import dataclasses
    import logging

    graph, truth = planted_graph(0)
    mask = torch.ones(graph.n_nodes, dtype=torch.bool)
    roles = _split_roles(graph, truth)
    graph.extra["transcoder_kind"] = "plt"
    with pytest.raises(ValueError, match=r"roles must come from the graph's kind of transcoders \(plt\); got"):
        SupernodeClustering().fit(graph, node_mask=mask, roles=dataclasses.replace(roles, transcoder_kind="clt"))
    SupernodeClustering().fit(graph, node_mask=mask, roles=dataclasses.replace(roles, transcoder_kind="plt"))
    elsewhere = dataclasses.replace(roles, keys=roles.keys + np.array([[50, 0]]))  # layers the graph does not have
    with caplog.at_level(logging.WARNING, logger="analyses.supernodes.clustering"):
        est = SupernodeClustering().fit(graph, node_mask=mask, roles=elsewhere)
    assert "roles name none of the graph's" in caplog.text and not est.roles_used_
    free = SupernodeClustering().fit(graph, node_mask=mask)
    assert np.array_equal(est.labels_, free.labels_)  # no role: no constraint


def _table(**change) -> FeatureRoles:
    base = {"keys": np.array([[0, 5], [2, 0], [1, 7]]), "role": np.array([0, 1, -1]),
            "share": np.array([0.9, 0.4, 0.0]), "names": ("reads 'is'", "mixed"), "kinds": ("word", "mixed")}
    return FeatureRoles(**{**base, **change})


def test_lookup_takes_layer_feature_pairs_of_any_integer_width_and_refuses_other_shapes() -> None:
    for dtype in (np.int64, np.int32, np.uint32):
        table = _table(keys=np.array([[0, 5], [2, 0], [1, 7]], dtype=dtype))
        assert table.lookup(np.array([[1, 7], [0, 5], [9, 9]], dtype=dtype)).tolist() == [-1, 0, -1]
        assert table.names_of(np.array([[2, 0]])) == ["mixed"]
    with pytest.raises(ValueError, match=r"keys must be integers of shape \(n, 2\)"):
        _table().lookup(np.array([[0, 2, 5]]))  # (layer, pos, feature) rows: pass keys[:, [0, 2]]
    assert _table(keys=np.zeros((0, 2), np.int64), role=np.zeros(0, np.int64), share=np.zeros(0)).lookup(
        np.array([[0, 5]])).tolist() == [-1]


@pytest.mark.parametrize("change, match", [
    ({"keys": np.array([[0, 5], [0, 5], [1, 7]])}, r"keys must name each \(layer, feature\) once; got \(0, 5\)"),
    ({"min_share": 5.0}, "min_share must be a number in"),
    ({"share": np.array([0.9, float("nan"), 0.0])}, "share must be finite shares in"),
    ({"share": np.array([0.9, 1.5, 0.0])}, "share must be finite shares in"),
    ({"names": ("mixed", "mixed")}, "names must be 'mixed' exactly where the kind is 'mixed'"),
    ({"kinds": ("word", "context")}, r"kinds must be one of .*; got 'context'"),
    ({"role": np.array([0, 2, -1])}, "role must be -1 or an index into its 2 names"),
])
def test_an_inconsistent_table_is_refused(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _table(**change)


def test_a_feature_reading_and_predicting_one_class_alike_reads_it_as_its_family_does() -> None:
    d = _planted()
    both = np.isin(d["tokens"], DAYS) & np.isin(d["next_tokens"], DAYS)  # a day followed by a day
    d["A"] = sp.csr_matrix(np.c_[d["A"].toarray(), both * 1.0])
    d["keys"] = np.stack([np.full(6, 2), np.arange(6)], 1)
    roles = _roles(d)
    assert (roles.describe(2, 5) or "").startswith("reads w0") and roles.share[5] == pytest.approx(1.0)


def _named_table(names: Sequence[str | None], feature: np.ndarray | None = None,
                 kind: str | None = None) -> FeatureRoles:
    """A role table of layer-0 features named ``names`` (None: no role), each feature's role numbered by name."""
    named = sorted({n for n in names if n is not None})
    role = np.array([named.index(n) if n is not None else -1 for n in names], dtype=np.int64)
    keys = np.stack([np.zeros(len(names), np.int64), np.arange(len(names)) if feature is None else feature], 1)
    return FeatureRoles(keys=keys, role=role, share=np.where(role >= 0, 0.6, 0.0), names=tuple(named),
                        kinds=tuple("mixed" if n == "mixed" else "word" for n in named), transcoder_kind=kind)


def test_role_agreement_compares_roles_by_name_and_lists_the_changes() -> None:
    a = _named_table(["reads 'is'", "reads 'is'", "mixed", None, "reads 'of'"])
    b = _named_table(["reads 'is'", "mixed", "mixed", None, None])  # numbered otherwise: names decide
    got = role_agreement(a, b)
    assert got.n_features == 4  # feature 3 has a role in neither table
    assert got.agreement == pytest.approx(2 / 4)
    assert got.changes == (("reads 'is'", "mixed", 1), ("reads 'of'", None, 1))
    assert got.matched_agreement == pytest.approx(2 / 4)  # 'of' has no role in b: it never corresponds
    assert got.as_dict()["changes"][0] == {"from": "reads 'is'", "to": "mixed", "n": 1}
    assert role_agreement(a, a).agreement == 1.0 and role_agreement(a, a).changes == ()
    # a feature only one table holds counts as a change (the other sample never saw it fire)
    c = _named_table(["reads 'is'"], feature=np.array([7]))
    assert role_agreement(a, c).n_features == 5 and role_agreement(a, c).agreement == 0.0
    assert np.isnan(role_agreement(_named_table([None]), _named_table([None])).agreement)


def test_a_role_renamed_with_its_features_kept_together_agrees_once_matched() -> None:
    """A token class that gains a token renames its role for every feature in it: the names disagree, the
    matching of the two tables' roles does not."""
    a = _named_table(["reads a, b (2 tokens)"] * 3 + ["mixed", "mixed", "reads 'is'"])
    b = _named_table(["reads a, b, c (3 tokens)"] * 3 + ["mixed", "reads 'is'", "reads 'is'"])
    got = role_agreement(a, b)
    assert got.agreement == pytest.approx(2 / 6) and got.matched_agreement == pytest.approx(5 / 6)
    assert got.changes[0] == ("reads a, b (2 tokens)", "reads a, b, c (3 tokens)", 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), min_size=1, max_size=40))
def test_matched_agreement_is_the_hungarian_optimum(pairs: list) -> None:
    """The sparse matching equals the dense Hungarian assignment on the contingency table."""
    from scipy.optimize import linear_sum_assignment

    a = _named_table([f"a{x}" for x, _ in pairs])
    b = _named_table([f"b{y}" for _, y in pairs])
    counts = np.zeros((6, 7))
    for x, y in pairs:
        counts[x, y] += 1
    rows, cols = linear_sum_assignment(counts, maximize=True)
    assert role_agreement(a, b).matched_agreement == pytest.approx(counts[rows, cols].sum() / len(pairs))


def test_role_agreement_refuses_tables_of_two_transcoder_kinds() -> None:
    with pytest.raises(ValueError, match="same transcoders to compare; got kinds 'plt' and 'clt'"):
        role_agreement(_named_table(["mixed"], kind="plt"), _named_table(["mixed"], kind="clt"))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([None, "mixed", "reads 'a'", "reads 'b'"]), min_size=1, max_size=12),
       st.lists(st.sampled_from([None, "mixed", "reads 'a'", "reads 'b'"]), min_size=1, max_size=12))
def test_role_agreement_is_symmetric_and_a_share(x: list, y: list) -> None:
    n = min(len(x), len(y))
    a, b = _named_table(x[:n]), _named_table(y[:n])
    ab, ba = role_agreement(a, b, top=100), role_agreement(b, a, top=100)
    assert ab.n_features == ba.n_features == sum(p is not None or q is not None for p, q in zip(x[:n], y[:n]))
    if ab.n_features:
        assert ab.agreement == ba.agreement and 0.0 <= ab.agreement <= 1.0
        assert ab.matched_agreement == pytest.approx(ba.matched_agreement)
        assert ab.agreement - 1e-12 <= ab.matched_agreement <= 1.0  # matching names is one matching
        assert sum(c[2] for c in ab.changes) == round((1 - ab.agreement) * ab.n_features)
        assert sorted(((q, p, k) for p, q, k in ab.changes), key=str) == sorted(ba.changes, key=str)


def test_split_half_agreement_reads_roles_on_even_and_odd_prompts() -> None:
    """Prompts of 10 rows: the planted roles are clear in both halves (agreement 1); a feature that reads w27 in
    even prompts but reads the three fillers alike in odd ones ('mixed' there) is the one change."""
    d = _planted()
    prompt = np.arange(3000) // 10  # (n_rows,)
    half = dict(prompt=prompt, tokens=d["tokens"], next_tokens=d["next_tokens"], token_vectors=d["token_vectors"],
                token_words=WORDS, config=AVERAGE)
    steady = split_half_agreement(d["A"], d["keys"], **half)
    assert steady.n_features == 4 and steady.agreement == 1.0
    A = d["A"].toarray()
    odd = prompt % 2 == 1  # (n_rows,)
    A[odd, 2] = np.isin(d["tokens"][odd], FILLER)  # odd prompts: feature 2 reads w27, w28, w29 alike
    moved = split_half_agreement(sp.csr_matrix(A), d["keys"], **half)
    assert moved.agreement == pytest.approx(3 / 4) and moved.changes == (("reads 'w27'", "mixed", 1),)
    with pytest.raises(ValueError, match="needs prompts of both parities"):
        split_half_agreement(d["A"], d["keys"], **{**half, "prompt": np.zeros(3000, np.int64)})
    with pytest.raises(ValueError, match=r"prompt must be integers of shape \(3000,\)"):
        split_half_agreement(d["A"], d["keys"], **{**half, "prompt": prompt[:5]})

"""The estimator contract, saveable results and displays shared by every analysis."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from analyses.base import Estimator, NotFittedError, as_integers, check_number, clone
from analyses.display import Display
from analyses.results import load_result, register_result, save_result


class _Toy(Estimator):
    def __init__(self, *, k: int = 3, name: str = "x") -> None:
        self.k = k
        self.name = name

    def _validate_params(self) -> None:
        check_number("k", self.k, lo=1, integer=True)

    def fit(self, X: np.ndarray) -> "_Toy":
        self._validate_params()
        self.mean_ = X.mean(0)
        return self


@register_result
@dataclasses.dataclass(frozen=True)
class _Leaf:
    SCHEMA_VERSION = 1
    values: np.ndarray
    label: str
    span: tuple[int, int] = (0, 0)


@register_result
@dataclasses.dataclass(frozen=True)
class _Tree:
    SCHEMA_VERSION = 2
    leaves: list
    by_name: dict
    score: float


def test_estimator_contract():
    est = _Toy(k=4)
    assert est.get_params() == {"k": 4, "name": "x"}
    assert est.set_params(name="y") is est and est.name == "y"
    with pytest.raises(ValueError, match="parameter must be one of"):
        est.set_params(bogus=1)
    with pytest.raises(NotFittedError, match="fitted"):
        est._check_fitted("mean_")
    with pytest.raises(NotFittedError, match=r"_Toy must be fitted before use; got no 'mean_'. Call fit\(\) first."):
        est.mean_  # noqa: B018 - reading a fitted attribute before fit
    assert not hasattr(est, "mean_") and getattr(est, "mean_", None) is None  # still an AttributeError
    with pytest.raises(AttributeError, match="has no attribute 'bogus'") as info:
        est.bogus  # type: ignore[attr-defined]  # noqa: B018 - the type checker catches it too
    assert not isinstance(info.value, NotFittedError)
    assert est.fit(np.ones((3, 2))) is est
    est._check_fitted("mean_")
    fresh = clone(est)
    assert fresh.get_params() == est.get_params() and not hasattr(fresh, "mean_")
    assert repr(_Toy(k=5)) == "_Toy(k=5)"
    with pytest.raises(ValueError, match="k must be an integer >= 1; got 0"):
        _Toy(k=0).fit(np.ones((2, 2)))
    with pytest.raises(TypeError, match="k must be an integer"):
        _Toy(k=True).fit(np.ones((2, 2)))


def test_sklearn_check_is_fitted():
    """scikit-learn's own fitted check works on our estimators (it asked for BaseEstimator's tags)."""
    from sklearn.exceptions import NotFittedError as SkNotFitted
    from sklearn.utils.validation import check_is_fitted

    from analyses.families import FeatureFamilies

    for est, X in ((_Toy(), np.ones((3, 2))), (FeatureFamilies(), np.random.default_rng(0).normal(size=(12, 4)))):
        with pytest.raises(SkNotFitted):
            check_is_fitted(est)
        est.fit(X)
        check_is_fitted(est)
        with pytest.raises(SkNotFitted):
            check_is_fitted(clone(est))


@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(0, 4), st.integers(1, 3)),
              elements=st.floats(-1e6, 1e6, width=32)),
       st.text(max_size=20), st.floats(allow_nan=False))
def test_result_round_trip_is_exact(tmp_path_factory, values, label, score):
    tree = _Tree(leaves=[_Leaf(values=values, label=label, span=(1, 2))],
                 by_name={"a": _Leaf(values=values.astype(np.float64), label="b")}, score=score)
    path = tmp_path_factory.mktemp("r") / "tree.json"
    save_result(tree, path)
    back = load_result(path, _Tree)
    assert back.score == score and back.leaves[0].label == label and back.leaves[0].span == (1, 2)
    assert back.leaves[0].values.dtype == values.dtype
    np.testing.assert_array_equal(back.leaves[0].values, values)
    np.testing.assert_array_equal(back.by_name["a"].values, values.astype(np.float64))


def test_result_errors(tmp_path):
    path = tmp_path / "t.json"
    save_result(_Tree(leaves=[], by_name={}, score=1.0), path)
    with pytest.raises(ValueError, match="result type must be _Leaf"):
        load_result(path, _Leaf)
    path.write_text(path.read_text().replace('"schema_version": 2', '"schema_version": 1'))
    with pytest.raises(ValueError, match="schema_version must be 2"):
        load_result(path)
    with pytest.raises(ValueError, match="must end in .json"):
        save_result(_Tree(leaves=[], by_name={}, score=1.0), tmp_path / "t.txt")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="readable JSON"):
        load_result(tmp_path / "bad.json")


class _LineDisplay(Display):
    def __init__(self, y: np.ndarray) -> None:
        self.y = y

    def _draw(self, ax, **kwargs) -> None:
        ax.plot(self.y, **kwargs)


def test_display_plots_without_pyplot(tmp_path):
    disp = _LineDisplay(np.arange(4.0)).plot()
    assert disp.ax_.lines and disp.figure_ is disp.ax_.figure
    out = disp.savefig(tmp_path / "line.svg")
    assert out.read_text().lstrip().startswith("<?xml")


def test_from_config_takes_a_configs_fields_and_overrides():
    from analyses.manifolds.configs import DiscoveryConfig, IrreducibilityConfig
    from analyses.manifolds.discovery import ManifoldDiscovery

    @dataclasses.dataclass(frozen=True)
    class ToyConfig:
        k: int = 5
        name: str = "y"

    est = _Toy.from_config(ToyConfig(), name="z")
    assert (est.k, est.name) == (5, "z")
    nested = ManifoldDiscovery.from_config(DiscoveryConfig(seed=3))
    assert nested.seed == 3 and isinstance(nested.irreducibility, IrreducibilityConfig)  # not turned into a dict


# ----------------------------------------------------------------------------- edited result files
def _edited_tree(tmp_path, change):
    tree = _Tree(leaves=[_Leaf(values=np.arange(3.0), label="a", span=(1, 2))], by_name={}, score=1.0)
    path = save_result(tree, tmp_path / "tree.json")
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("change, problem", [
    (lambda d: d.update(result=[1, 2]), "must hold a _Tree body; got [1, 2]"),
    (lambda d: d.pop("result"), "must hold a _Tree body; got None"),
    (lambda d: d["result"].update(__type__="_Leaf"), "must hold a _Tree body; got '_Leaf'"),  # another type's body
    (lambda d: d["result"].update(bogus=1), "field 'bogus' at result, which a _Tree does not have"),
    (lambda d: d["result"].pop("score"), "no field 'score' at result"),
    (lambda d: d["result"]["leaves"][0].update(values={"__array__": "nope"}),
     "array key 'nope' at result.leaves.0.values, which the arrays file does not hold"),
    (lambda d: d["result"].update(score="abc"), "'abc' at result.score, which is not a float"),
    (lambda d: d["result"].update(score={"__float__": "lots"}), "'lots' at result.score, which is not a float"),
    (lambda d: d["result"]["leaves"][0].update(span=["x", 2]), "('x', 2) at result.leaves.0.span"),
    (lambda d: d["result"]["leaves"][0].update(label=None), "None at result.leaves.0.label, which is not a str"),
])
def test_load_result_refuses_an_edited_file_in_one_value_error(tmp_path, change, problem):
    """Each of these once came back as the wrong object or as a bare KeyError / TypeError."""
    path = _edited_tree(tmp_path, change)
    with pytest.raises(ValueError) as info:
        load_result(path, _Tree)
    assert type(info.value) is ValueError and str(path) in str(info.value) and problem in str(info.value)


# ----------------------------------------------------------------------------- nested parameters
class _Outer(Estimator):
    def __init__(self, *, inner: _Toy | None = None, scale: float = 1.0) -> None:
        self.inner = inner
        self.scale = scale


def test_nested_params_follow_scikit_learn():
    inner = _Toy(k=2)
    est = _Outer(inner=inner)
    assert est.get_params(deep=False) == {"inner": inner, "scale": 1.0}
    assert est.get_params() == {"inner__k": 2, "inner__name": "x", "inner": inner, "scale": 1.0}
    assert est.set_params(inner__k=5, scale=2.0) is est and (inner.k, est.scale) == (5, 2.0)
    fresh = _Toy()
    est.set_params(inner__name="z", inner=fresh)  # plain parameters first: the nested one reaches the new inner
    assert est.inner is fresh and fresh.name == "z" and inner.name == "x"
    with pytest.raises(ValueError, match="parameter must be one of"):
        est.set_params(scale=3.0, outer__k=1)
    assert est.scale == 2.0  # an unknown name sets nothing
    with pytest.raises(ValueError, match="parameter must be one of"):
        est.set_params(inner__bogus=1)
    with pytest.raises(ValueError, match=r"inner must be an estimator to set \['k'\] on it; got None"):
        _Outer().set_params(inner__k=1)
    copy = clone(est)
    assert copy.inner is not est.inner and copy.get_params().keys() == est.get_params().keys()
    assert repr(copy) == repr(est) == "_Outer(inner=_Toy(name='z'), scale=2.0)"


def _estimators() -> list[Estimator]:
    from analyses.families import FeatureFamilies
    from analyses.manifolds.configs import IrreducibilityConfig
    from analyses.manifolds.discovery import ManifoldDiscovery
    from analyses.manifolds.fit import ManifoldFit
    from analyses.supernodes.circuit import ReadableCircuit
    from analyses.supernodes.clustering import SupernodeClustering

    return [ManifoldFit(period=7, n_harmonics=2),
            ManifoldDiscovery(seed=3, irreducibility=IrreducibilityConfig(bins=4)), FeatureFamilies(n_neighbors=5),
            SupernodeClustering(min_affinity=0.4, similarities=("edge", "label")),
            ReadableCircuit(budget=3, clustering=SupernodeClustering(max_group_size=2))]


@pytest.mark.parametrize("est", _estimators(), ids=lambda e: type(e).__name__)
def test_sklearn_clone_and_ours_copy_every_estimator(est):
    from sklearn.base import clone as sk_clone

    for copy in (sk_clone(est), clone(est)):
        assert type(copy) is type(est) and repr(copy) == repr(est)
        assert copy.get_params().keys() == est.get_params().keys()
        for name, value in est.get_params(deep=False).items():
            if isinstance(value, Estimator):  # a nested estimator is a fresh copy, not shared
                assert getattr(copy, name) is not value and repr(getattr(copy, name)) == repr(value)


def test_as_integers_refuses_what_it_would_truncate():
    assert as_integers("x", [1, 2.0, np.int32(3)]).tolist() == [1, 2, 3]
    assert as_integers("x", np.zeros(0)).dtype == np.int64
    for bad in ([0.5, 1.7], [1, float("nan")], ["1"], [True, False], [[1], [2, 3]]):
        with pytest.raises(TypeError, match="x must hold integers"):
            as_integers("x", bad)


def test_a_forged_array_of_the_wrong_kind_is_refused_on_load(tmp_path) -> None:
    """A results file whose arrays were rewritten (and its digest re-forged) loaded float feature indices;
    index and boolean arrays must hold their kind of number."""
    import hashlib

    from safetensors.numpy import load, save

    from analyses.families import FeatureFamilies
    from analyses.families.results import FeatureFamiliesResult

    est = FeatureFamilies().fit(np.random.default_rng(0).normal(size=(12, 4)))
    path = save_result(est.result_, tmp_path / "fam.json")
    assert load_result(path, FeatureFamiliesResult).feature.tolist() == list(range(12))
    arr_path = path.with_suffix(".safetensors")
    arrays = load(arr_path.read_bytes())
    key = next(k for k in arrays if k.endswith("feature"))
    arrays[key] = arrays[key].astype(np.float64)
    data = save(arrays)
    arr_path.write_bytes(data)
    doc = json.loads(path.read_text())
    doc["arrays_sha256"] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="FeatureFamiliesResult feature must hold integer values; got dtype float64"):
        load_result(path, FeatureFamiliesResult)

"""The estimator contract, saveable results and displays shared by every analysis."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from analyses.base import Estimator, NotFittedError, check_number, clone
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
    assert est.fit(np.ones((3, 2))) is est
    est._check_fitted("mean_")
    fresh = clone(est)
    assert fresh.get_params() == est.get_params() and not hasattr(fresh, "mean_")
    assert repr(_Toy(k=5)) == "_Toy(k=5)"
    with pytest.raises(ValueError, match="k must be an integer in"):
        _Toy(k=0).fit(np.ones((2, 2)))
    with pytest.raises(TypeError, match="k must be an integer"):
        _Toy(k=True).fit(np.ones((2, 2)))


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

"""QA pass 20, families: context_self of the wrong length or out of range, search(min_share) outside
[0, 1] and neighbors() naming what it was given."""

import numpy as np
import pytest

from analyses.families import FeatureFamilies
from analyses.families.coactivation import CoactivationContext


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.vstack([c + 0.3 * rng.standard_normal((6, 12)) for c in rng.standard_normal((3, 12))])  # (18, 12)
    A = np.abs(rng.standard_normal((40, 18)))
    C = np.abs(rng.standard_normal((40, 7)))
    return X, A, C


def test_context_self_of_the_wrong_length_or_range_is_refused(data: tuple[np.ndarray, ...]) -> None:
    """Both were raw IndexErrors (estimator.py and coactivation.py)."""
    X, A, C = data
    with pytest.raises(ValueError, match=r"context_self must have one entry per feature \(18,\); got shape \(2,\)"):
        FeatureFamilies().fit(X, activations=A, context=C, context_self=[0, 1])
    with pytest.raises(ValueError, match=r"context_self must hold context columns in \[-1, 7\).*got 99 at feature 0"):
        FeatureFamilies().fit(X, activations=A, context=C, context_self=[99] * 18)
    with pytest.raises(ValueError, match=r"got -2 at feature 3"):
        FeatureFamilies().fit(X, activations=A, context=C, context_self=[-1, 0, 1, -2] + [-1] * 14)
    with pytest.raises(TypeError, match="context_self must hold integers"):
        FeatureFamilies().fit(X, activations=A, context=C, context_self=[0.5] * 18)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="context_self must come with activations"):
        FeatureFamilies().fit(X, context_self=[0] * 18)
    FeatureFamilies().fit(X, activations=A, context=C, context_self=np.arange(18) % 7)  # in range: fine


def test_profiles_check_their_self_columns() -> None:
    ctx = CoactivationContext.from_activations(np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"self_column must hold context columns in \[-1, 3\) \(-1: none\); got 3 "
                                         r"at feature 1"):
        ctx.profiles(np.ones((5, 2)), np.array([0, 3]))
    with pytest.raises(ValueError, match="dim must be an integer >= 1; got 0"):
        CoactivationContext.from_activations(np.ones((5, 3)), dim=0)


@pytest.mark.parametrize("min_share", [-1, float("nan"), 1.5])
def test_search_refuses_a_share_outside_the_unit_interval(data: tuple[np.ndarray, ...], min_share: float) -> None:
    """min_share=-1 or NaN returned every family or none without a word."""
    X, _, _ = data
    est = FeatureFamilies(n_neighbors=3).fit(X, labels=["day"] * 18)
    assert est.search("day")
    with pytest.raises(ValueError, match="min_share must be a"):
        est.search("day", min_share=min_share)


def test_neighbors_names_the_given_values_with_their_type(data: tuple[np.ndarray, ...]) -> None:
    """neighbors("0", "0") said "got (0, 0)", which looked like a fitted feature."""
    X, _, _ = data
    est = FeatureFamilies(n_neighbors=3).fit(X)
    with pytest.raises(ValueError, match=r"must be a fitted feature; got \('0', '0'\)"):
        est.neighbors("0", "0")  # type: ignore[arg-type]

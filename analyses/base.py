"""The estimator contract shared by every analysis (scikit-learn's, without inheriting from it).

* ``__init__`` takes keyword-only parameters and stores them unchanged under the same names;
* ``fit(...)`` validates the parameters (:meth:`Estimator._validate_params`), learns, sets
  attributes whose names end in ``_`` and returns ``self``;
* :meth:`Estimator.get_params` / :meth:`Estimator.set_params` / :func:`clone` work from the
  ``__init__`` signature;
* using a fitted attribute before ``fit`` raises :class:`NotFittedError`.
"""

import dataclasses
import inspect
from typing import Any, TypeVar

_E = TypeVar("_E", bound="Estimator")


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit``."""


class Estimator:
    """Base class: parameter bookkeeping, repr and the not-fitted check."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The ``__init__`` parameters as stored (``deep`` is accepted for scikit-learn compatibility)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self: _E, **params: Any) -> _E:
        """Set ``__init__`` parameters; unknown names are an error that lists the valid ones."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"parameter must be one of {valid}; got {name!r} for {type(self).__name__}.")
            setattr(self, name, value)
        return self

    @classmethod
    def from_config(cls: type[_E], config: Any, **overrides: Any) -> _E:
        """An estimator whose parameters are the fields of the frozen dataclass `config` (a nested
        config stays a config), with `overrides` replacing some of them."""
        params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        return cls(**{**params, **overrides})

    def _validate_params(self) -> None:
        """Raise ``ValueError`` / ``TypeError`` for invalid parameters (called at the start of ``fit``)."""

    def _check_fitted(self, *attrs: str) -> None:
        missing = [a for a in attrs if not hasattr(self, a)]
        if missing:
            raise NotFittedError(f"{type(self).__name__} must be fitted before use; got no {missing[0]!r}. "
                                 "Call fit() first.")

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k, inspect.Parameter.empty) != v]
        return f"{type(self).__name__}({', '.join(shown)})"


def clone(estimator: _E) -> _E:
    """A new, unfitted estimator with the same parameters."""
    return type(estimator)(**estimator.get_params())


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}.")


def check_number(name: str, value: object, *, lo: float | None = None, hi: float | None = None,
                 integer: bool = False, lo_open: bool = False, hi_open: bool = False) -> None:
    """``value`` must be a (finite) number in the given range; bools are refused."""
    kind = "an integer" if integer else "a number"
    wrong_kind = integer and not isinstance(value, int)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or wrong_kind or value != value:  # NaN != NaN
        raise TypeError(f"{name} must be {kind}; got {value!r}.")
    v = float(value)
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(f"{name} must be {kind} in {left}{lo if lo is not None else '-inf'}, "
                         f"{hi if hi is not None else 'inf'}{right}; got {value!r}.")

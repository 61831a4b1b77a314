"""The estimator contract shared by every analysis (scikit-learn's, without inheriting from it).

* ``__init__`` takes keyword-only parameters and stores them unchanged under the same names;
* ``fit(...)`` validates the parameters (:meth:`Estimator._validate_params`), learns, sets
  attributes whose names end in ``_`` and returns ``self``;
* :meth:`Estimator.get_params` / :meth:`Estimator.set_params` / :func:`clone` work from the
  ``__init__`` signature; a parameter whose value is an estimator exposes its own parameters as
  ``<name>__<param>`` (``get_params(deep=True)``, ``set_params(clustering__min_affinity=0.4)``), as
  in scikit-learn, and :func:`sklearn.base.clone` works on every estimator;
* using a fitted attribute before ``fit`` raises :class:`NotFittedError`;
* a ``fit`` that raises leaves the estimator as it was (:func:`atomic_fit`): a refused refit neither
  mixes its state into the previous fit's nor leaves half of it behind.
"""

import dataclasses
import functools
import inspect
import math
import numbers
import reprlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

if TYPE_CHECKING:
    import numpy as np

_E = TypeVar("_E", bound="Estimator")
_P = ParamSpec("_P")
_R = TypeVar("_R")


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
        """The ``__init__`` parameters as stored; with ``deep``, also ``<name>__<param>`` for every
        parameter of a parameter that is itself an estimator (scikit-learn's convention)."""
        out: dict[str, Any] = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and _is_estimator(value):
                out.update((f"{name}__{key}", inner) for key, inner in value.get_params(deep=True).items())
            out[name] = value
        return out

    def set_params(self: _E, **params: Any) -> _E:
        """Set ``__init__`` parameters, and ``<name>__<param>`` parameters of a nested estimator (after
        the plain ones, so ``clustering=..., clustering__cut=...`` sets the new one). An unknown name is
        an error that lists the valid ones, raised before anything is set."""
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key in params:
            name, delim, inner = key.partition("__")
            if name not in valid or (delim and not inner):
                raise ValueError(f"parameter must be one of {valid}; got {key!r} for {type(self).__name__}.")
            if inner:
                nested.setdefault(name, {})[inner] = params[key]
        for name, inner_params in nested.items():  # every check before anything is set
            target = params.get(name, getattr(self, name))
            if not _is_estimator(target):
                raise ValueError(f"{name} must be an estimator to set {sorted(inner_params)} on it; got {target!r}. "
                                 f"Pass {name}=<estimator> first.")
            inner_valid = set(target.get_params(deep=True))
            unknown = sorted(k for k in inner_params if k not in inner_valid)
            if unknown:
                raise ValueError(f"parameter must be one of {sorted(inner_valid)}; got {unknown[0]!r} for "
                                 f"{type(target).__name__} ({name}__{unknown[0]}).")
        for key, value in params.items():
            if "__" not in key:
                setattr(self, key, value)
        for name, inner_params in nested.items():
            getattr(self, name).set_params(**inner_params)
        return self

    @classmethod
    def from_config(cls: type[_E], config: Any, **overrides: Any) -> _E:
        """An estimator whose parameters are the fields of the frozen dataclass `config` (a nested
        config stays a config), with `overrides` replacing some of them."""
        params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        return cls(**{**params, **overrides})

    def _validate_params(self) -> None:
        """Raise ``ValueError`` / ``TypeError`` for invalid parameters (called at the start of ``fit``)."""

    if not TYPE_CHECKING:  # at run time only: the type checker keeps catching misspelt attributes
        def __getattr__(self, name: str) -> Any:
            """Only for names not found: a fitted attribute (``name_``) before ``fit`` is a
            :class:`NotFittedError` (an ``AttributeError`` too, so ``hasattr`` stays False)."""
            if name.endswith("_") and not name.startswith("__"):
                raise NotFittedError(f"{type(self).__name__} must be fitted before use; got no {name!r}. "
                                     "Call fit() first.")
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __sklearn_is_fitted__(self) -> bool:
        """scikit-learn's fitted check (``sklearn.utils.validation.check_is_fitted``): True once ``fit`` has
        set its attributes (a fit that raised leaves none, see :func:`atomic_fit`)."""
        return bool(_fitted_state(self))

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's estimator tags (``check_is_fitted`` reads them from scikit-learn 1.6 on): the
        defaults of an unsupervised estimator that needs a fit. Without them ``check_is_fitted`` raised an
        AttributeError asking for ``BaseEstimator``, which we do not inherit (see the style guide)."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False))

    def _check_fitted(self, *attrs: str) -> None:
        missing = [a for a in attrs if not hasattr(self, a)]
        if missing:
            raise NotFittedError(f"{type(self).__name__} must be fitted before use; got no {missing[0]!r}. "
                                 "Call fit() first.")

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items()
                 if not _equal(defaults.get(k, inspect.Parameter.empty), v)]
        return f"{type(self).__name__}({', '.join(shown)})"


def _equal(a: object, b: object) -> bool:
    """``a == b`` as one bool; False where the comparison is not one (arrays, shapes that do not broadcast)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except (ValueError, TypeError):
        return False


def _fitted_state(est: "Estimator") -> dict[str, Any]:
    """The attributes ``fit`` sets: names ending in ``_`` (not private)."""
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}


def atomic_fit(fit: Callable[Concatenate[_E, _P], _R]) -> Callable[Concatenate[_E, _P], _R]:
    """Decorate an estimator's ``fit`` so that, when it raises, the fitted attributes are the ones it had
    before the call (new ones removed, replaced ones restored). ``fit`` must replace a fitted attribute,
    not mutate the old object in place, for the old one to come back."""
    @functools.wraps(fit)
    def wrapper(self: _E, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        before = _fitted_state(self)
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            for name in _fitted_state(self):
                delattr(self, name)
            vars(self).update(before)
            raise

    return wrapper


def _is_estimator(value: object) -> bool:
    """Whether a parameter value is an estimator (has ``get_params``; a class is not one)."""
    return hasattr(value, "get_params") and not isinstance(value, type)


def clone(estimator: _E) -> _E:
    """A new, unfitted estimator with the same parameters (a nested estimator is cloned too)."""
    params = {name: clone(value) if isinstance(value, Estimator) else value
              for name, value in estimator.get_params(deep=False).items()}
    return type(estimator)(**params)


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}.")


def check_number(name: str, value: object, *, lo: float | None = None, hi: float | None = None,
                 integer: bool = False, lo_open: bool = False, hi_open: bool = False, finite: bool = True) -> None:
    """``value`` must be a real number in the given range: finite unless ``finite=False`` lets ±inf
    through (NaN never passes); with ``integer``, a Python or numpy integer (``np.int64(7)`` passes,
    ``7.0`` does not). Bools are refused either way. The wrong kind is a ``TypeError``, a value out
    of range (or not finite) a ``ValueError``."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise TypeError(f"{name} must be {kind}; got {value!r}.")
    where = _range_text(lo, hi, lo_open=lo_open, hi_open=hi_open)
    v = int(value) if isinstance(value, numbers.Integral) else float(value)  # Python / numpy: exact ints
    if isinstance(v, float) and not math.isfinite(v) and (finite or v != v):  # NaN != NaN
        raise ValueError(f"{name} must be {'a finite number' if finite else 'a number (not NaN)'}{where}; "
                         f"got {value!r}.")
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        raise ValueError(f"{name} must be {kind}{where}; got {value!r}.")


def _range_text(lo: float | None, hi: float | None, *, lo_open: bool, hi_open: bool) -> str:
    """`` in [lo, hi)`` for two bounds, `` >= lo`` / `` < hi`` for one, nothing for none."""
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def as_integers(name: str, value: object) -> "np.ndarray":
    """``value`` as an int64 numpy array; whole floats (``2.0``) pass, anything else (``0.5``, NaN, text,
    bools) is a ``TypeError`` instead of being truncated."""
    import numpy as np  # here: the config modules import this one and stay numpy-free (fast --help)

    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nesting
        raise TypeError(f"{name} must hold integers in a rectangular array; got {reprlib.repr(value)}.") from None
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    whole = np.issubdtype(arr.dtype, np.floating) and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))
    if not whole:
        raise TypeError(f"{name} must hold integers; got {reprlib.repr(arr.ravel().tolist())} (dtype {arr.dtype}).")
    return arr.astype(np.int64)


def as_indices(name: str, value: object, n: int, *, what: str = "hold indices", lo: int = 0, note: str = "",
               item: str = "position") -> "np.ndarray":
    """``value`` as a flat int64 array of indices in ``[lo, n)`` (``lo=-1`` allows -1 for "none"): not
    integers is a ``TypeError`` (:func:`as_integers`); the first index out of range a ``ValueError``
    "<name> must <what> in [lo, n)<note>; got <index> at <item> <i>." (a negative index would wrap)."""
    import numpy as np

    idx = as_integers(name, value).ravel()
    bad = np.flatnonzero((idx < lo) | (idx >= n))
    if bad.size:
        raise ValueError(f"{name} must {what} in [{lo}, {n}){note}; got {int(idx[bad[0]])} at {item} {int(bad[0])}.")
    return idx


def check_real(name: str, arr: "np.ndarray", *, hint: str = "") -> None:
    """``arr`` must hold real numbers (bools, integers, floats: text, complex or objects are a
    ``TypeError``) that are finite (NaN or inf is a ``ValueError`` naming the first one and where, then
    ``hint``)."""
    import numpy as np

    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        at = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        where = f" at index {at[0] if len(at) == 1 else at}" if at else ""
        raise ValueError(f"{name} must be finite; got {float(arr[at])!r}{where}. {hint}".rstrip())

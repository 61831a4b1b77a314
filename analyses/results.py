"""Typed, saveable results: frozen dataclasses written as JSON plus one safetensors file for arrays.

``save_result(result, "out/supernodes.json")`` writes ``out/supernodes.json`` (every field, with
``schema_version`` and the result type) and, when the result holds arrays, ``out/supernodes.safetensors``
(the arrays, referenced from the JSON by key). Both are written atomically (temp file, then
rename), the arrays first; the JSON records the arrays' sha256, so a JSON and an arrays file of two
different saves (an interrupted re-save) are never read as one result. :func:`load_result` reads them
back without unpickling anything.

A result type is a frozen dataclass registered with :func:`register_result`. Its fields may be
JSON values (numbers, strings, bools, None, lists, dicts with string keys), numpy arrays, or other
registered dataclasses (also inside lists and dicts). Each type carries a ``SCHEMA_VERSION``
class attribute; a file written with another version is refused with a clear error.

Loading checks what it reads: an integer ``schema_version``, an arrays file named by a plain file name
(in the JSON's folder, no path), every field present and no other, each value of its annotated type
(``float`` also takes an int; list, tuple and dict items are checked too), arrays that the arrays
file holds, and the type's own ``__post_init__`` (shapes that must agree, see :func:`check_shapes`).
A file that fails any of these (hand-edited or damaged) raises one ``ValueError`` naming the file
and the field.
"""

import dataclasses
import hashlib
import json
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tracer.io import atomic_path, loads_json

_REGISTRY: dict[str, type] = {}
_T = TypeVar("_T")

FORMAT = "manifold-workbench-result"

RESULT_HOMES: dict[str, str] = {
    "CoarseGraph": "analyses.coarse",
    "InterventionCheck": "analyses.supernodes.interventions",
    "CircuitScores": "analyses.supernodes.circuit",
    "CircuitResult": "analyses.supernodes.circuit",
    "SupernodeResult": "analyses.supernodes.clustering",
    "FamilyManifold": "analyses.manifolds.discovery",
    "DiscoveryResult": "analyses.manifolds.discovery",
    "ManifoldFitResult": "analyses.manifolds.fit",
    "CausalResult": "analyses.manifolds.causal",
    "SteeringResult": "analyses.manifolds.causal",
    "TilingResult": "analyses.manifolds.tiling",
    "Family": "analyses.families.results",
    "FeatureFamiliesResult": "analyses.families.results",
    "FeatureRoles": "analyses.families.roles",
}
"""The module that defines each result type of this package, so that :func:`load_result` reads any of them
in a fresh process (the module is imported on first need). The table, never the file, names what is
imported; a test keeps it equal to the registered types."""


def _registered(name: str) -> type | None:
    """The result type registered as ``name``, importing its module (:data:`RESULT_HOMES`) on first need."""
    if name not in _REGISTRY and name in RESULT_HOMES:
        import importlib  # a lazy plug-in load: the result modules import this one

        importlib.import_module(RESULT_HOMES[name])
    return _REGISTRY.get(name)


def register_result(cls: type[_T]) -> type[_T]:
    """Class decorator: make a frozen dataclass saveable (its name must be unique)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"result type must be a dataclass; got {cls!r}.")
    name = cls.__name__
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"result type name must be unique; {name!r} is registered twice.")
    _REGISTRY[name] = cls
    cls.__repr__ = short_repr  # type: ignore[method-assign]  # a summary, not every array
    return cls


def _brief(value: Any) -> str:
    """One field's value in a result's repr: arrays and long containers by their size, results by name."""
    if isinstance(value, np.ndarray):
        return f"array{value.shape} {value.dtype}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return f"{type(value).__name__}(...)"
    if isinstance(value, (list, tuple, dict)) and len(value) > 4:
        return f"{type(value).__name__} of {len(value)}"
    return reprlib.repr(value)


def short_repr(result: Any) -> str:
    """``Name(field=value, ...)`` with arrays as their shapes and long lists as their lengths: a result's
    repr in a notebook (the dataclass default printed every array, tens of thousands of characters)."""
    parts = ", ".join(f"{f.name}={_brief(getattr(result, f.name))}" for f in dataclasses.fields(result)
                      if f.repr)
    return f"{type(result).__name__}({parts})"


def _encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays[key] = np.ascontiguousarray(value)
        return {"__array__": key}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if _REGISTRY.get(name) is not type(value):
            raise TypeError(f"nested result must be a registered dataclass; got {name!r}.")
        fields = {f.name: _encode(getattr(value, f.name), f"{key}.{f.name}", arrays)
                  for f in dataclasses.fields(value)}
        return {"__type__": name, **fields}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"result dict keys must be strings; got {list(value)[:3]!r} at {key!r}.")
        return {k: _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"result field must be JSON data, an array or a registered dataclass; got "
                    f"{type(value).__name__} at {key!r}.")


class _Invalid(ValueError):
    """A problem in a result file's body (``load_result`` adds the file name)."""


def _conforms(value: Any, tp: Any) -> bool:
    """Whether a decoded value fits a field annotation (unknown annotation forms pass)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or isinstance(tp, (str, TypeVar)):
        return True
    if origin in (typing.Union, types.UnionType):  # noqa: TID251 - reading annotations, not writing one
        return any(_conforms(value, a) for a in args)
    if tp is None or tp is type(None):
        return value is None
    if tp in (int, float) and isinstance(value, bool):
        return False
    if tp is float:
        return isinstance(value, (int, float))
    base = origin or tp
    if not isinstance(base, type):
        return True
    if not isinstance(value, base):
        return False
    items: Any = value
    if base is list and args:
        return all(_conforms(v, args[0]) for v in items)
    if base is tuple and len(args) == 2 and args[1] is Ellipsis:
        return all(_conforms(v, args[0]) for v in items)
    if base is tuple and args:
        return len(items) == len(args) and all(_conforms(v, a) for v, a in zip(items, args))
    if base is dict and len(args) == 2:
        return all(_conforms(v, args[1]) for v in items.values())
    return True


def _type_text(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("numpy.", "np.")


def _decode_fields(cls: type, value: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    """The constructor arguments of ``cls`` from its encoded fields, each checked against its annotation."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k != "__type__" and k not in fields]
    if unknown:
        raise _Invalid(f"field {unknown[0]!r} at {where}, which a {cls.__name__} does not have")
    missing = [k for k, f in fields.items() if k not in value and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise _Invalid(f"no field {missing[0]!r} at {where}, which a {cls.__name__} needs")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: leave the values unchecked
        hints = {}
    kwargs = {}
    for name, raw in value.items():
        if name == "__type__":
            continue
        item = _decode(raw, arrays, f"{where}.{name}")
        tp = hints.get(name, fields[name].type)
        if isinstance(item, list) and "tuple" in str(tp):  # JSON has no tuples: restore declared tuple fields
            item = tuple(item)
        if not _conforms(item, tp):
            raise _Invalid(f"{reprlib.repr(item)} at {where}.{name}, which is not a {_type_text(tp)}")
        kwargs[name] = item
    return kwargs


def _decode(value: Any, arrays: dict[str, np.ndarray], where: str = "result") -> Any:
    """The value encoded by :func:`_encode`; ``where`` is its place in the file (for errors)."""
    if isinstance(value, list):
        return [_decode(v, arrays, f"{where}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        key = value["__array__"]
        if not isinstance(key, str) or key not in arrays:
            raise _Invalid(f"array key {key!r} at {where}, which the arrays file does not hold")
        return arrays[key]
    if "__float__" in value:
        try:
            return float(value["__float__"])
        except (TypeError, ValueError):
            raise _Invalid(f"{value['__float__']!r} at {where}, which is not a float") from None
    if "__type__" in value:
        cls = _registered(str(value["__type__"]))
        if cls is None:
            raise _Invalid(f"unknown result type {value['__type__']!r} at {where} (import the module that "
                           "defines it first)")
        kwargs = _decode_fields(cls, value, arrays, where)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise _Invalid(f"an invalid {cls.__name__} at {where} ({str(err).rstrip('.')})") from None
    return {k: _decode(v, arrays, f"{where}.{k}") for k, v in value.items()}


_KIND_NAMES = {"iu": "integer", "b": "boolean", "f": "floating-point"}
"""numpy dtype kinds a result field may be required to hold (``check_shapes``'s ``kinds``), by name."""


def check_shapes(result: object, shapes: Mapping[str, tuple[int | None, ...]],
                 values: Mapping[str, object] | None = None, kinds: Mapping[str, str] | None = None) -> None:
    """For a result type's ``__post_init__``: raise ``ValueError`` unless each named field (or entry of
    ``values``, e.g. ``{"columns['u']": array}``) has the given shape (``None``: any length), and each field
    named in ``kinds`` holds that kind of number ("iu" integer, "b" boolean, "f" floating-point), so an
    inconsistent result (a damaged or hand-edited file) fails in one line, not later as a shape error or an
    index that is a float."""
    owner = type(result).__name__
    for name, want in shapes.items():
        value: Any = values[name] if values is not None and name in values else getattr(result, name)
        got = np.shape(value)
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            shown = "(" + ", ".join("n" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
            raise ValueError(f"{owner} {name} must have shape {shown}; got {got}. The result is inconsistent.")
    for name, kind in (kinds or {}).items():
        dtype = np.asarray(getattr(result, name)).dtype
        if dtype.kind not in kind:
            raise ValueError(f"{owner} {name} must hold {_KIND_NAMES[kind]} values; got dtype {dtype}. The result is "
                             "inconsistent.")


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix != ".json":
        raise ValueError(f"result path must end in .json; got {str(p)!r}.")
    return p, p.with_suffix(".safetensors")


def save_result(result: Any, path: str | Path) -> Path:
    """Write ``result`` to ``path`` (``.json``) and its arrays next to it (``.safetensors``)."""
    json_path, arr_path = _paths(path)
    cls = type(result)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise TypeError(f"result must be a registered result dataclass; got {cls.__name__!r}.")
    arrays: dict[str, np.ndarray] = {}
    body = _encode(result, "result", arrays)
    doc = {"format": FORMAT, "type": cls.__name__, "schema_version": getattr(cls, "SCHEMA_VERSION", 1),
           "arrays": arr_path.name if arrays else None, "result": body}
    if arrays:
        from safetensors.numpy import save

        data = save(arrays)
        doc["arrays_sha256"] = hashlib.sha256(data).hexdigest()  # pairs the JSON with these arrays
        with atomic_path(arr_path) as tmp:
            tmp.write_bytes(data)
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return json_path


def _load_arrays(json_path: Path, name: object, digest: object = None) -> dict[str, np.ndarray]:
    """The arrays file a result JSON names (None: no arrays): a plain file name in the JSON's folder,
    never a path (``../x.safetensors`` or an absolute one would read a file from elsewhere); with the
    JSON's ``digest`` (files since this check: all but the oldest), the very file saved with it."""
    if name is None:
        return {}
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"result arrays must be a file name in the folder of the JSON (no path); got {name!r} "
                         f"in {str(json_path)!r}.")
    from safetensors.numpy import load

    arr_file = json_path.parent / name
    try:
        data = arr_file.read_bytes()
        arrays = load(data)
    except Exception as err:  # noqa: BLE001 - safetensors raises several types
        raise ValueError(f"result arrays must be a valid safetensors file; got {str(arr_file)!r} "
                         f"({str(err).splitlines()[0] if str(err) else type(err).__name__}).") from None
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"result arrays must be the file saved with {str(json_path)!r}; got {str(arr_file)!r}, "
                         "whose content differs (another save, e.g. an interrupted one, replaced it). Re-create "
                         "the result.")
    return arrays


def load_result(path: str | Path, expected: type[_T] | None = None) -> _T:
    """Read a result written by :func:`save_result` (optionally checking its type). A file that does not
    hold a valid result of its type (see the module docstring) raises one ``ValueError`` naming the
    file and the field."""
    json_path, _ = _paths(path)
    try:
        doc = loads_json(json_path.read_text())
    except FileNotFoundError:
        raise ValueError(f"result file must exist; got {str(json_path)!r}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"result file must be readable JSON; got {str(json_path)!r} ({err}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"result file must be a manifold-workbench result; got {str(json_path)!r}.")
    cls = _registered(str(doc.get("type")))
    if cls is None:
        raise ValueError(f"result type must be known; got {doc.get('type')!r} in {str(json_path)!r}. Import the "
                         "module that defines it first (a type of your own), or re-create the file.")
    if expected is not None and cls is not expected:
        raise ValueError(f"result type must be {expected.__name__}; got {cls.__name__} in {str(json_path)!r}.")
    want = getattr(cls, "SCHEMA_VERSION", 1)
    version = doc.get("schema_version")
    if type(version) is not int or version != want:  # 1.0 and True equal 1 but are not a version
        raise ValueError(f"{cls.__name__} schema_version must be {want} (an integer); got {version!r} in "
                         f"{str(json_path)!r}. Re-create it with this version.")
    arrays = _load_arrays(json_path, doc.get("arrays"), doc.get("arrays_sha256"))
    body = doc.get("result")
    if not isinstance(body, dict) or body.get("__type__") != cls.__name__:
        got = reprlib.repr(body.get("__type__") if isinstance(body, dict) else body)
        raise ValueError(f"result file {str(json_path)!r} must hold a {cls.__name__} body; got {got}. The "
                         "file was edited or damaged: re-create it.")
    try:
        return _decode(body, arrays)
    except _Invalid as err:
        raise ValueError(f"result file {str(json_path)!r} must hold a valid {cls.__name__}; got {err}. The "
                         "file was edited or damaged: re-create it.") from None

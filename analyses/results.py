"""Typed, saveable results: frozen dataclasses written as JSON plus one safetensors file for arrays.

``save_result(result, "out/supernodes.json")`` writes ``out/supernodes.json`` (every field, with
``schema_version`` and the result type) and, when the result holds arrays, ``out/supernodes.safetensors``
(the arrays, referenced from the JSON by key). Both are written atomically (temp file, then
rename), the arrays first. :func:`load_result` reads them back without unpickling anything.

A result type is a frozen dataclass registered with :func:`register_result`. Its fields may be
JSON values (numbers, strings, bools, None, lists, dicts with string keys), numpy arrays, or other
registered dataclasses (also inside lists and dicts). Each type carries a ``SCHEMA_VERSION``
class attribute; a file written with another version is refused with a clear error.
"""

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tracer.io import atomic_path

_REGISTRY: dict[str, type] = {}
_T = TypeVar("_T")

FORMAT = "manifold-workbench-result"


def register_result(cls: type[_T]) -> type[_T]:
    """Class decorator: make a frozen dataclass saveable (its name must be unique)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"result type must be a dataclass; got {cls!r}.")
    name = cls.__name__
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"result type name must be unique; {name!r} is registered twice.")
    _REGISTRY[name] = cls
    return cls


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


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return arrays[value["__array__"]]
    if "__float__" in value:
        return float(value["__float__"])
    if "__type__" in value:
        cls = _REGISTRY.get(value["__type__"])
        if cls is None:
            raise ValueError(f"result type must be known; got {value['__type__']!r}. Import the module that "
                             "defines it first.")
        kwargs = {k: _decode(v, arrays) for k, v in value.items() if k != "__type__"}
        names = {f.name: f for f in dataclasses.fields(cls)}
        for k, f in names.items():  # JSON has no tuples: restore declared tuple fields
            if k in kwargs and isinstance(kwargs[k], list) and "tuple" in str(f.type):
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)
    return {k: _decode(v, arrays) for k, v in value.items()}


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
        from safetensors.numpy import save_file

        with atomic_path(arr_path) as tmp:
            save_file(arrays, str(tmp))
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return json_path


def load_result(path: str | Path, expected: type[_T] | None = None) -> _T:
    """Read a result written by :func:`save_result` (optionally checking its type)."""
    json_path, _ = _paths(path)
    try:
        doc = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise ValueError(f"result file must exist; got {str(json_path)!r}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"result file must be readable JSON; got {str(json_path)!r} ({err}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"result file must be a manifold-workbench result; got {str(json_path)!r}.")
    cls = _REGISTRY.get(str(doc.get("type")))
    if cls is None:
        raise ValueError(f"result type must be known; got {doc.get('type')!r} in {str(json_path)!r}.")
    if expected is not None and cls is not expected:
        raise ValueError(f"result type must be {expected.__name__}; got {cls.__name__} in {str(json_path)!r}.")
    want = getattr(cls, "SCHEMA_VERSION", 1)
    if doc.get("schema_version") != want:
        raise ValueError(f"{cls.__name__} schema_version must be {want}; got {doc.get('schema_version')!r} in "
                         f"{str(json_path)!r}. Re-create it with this version.")
    arrays: dict[str, np.ndarray] = {}
    if doc.get("arrays"):
        from safetensors.numpy import load_file

        arr_file = json_path.parent / str(doc["arrays"])
        if arr_file.name != Path(str(doc["arrays"])).name:
            raise ValueError(f"result arrays must sit next to the JSON; got {doc['arrays']!r}.")
        try:
            arrays = load_file(str(arr_file))
        except Exception as err:  # noqa: BLE001 - safetensors raises several types
            raise ValueError(f"result arrays must be a valid safetensors file; got {str(arr_file)!r} "
                             f"({str(err).splitlines()[0] if str(err) else type(err).__name__}).") from None
    return _decode(doc["result"], arrays)

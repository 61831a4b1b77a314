"""Feature labels: load our JSONL format and Neuronpedia-style exports into one mapping.

Our format (JSONL, one object per line)::

    {"layer": 2, "feature": 17, "label": "day token, peaks at Tue-Wed",
     "top_contexts": ["... after [Friday] is"], ...anything else}

Neuronpedia-style exports (JSON) are accepted in these shapes:

* a list of objects, each with a layer (``layer``; an int, ``"12"`` or ``"12-gemmascope-res-16k"``),
  a feature index (``index``, ``feature``, ``feature_index``, ``featureIndex`` or ``latent``) and
  a description (``description``, ``label``, ``explanation``, or ``explanations: [{description}]``);
  optional ``activations: [{tokens, values, maxValueTokenIndex}]`` become ``top_contexts``;
* an object holding such a list under ``explanations``, ``features``, ``labels`` or ``data``;
* an object mapping ``"<layer>/<feature>"`` (or ``:``, ``_``, ``-`` as separator) to a description
  string or to an object as above.

Every result is ``{(layer, feature): FeatureLabel}``. Errors name the record that is wrong.
"""

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer.errors import WorkbenchError
from tracer.io import atomic_path, loads_json, require_readable

logger = logging.getLogger(__name__)

_FEATURE_KEYS = ("feature", "index", "feature_index", "featureIndex", "latent", "idx")
_LABEL_KEYS = ("label", "description", "explanation")
_LIST_KEYS = ("explanations", "features", "labels", "data")
_PAIR_KEY = re.compile(r"^\s*(\d+)\s*[/:_\-]\s*(\d+)\s*$")
_LAYER_STR = re.compile(r"^\s*(\d+)(?:[-_].*)?$")


class LabelFormatError(WorkbenchError):
    """A label file that cannot be read as our JSONL or a Neuronpedia-style export."""


@dataclass(frozen=True, kw_only=True)
class FeatureLabel:
    """A human-readable label of one transcoder feature."""

    layer: int
    """Layer of the feature (for a CLT: the layer it reads from)."""
    feature: int
    """Index of the feature within its layer."""
    label: str
    """Short description."""
    top_contexts: tuple[str, ...] = ()
    """Snippets showing the activating token in context, e.g. "... after [Friday] is"."""
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Every other field of the record, as read (plus "format": "jsonl" or "neuronpedia")."""

    @property
    def key(self) -> tuple[int, int]:
        """(layer, feature)."""
        return (self.layer, self.feature)

    def to_record(self) -> dict[str, Any]:
        """The JSONL object of this label (extra fields first, then ours)."""
        rec = {k: v for k, v in self.extra.items() if k != "format"}
        rec.update(layer=self.layer, feature=self.feature, label=self.label,
                   top_contexts=list(self.top_contexts))
        return rec


def load_labels(path: str | os.PathLike[str]) -> dict[tuple[int, int], FeatureLabel]:
    """Read a label file: our JSONL, or a Neuronpedia-style JSON export (see module docstring)."""
    p = require_readable(path, "label file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is dropped
    except UnicodeDecodeError as err:
        raise LabelFormatError(f"label file must be UTF-8 text; got byte {raw[err.start:err.start + 1]!r} at offset "
                               f"{err.start} of {str(p)!r}. Re-save it as UTF-8.") from None
    stripped = text.lstrip()
    if not stripped:
        return {}
    if stripped[0] == "[":
        return _parse_neuronpedia(_loads(text, p), p)
    try:
        data = loads_json(text)
    except (json.JSONDecodeError, RecursionError):
        return parse_jsonl(text.split("\n"), source=str(p))  # JSONL: only "\n" ends a record
    if isinstance(data, dict) and "layer" in data:
        if "label" in data:
            return parse_jsonl(text.split("\n"), source=str(p))  # a one-line JSONL file
        return _parse_neuronpedia([data], p)  # a single Neuronpedia feature
    return _parse_neuronpedia(data, p)


def parse_jsonl(lines: Iterable[str], *, source: str = "<labels>") -> dict[tuple[int, int], FeatureLabel]:
    """Parse our JSONL format; blank lines are skipped, duplicates are an error."""
    out: dict[tuple[int, int], FeatureLabel] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = loads_json(line)
        except (json.JSONDecodeError, RecursionError) as err:
            why = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            raise LabelFormatError(f"{source} line {n} must be a JSON object; got invalid JSON ({why}). "
                                   "Write one object per line.") from None
        if not isinstance(rec, dict) or "label" not in rec:
            raise LabelFormatError(f"{source} line {n} must be an object with layer, feature, label; "
                                   f"got {str(rec)[:60]!r}.")
        lab = _from_record(rec, where=f"{source} line {n}", fmt="jsonl")
        if lab.key in out:
            raise LabelFormatError(f"{source} line {n}: (layer, feature) must be unique; {lab.key} repeats. "
                                   "Keep one label per feature.")
        out[lab.key] = lab
    return out


def parse_neuronpedia(data: Any, *, source: str = "<labels>") -> dict[tuple[int, int], FeatureLabel]:
    """Parse a Neuronpedia-style export already loaded from JSON. When a feature has several
    explanations the first wins; the others are kept in ``extra["other_labels"]``."""
    out: dict[tuple[int, int], FeatureLabel] = {}
    for where, rec in _records(data, source):
        lab = _from_record(rec, where=where, fmt="neuronpedia")
        if lab.key in out:
            first = out[lab.key]
            others = [*first.extra.get("other_labels", []), lab.label]
            out[lab.key] = FeatureLabel(layer=first.layer, feature=first.feature, label=first.label,
                                        top_contexts=first.top_contexts,
                                        extra={**first.extra, "other_labels": others})
        else:
            out[lab.key] = lab
    return out


def save_labels(labels: Iterable[FeatureLabel], path: str | os.PathLike[str]) -> None:
    """Write labels as our JSONL, sorted by (layer, feature), atomically."""
    rows = sorted(labels, key=lambda lab: lab.key)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for lab in rows:
                fh.write(json.dumps(lab.to_record(), ensure_ascii=False) + "\n")


def check_labels_match(labels: Mapping[tuple[int, int], FeatureLabel], *, n_layers: int, scan: str = "",
                       source: str = "<labels>", owner: str = "the graph") -> None:
    """Refuse labels made for another transcoder set: a layer beyond `n_layers`, or records whose
    ``scan`` (the transcoder set's id, which our label files carry) differs from `scan`. `owner` names
    whose transcoders they must match in the messages ("the graph", a flag such as "--transcoders", or a
    phrase naming transcoders such as "the transcoders given").

    Labels without a ``scan`` field cannot be matched by id; only their layers are checked.
    """
    whose = ("the graph's transcoders" if owner == "the graph" else f"the transcoders of {owner}"
             if owner.startswith("--") else owner)
    too_deep = sorted(key for key in labels if key[0] >= n_layers)
    if too_deep:
        raise LabelFormatError(f"labels must be for a transcoder set with {n_layers} layers; {source} has a label "
                               f"for layer {too_deep[0][0]} (feature {too_deep[0][1]}). Use the labels of "
                               f"{whose}.")
    scans = {str(lab.extra["scan"]) for lab in labels.values() if lab.extra.get("scan")}
    if scan and scans and scans != {scan}:
        other = sorted(scans - {scan})[0] if scans - {scan} else sorted(scans)[0]
        raise LabelFormatError(f"labels must be for {whose} {scan!r}; {source} labels {other!r}. Use the labels "
                               f"of {whose}.")
    if scans and not scan:
        logger.warning("%s does not record its transcoder set, so labels for %s cannot be matched to it",
                       owner, ", ".join(sorted(scans)))


def check_label_mapping(labels: Mapping[Any, Any] | None, *, n_layers: int, scan: str = "",
                        source: str = "the mapping", owner: str = "the graph") -> None:
    """:func:`check_labels_match` over the :class:`FeatureLabel` values keyed by (layer, feature) of a mapping
    that may also hold plain strings or node-id keys (the Python API's ``labels`` arguments)."""
    records = {k: v for k, v in (labels or {}).items() if isinstance(k, tuple) and isinstance(v, FeatureLabel)}
    if records:
        check_labels_match(records, n_layers=n_layers, scan=scan, source=source, owner=owner)


def _loads(text: str, p: Path) -> Any:
    try:
        return loads_json(text)
    except json.JSONDecodeError as err:
        raise LabelFormatError(f"{p} must be JSON or JSONL; got invalid JSON at line {err.lineno} "
                               f"({err.msg}). Check the file.") from None
    except RecursionError:
        raise LabelFormatError(f"{p} must be JSON or JSONL; got JSON nested too deeply. Check the file.") from None


def _parse_neuronpedia(data: Any, p: Path) -> dict[tuple[int, int], FeatureLabel]:
    return parse_neuronpedia(data, source=str(p))


def _records(data: Any, source: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """(where, record) pairs from any accepted export shape."""
    if isinstance(data, list):
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise LabelFormatError(f"{source}[{i}] must be an object; got {type(rec).__name__}.")
            yield f"{source}[{i}]", rec
        return
    if not isinstance(data, dict):
        raise LabelFormatError(f"{source} must hold a list or an object of labels; "
                               f"got {type(data).__name__}.")
    for key in _LIST_KEYS:
        if isinstance(data.get(key), list):
            yield from _records(data[key], f"{source}.{key}")
            return
    for key, value in data.items():
        m = _PAIR_KEY.match(str(key))
        if m is None:
            raise LabelFormatError(f"{source}: key {key!r} must look like '<layer>/<feature>'; "
                                   f"or put the labels in a list under one of {list(_LIST_KEYS)}.")
        rec = {"description": value} if isinstance(value, str) else value
        if not isinstance(rec, dict):
            raise LabelFormatError(f"{source}[{key!r}] must be a string or an object; got {type(value).__name__}.")
        yield f"{source}[{key!r}]", {"layer": int(m.group(1)), "index": int(m.group(2)), **rec}


def _from_record(rec: dict[str, Any], *, where: str, fmt: str) -> FeatureLabel:
    layer = _parse_layer(rec.get("layer"), where)
    feature = _parse_int(next((rec[k] for k in _FEATURE_KEYS if k in rec), None), "feature index", where)
    label = _parse_label(rec, where)
    contexts = _parse_contexts(rec, where)
    used = {"layer", "label", "top_contexts", *_FEATURE_KEYS[:1]}
    if fmt == "neuronpedia":
        used |= {*_FEATURE_KEYS, *_LABEL_KEYS, "explanations"}
    extra = {k: v for k, v in rec.items() if k not in used}
    extra["format"] = fmt
    return FeatureLabel(layer=layer, feature=feature, label=label, top_contexts=contexts, extra=extra)


def _parse_int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or value is None:
        raise LabelFormatError(f"{where}: {what} must be a non-negative integer; got {value!r}.")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():  # not '²' (isdigit: True)
        return int(value)
    raise LabelFormatError(f"{where}: {what} must be a non-negative integer; got {value!r}.")


def _parse_layer(value: Any, where: str) -> int:
    if isinstance(value, str):
        m = _LAYER_STR.match(value)
        if m is None:
            raise LabelFormatError(f"{where}: layer must be an integer or '<n>-<source id>'; got {value!r}.")
        return int(m.group(1))
    return _parse_int(value, "layer", where)


def _parse_label(rec: dict[str, Any], where: str) -> str:
    for key in _LABEL_KEYS:
        if isinstance(rec.get(key), str):
            return rec[key].strip()
    expl = rec.get("explanations")
    if isinstance(expl, list) and expl:
        first = expl[0]
        if isinstance(first, str):
            return first.strip()
        if isinstance(first, dict) and isinstance(first.get("description"), str):
            return first["description"].strip()
    raise LabelFormatError(f"{where} must have a text 'label', 'description' or 'explanations: "
                           "[{description}]'; found none.")


def _parse_contexts(rec: dict[str, Any], where: str) -> tuple[str, ...]:
    if "top_contexts" in rec:
        ctx = rec["top_contexts"]
        if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
            raise LabelFormatError(f"{where}: top_contexts must be a list of strings; got {str(ctx)[:60]!r}.")
        return tuple(ctx)
    acts = rec.get("activations")
    if isinstance(acts, list):
        return tuple(s for s in (_context_from_activation(a) for a in acts) if s)
    return ()


def _context_from_activation(act: Any, width: int = 6) -> str:
    """Neuronpedia activation record -> "... a b [max] c" (empty if it has no tokens)."""
    if not isinstance(act, dict) or not isinstance(act.get("tokens"), list) or not act["tokens"]:
        return ""
    tokens = [str(t) for t in act["tokens"]]
    k = act.get("maxValueTokenIndex")
    if not isinstance(k, int) or not 0 <= k < len(tokens):
        values = act.get("values")
        numbers = [(v, i) for i, v in enumerate(values[:len(tokens)]) if isinstance(v, (int, float))
                   and not isinstance(v, bool) and math.isfinite(v)] if isinstance(values, list) else []
        # the first peak; null or non-numeric values (some exports have them) are skipped
        k = max(numbers, key=lambda vi: vi[0])[1] if numbers else 0
    lo = max(0, k - width)
    head = "... " if lo > 0 else ""
    return head + " ".join([*tokens[lo:k], f"[{tokens[k]}]", *tokens[k + 1:k + 3]])

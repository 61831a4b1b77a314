"""Checks of a graph read from a file, before anything uses it.

A damaged or hand-edited graph file (a NaN adjacency, shapes that disagree with the node counts,
a feature index past the active list, header metadata of the wrong type) must stop with a
one-line error naming the file and the field, not a traceback in pruning or a misleading
message ("must be acyclic") later. Node order and shapes: :mod:`tracer.graph.core`.
"""

import json
import logging
from typing import Any

import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.io import loads_json
from tracer.mapped import release_rows
from tracer.weights import first_bad

logger = logging.getLogger(__name__)

META_TYPES: dict[str, tuple[type, ...]] = {
    "n_layers": (int,), "d_vocab": (int,), "model_id": (str,), "transcoder_id": (str,), "scan": (str,),
    "input_string": (str,), "logit_tokens": (list, tuple), "extra": (dict,),
}
"""The header fields of a native graph file and their JSON types."""
_BLOCK_BYTES = 64 << 20
"""The adjacency is checked this many bytes of rows at a time."""


def _fail(source: str, what: str, must: str, got: str,
          hint: str = "The file is damaged: re-create it.") -> WorkbenchError:
    return WorkbenchError(f"graph {what} must be {must}; got {got} in {source!r}. {hint}")


def parse_meta(meta_json: str, source: str) -> dict[str, Any]:
    """The JSON header of a native graph: an object whose fields have the right types."""
    try:
        meta = loads_json(meta_json)
    except (json.JSONDecodeError, RecursionError) as err:
        raise _fail(source, "metadata", "valid JSON", f"{type(err).__name__}") from None
    if not isinstance(meta, dict):
        raise _fail(source, "metadata", "a JSON object", f"{type(meta).__name__}")
    unknown = sorted(set(meta) - set(META_TYPES) - {"schema_version"})
    if unknown:
        raise _fail(source, "metadata", "only known fields", f"{unknown[0]!r}")
    for key, types in META_TYPES.items():
        value = meta.get(key)
        if key in ("n_layers", "d_vocab") and (value is None or isinstance(value, bool)):
            raise _fail(source, key, "an integer", f"{value!r}")
        if key in meta and value is None:  # null is no value of any field (a null logit_tokens crashed readers)
            raise _fail(source, key, f"a {types[0].__name__}", "null")
        if value is not None and not isinstance(value, types):
            raise _fail(source, key, f"{types[0].__name__}", f"{type(value).__name__}")
    if not all(isinstance(t, str) for t in meta.get("logit_tokens", [])):
        raise _fail(source, "logit_tokens", "a list of strings", "other items")
    return meta


def _shape(source: str, name: str, t: Tensor, shape: tuple[int | None, ...], floating: bool,
           finite: bool = True) -> None:
    ok_shape = t.dim() == len(shape) and all(w is None or w == g for w, g in zip(shape, t.shape))
    want = "(" + ", ".join("n" if w is None else str(w) for w in shape) + ")"
    if not ok_shape:
        raise _fail(source, name, f"of shape {want}", f"{tuple(t.shape)}")
    if floating != t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise _fail(source, name, f"{'a float' if floating else 'an integer'} tensor", f"{t.dtype}")
    if floating and finite:
        _check_finite(source, name, t)


def _check_finite(source: str, name: str, t: Tensor, offset: int = 0) -> None:
    bad = first_bad(t, limit=float(torch.finfo(t.dtype).max))
    if bad is not None:
        index = [bad[0][0] + offset, *bad[0][1:]]
        raise _fail(source, name, "finite", f"{bad[1]} at index {index}",
                    "The graph was computed from non-finite weights or the file is damaged: re-create it.")


def _check_finite_rows(source: str, A: Tensor) -> None:
    """The adjacency's finiteness, one block of rows at a time; a memory-mapped adjacency's pages are
    released after each block (:func:`tracer.mapped.release_rows`), so checking it never holds the file."""
    n = int(A.shape[0])
    step = max(1, _BLOCK_BYTES // max(1, n * A.element_size()))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        _check_finite(source, "adjacency", A[r0:r1], r0)
        release_rows(A, r0, r1)


def _in_range(source: str, name: str, t: Tensor, lo: int, hi: int | None) -> None:
    if t.numel() and (int(t.min()) < lo or (hi is not None and int(t.max()) >= hi)):
        bound = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise _fail(source, name, f"in {bound}", f"values {int(t.min())}..{int(t.max())}")


def validate_graph(tensors: dict[str, Tensor], n_layers: int, d_vocab: int, source: str) -> None:
    """Raise a one-line WorkbenchError unless the tensors form a consistent, finite graph."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise _fail(source, "n_layers", "an integer >= 1", f"{n_layers!r}")
    tok, act = tensors["input_tokens"], tensors["active_features"]
    _shape(source, "input_tokens", tok, (None,), False)
    n_pos = int(tok.shape[0])
    if n_pos < 1:
        raise _fail(source, "input_tokens", "non-empty", "0 tokens")
    _shape(source, "active_features", act, (None, 3), False)
    n_active = int(act.shape[0])
    _shape(source, "activation_values", tensors["activation_values"], (n_active,), True)
    sel = tensors["selected_features"]
    _shape(source, "selected_features", sel, (None,), False)
    ids = tensors["logit_token_ids"]
    _shape(source, "logit_token_ids", ids, (None,), False)
    n_logits = int(ids.shape[0])
    _shape(source, "logit_probabilities", tensors["logit_probabilities"], (n_logits,), True)
    _shape(source, "logit_vectors", tensors["logit_vectors"], (n_logits, None), True)
    vocab = d_vocab if d_vocab > 0 else None
    _in_range(source, "input_tokens", tok, 0, vocab)
    _in_range(source, "logit_token_ids", ids, 0, vocab)
    for col, name, hi in ((0, "active_features layers", n_layers), (1, "active_features positions", n_pos),
                          (2, "active_features indices", None)):
        _in_range(source, name, act[:, col], 0, hi)
    _in_range(source, "selected_features", sel, 0, n_active)
    if sel.numel() > 1 and not bool((sel[1:] > sel[:-1]).all()):
        raise _fail(source, "selected_features", "strictly ascending", "a repeat or a descent")
    probs = tensors["logit_probabilities"]
    if probs.numel() and not bool(((probs >= 0) & (probs <= 1)).all()):
        raise _fail(source, "logit_probabilities", "in [0, 1]", "values outside")
    n_nodes = int(sel.shape[0]) + (n_layers + 1) * n_pos + n_logits
    _shape(source, "adjacency", tensors["adjacency"], (n_nodes, n_nodes), True, finite=False)
    _check_finite_rows(source, tensors["adjacency"])


__all__ = ["META_TYPES", "parse_meta", "validate_graph"]


def check_transcoders_match(graph: Any, transcoders: Any, flag: str = "transcoders", *, warn: bool = True) -> None:
    """Refuse transcoders other than the graph's: another transcoder set (the ``scan`` both record, when
    both do), another kind (PLT / CLT, as the graph's ``extra["transcoder_kind"]`` records it), another depth,
    or a width that the graph's feature indices exceed. ``warn``: say when the graph records no transcoders."""
    scan, theirs = str(getattr(graph, "scan", "") or ""), str(getattr(transcoders, "scan", "") or "")
    if warn and not scan and not str(getattr(graph, "transcoder_id", "") or ""):
        logger.warning("the graph records no transcoders (an .npz graph): %s can only be checked for its shape, not "
                       "to be the set the graph was traced with", flag)
    if scan and theirs and scan != theirs:
        raise WorkbenchError(f"{flag} must be the graph's transcoders {scan!r}; got {theirs!r}. Pass the transcoders "
                             "the graph was traced with.")
    kind = (getattr(graph, "extra", None) or {}).get("transcoder_kind")
    if kind and getattr(transcoders, "kind", kind) != kind:
        raise WorkbenchError(f"{flag} must be the graph's kind of transcoders ({kind}); got {transcoders.kind} "
                             "transcoders. Pass the transcoders the graph was traced with.")
    if transcoders.n_layers != graph.n_layers:
        raise WorkbenchError(f"{flag} must have the graph's {graph.n_layers} layers; got {transcoders.n_layers}. "
                             "Pass the transcoders the graph was traced with.")
    features = graph.active_features  # (n_active, 3) layer, pos, feature
    top = int(features[:, 2].max()) if features.numel() else -1
    if top >= transcoders.d_transcoder:
        raise WorkbenchError(f"{flag} must have the graph's features; got {transcoders.d_transcoder} features a layer, "
                             f"and the graph uses feature {top}. Pass the transcoders the graph was traced with.")

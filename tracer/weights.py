"""Checks of weights: every value finite and of a magnitude that cannot overflow.

A NaN, an inf or an absurd value (1e38) in a model or transcoder weight turns a graph into NaN,
or silently drops features (a NaN JumpReLU threshold compares false). Three layers of checks:

* **At load** (:func:`check_weight`): tensors up to :data:`FULL_CHECK_ELEMENTS` values (norms,
  biases, thresholds, small matrices) are checked whole. Larger ones are checked on a sample of
  whole pages: one block of :data:`SAMPLE_BLOCK` values in every :data:`SAMPLE_EVERY`, the first
  and the last included, summed (a NaN/inf makes the sum non-finite, a huge value makes it huge).
  Weights are memory-mapped, so a full pass would read every page at load,
  which costs more than the load itself (``workbench/bench/load_checks.py`` measures it); the
  sample keeps the check within a few percent of load time and catches damaged regions.
* **On read**: memory-mapped decoder rows are checked exactly as they are read (only rows of
  active features ever are).
* **At first use**: the attribution engine checks the forward pass's activations, residual
  stream and logits; if any is not finite it calls :func:`find_non_finite_weight`, which checks
  every weight whole and names the culprit. A non-finite weight that a prompt uses therefore
  never reaches a graph, and one it does not use cannot change it.

A failure is a one-line error naming the tensor, its file and the index of the first bad value.
"""

import math
from typing import Any

import torch
from torch import Tensor

from tracer.errors import WorkbenchError

MAX_ABS_WEIGHT = math.sqrt(torch.finfo(torch.float32).max)
"""sqrt(float32 max) ~ 1.8e19: a weight beyond it overflows float32 in a single product. No
trained weight comes near it."""
FULL_CHECK_ELEMENTS = 1 << 18
"""Tensors with at most this many values are always checked whole."""
SAMPLE_BLOCK = 16384
"""Values per sampled block (64 KiB in float32: the kernel maps file pages in 64 KiB windows)."""
SAMPLE_EVERY = 64
"""One block in this many is checked in a large tensor at load (about 1.6% of its pages)."""


def _describe(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


def _in_range(t: Tensor, limit: float) -> bool:
    lo, hi = torch.aminmax(t)
    return bool(lo >= -limit) and bool(hi <= limit)


def first_bad(t: Tensor, limit: float = MAX_ABS_WEIGHT) -> tuple[tuple[int, ...], float] | None:
    """(index, value) of the first value of `t` that is not finite or exceeds `limit`, or None."""
    if not t.is_floating_point() or t.numel() == 0:
        return None
    if _in_range(t.detach(), limit):
        return None
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), 1 << 22):  # chunked: no full-size temporaries
        chunk = flat[start:start + (1 << 22)]
        bad = torch.nonzero(~(chunk.abs() <= limit))
        if bad.numel():
            k = start + int(bad[0, 0])
            idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(k), tuple(t.shape)))
            return idx, float(flat[k])
    return None  # pragma: no cover - aminmax and the scan disagree only on -0.0 / subnormals


def _sample_ok(t: Tensor, limit: float) -> bool:
    """Whether a page sample of a large contiguous tensor looks sound: one block in every
    SAMPLE_EVERY, plus the last block, summed without copying (a strided view: only those pages
    are read). A NaN or inf makes the sum non-finite, a huge value makes it huge; anything else
    passes. A failing sample is searched whole by the caller."""
    flat = t.detach().reshape(-1)
    n_blocks = flat.numel() // SAMPLE_BLOCK
    blocks = flat[:n_blocks * SAMPLE_BLOCK].view(n_blocks, SAMPLE_BLOCK)[::SAMPLE_EVERY]  # (n_sampled, block)
    total = float(blocks.sum()) + float(flat[-SAMPLE_BLOCK:].sum())  # float32 sums: fast on a strided view
    return math.isfinite(total) and abs(total) <= limit


def check_weight(t: Tensor, name: str, source: str, error: type[WorkbenchError] = WorkbenchError,
                 rows: Tensor | None = None, sample: bool = False) -> None:
    """Raise `error` naming `name`, `source` and the index unless every value of `t` is finite and
    ``|x| <= MAX_ABS_WEIGHT``.

    `rows`: `t` holds these rows of the named tensor (the index reported is the tensor's).
    `sample`: a tensor larger than FULL_CHECK_ELEMENTS is checked on a page sample (see the
    module docstring); a failing sample is searched whole for the message.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return
    if sample and t.numel() > FULL_CHECK_ELEMENTS and t.is_contiguous() and _sample_ok(t, MAX_ABS_WEIGHT):
        return
    found = first_bad(t)
    if found is None:
        return
    idx, value = found
    if rows is not None and idx:
        idx = (int(rows.reshape(-1)[idx[0]]), *idx[1:])
    raise error(f"{name} in {source!r} must be finite with |x| <= {MAX_ABS_WEIGHT:.2g}; got {_describe(value)} "
                f"at index {list(idx)}. The file is corrupt: re-download or re-export it.")


def find_non_finite_weight(loaded: Any, transcoders: Any) -> None:
    """Check every weight of a loaded model and transcoder set whole (decoders too); raise naming
    the first bad one. Called when a forward pass produced NaN/inf, to say which weight did."""
    source = str(getattr(loaded, "model_id", "") or "the model folder")
    for name, param in loaded.model.named_parameters():
        check_weight(param, f"model weight {name}", source)
    where = str(getattr(transcoders, "source", "") or "the transcoder folder")
    for i, layer in enumerate(transcoders.layers):
        for field in ("W_enc", "b_enc", "b_dec", "threshold", "skip_T"):
            value = getattr(layer, field)
            if isinstance(value, Tensor):
                check_weight(value, f"transcoder layer {i} {field}", where)
        dec = layer.W_dec
        check_weight(dec if isinstance(dec, Tensor) else dec.full(), f"transcoder layer {i} W_dec", where)


__all__ = ["FULL_CHECK_ELEMENTS", "MAX_ABS_WEIGHT", "SAMPLE_BLOCK", "SAMPLE_EVERY", "check_weight", "first_bad",
           "find_non_finite_weight"]

"""Load-time checks of weights: every value finite and of a magnitude that cannot overflow.

A NaN, an inf or an absurd value (1e38) in a model or transcoder weight turns a graph into NaN,
or silently drops features (a NaN JumpReLU threshold compares false). Loaders call
:func:`check_weight` on every tensor they read; memory-mapped decoders check the rows they read.
The check is one ``aminmax`` pass (no temporary of the tensor's size); only a tensor that fails
is searched for the first bad index, for the message.
"""

import math

import torch
from torch import Tensor

from tracer.errors import WorkbenchError

MAX_ABS_WEIGHT = math.sqrt(torch.finfo(torch.float32).max)
"""sqrt(float32 max) ~ 1.8e19: a weight beyond it overflows float32 in a single product. No
trained weight comes near it."""


def _describe(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


def first_bad(t: Tensor, limit: float = MAX_ABS_WEIGHT) -> tuple[tuple[int, ...], float] | None:
    """(index, value) of the first value of `t` that is not finite or exceeds `limit`, or None."""
    if not t.is_floating_point() or t.numel() == 0:
        return None
    lo, hi = torch.aminmax(t.detach())
    if bool(lo >= -limit) and bool(hi <= limit):
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


def check_weight(t: Tensor, name: str, source: str, error: type[WorkbenchError] = WorkbenchError,
                 rows: Tensor | None = None) -> None:
    """Raise `error` naming `name`, `source` and the index unless every value of `t` is finite and
    ``|x| <= MAX_ABS_WEIGHT``. `rows`: `t` holds these rows of the named tensor (the index
    reported is the tensor's, not the slice's)."""
    found = first_bad(t)
    if found is None:
        return
    idx, value = found
    if rows is not None and idx:
        idx = (int(rows.reshape(-1)[idx[0]]), *idx[1:])
    raise error(f"{name} in {source!r} must be finite with |x| <= {MAX_ABS_WEIGHT:.2g}; got {_describe(value)} "
                f"at index {list(idx)}. The file is corrupt: re-download or re-export it.")


__all__ = ["MAX_ABS_WEIGHT", "check_weight", "first_bad"]

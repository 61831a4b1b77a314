"""Checks of weights: every value finite and of a magnitude that cannot overflow.

A NaN, an inf or an absurd value (1e38) in a model or transcoder weight turns a graph into NaN,
or silently drops features (a NaN JumpReLU threshold compares false). Three layers of checks:

* **At load**. Every tensor of a safetensors weight file (transcoder decoders excepted, see
  below) is checked from the file with ``pread`` (:func:`check_file`, before the loader
  returns), not through its memory mapping: a page fault on a mapping costs 30-100 us on a VM,
  more than the load of a small tensor, while a read of 16 KiB from the page cache costs a few
  us. Up to :data:`FULL_CHECK_BYTES` a tensor is read
  whole; beyond, on :data:`SAMPLE_WINDOWS` windows of :data:`SAMPLE_WINDOW` bytes, evenly spaced,
  the first and the last included; adjacent pieces are read together and the pieces of one dtype
  checked at once (a check's cost is its calls, not its bytes). Tensors cast on load (so that
  overflow shows) or loaded otherwise (through transformers, from .npz) are checked in memory the
  same way (:func:`check_weight`). The test is the sum of squares (one BLAS dot): NaN, inf or any
  value past :data:`MAX_ABS_WEIGHT` fails it, with no cancellation; a failing piece is searched
  exactly for the message. A full pass over every weight would read every page at load, which
  costs more than the load itself; the sample keeps the check under 10% of load time
  (``workbench/bench/load_checks.py`` measures it) and catches damaged regions and files.
* **On read**: transcoder decoders (memory-mapped or not) are exempt from the load-time sample,
  because every use of a decoder reads rows through ``TranscoderLayer.decoder_rows``, which checks
  each row exactly as it is read (only rows of active features ever are).
* **At first use**: every run of the model with its transcoders (the replacement model behind both
  attribution engines and the interventions' clean run, an intervention's result, activation collection)
  checks its activations, residual stream and logits (:func:`check_finite_run`); if any is not finite it
  calls :func:`find_non_finite_weight`, which checks every weight whole and names the culprit. A
  non-finite weight that a prompt uses therefore never reaches a graph, an intervention or an activation
  run, and one it does not use cannot change them.

A failure is a one-line error naming the tensor, its file and the index of the first bad value.
"""

import math
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.mapped import NUMPY_DTYPES, SAFETENSORS_DTYPES

MAX_ABS_WEIGHT = math.sqrt(torch.finfo(torch.float32).max)
"""sqrt(float32 max) ~ 1.8e19: a weight beyond it overflows float32 in a single product. No
trained weight comes near it."""
SAMPLE_WINDOW = 16384
"""Bytes per sampled window (4 pages: one pread of a few us from the page cache)."""
SAMPLE_WINDOWS = 2
"""Windows checked in a large tensor at load: evenly spaced, the first and the last included. A
fixed count, so that the check's cost does not grow with the tensor: each read costs ~20 us on
this VM whatever its size, and the loads it is part of take ~2 ms per transcoder layer."""
FULL_CHECK_BYTES = SAMPLE_WINDOWS * SAMPLE_WINDOW
"""Tensors of at most this many bytes (no more than a sample) are checked whole."""

_MERGE_BYTES = 1 << 16
"""Adjacent pieces are read together up to this many bytes (one pread, one dot: a piece's cost
is mostly the call, not the bytes)."""
_BATCH_BYTES = 1 << 18
"""Sampled bytes checked per call at most (bounds the reused read buffer at 256 KiB)."""
_CHUNK = 1 << 20
"""Values per chunk of a whole in-memory check (bounds its float32 temporaries to 4 MiB)."""
_FLOAT_FILE_DTYPES = ("F64", "F32", "F16", "BF16")
"""The safetensors float dtypes: the weights checked (numpy reads BF16 as raw bits)."""


def _np_dtype(dtype: str) -> np.dtype[Any]:
    """How numpy reads a safetensors dtype's bytes (:mod:`tracer.mapped`'s tables)."""
    return NUMPY_DTYPES[SAFETENSORS_DTYPES[dtype]]


@dataclass(frozen=True)
class FileRegion:
    """Where a tensor's bytes lie: its file, the absolute byte offset and length, the
    safetensors dtype (``F32``, ``BF16``, ...) and the shape."""

    path: str
    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]

    def holds(self, t: Tensor) -> bool:
        """Whether `t` is these bytes as they are (same dtype and size: no cast on load)."""
        return (self.dtype in _FLOAT_FILE_DTYPES and SAFETENSORS_DTYPES[self.dtype] == t.dtype
                and t.numel() * t.element_size() == self.nbytes)


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


def _windows(begin: int, end: int, itemsize: int = 1) -> list[tuple[int, int]]:
    """Byte ranges [a, b) of [begin, end) to check: all of it up to FULL_CHECK_BYTES, else
    SAMPLE_WINDOWS windows of SAMPLE_WINDOW bytes, evenly spaced, the first starting at `begin`
    and the last ending at `end`; starts are whole values (multiples of `itemsize` from `begin`)."""
    if end - begin <= FULL_CHECK_BYTES:
        return [(begin, end)]
    span = (end - SAMPLE_WINDOW - begin) // itemsize
    starts = {begin + itemsize * ((i * span) // (SAMPLE_WINDOWS - 1)) for i in range(SAMPLE_WINDOWS)}
    return [(a, a + SAMPLE_WINDOW) for a in sorted(starts)]


def _squares_ok(values: np.ndarray, limit: float) -> bool:
    """Whether the sum of squares of `values` (float32 or float64; one BLAS dot) is finite and
    <= limit². Any NaN, inf or |x| > limit (whose square overflows float32) fails it, with no
    cancellation; legal values whose squares overflow together fail it too, and the caller then
    searches exactly."""
    x = values if values.dtype in (np.float32, np.float64) else values.astype(np.float32)  # (n,)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is the signal
        total = float(x @ x)
    return math.isfinite(total) and total <= limit * limit


def _as_float(raw: bytes | memoryview, dtype: str) -> np.ndarray:
    """File bytes of a safetensors float dtype as a float32/float64 numpy array (bf16 and f16 widened)."""
    values = np.frombuffer(raw, dtype=_np_dtype(dtype))  # (n,)
    if dtype == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32) if dtype == "F16" else values


def _bad_message(label: str, source: str, idx: tuple[int, ...], value: float) -> str:
    return (f"{label} in {source!r} must be finite with |x| <= {MAX_ABS_WEIGHT:.2g}; got {_describe(value)} "
            f"at index {list(idx)}. The file is corrupt: re-download or re-export it.")


def _first_bad_in_file(fd: int, region: FileRegion, limit: float) -> tuple[tuple[int, ...], float] | None:
    """(index, value) of the first value of the region that is not finite or exceeds `limit`,
    read in chunks of _CHUNK values; None if there is none."""
    size = _np_dtype(region.dtype).itemsize
    for start in range(0, region.nbytes // size, _CHUNK):
        n = min(_CHUNK, region.nbytes // size - start)
        values = _as_float(os.pread(fd, n * size, region.offset + start * size), region.dtype)  # (n,)
        bad = np.flatnonzero(~(np.abs(values) <= limit))
        if bad.size:
            k = start + int(bad[0])
            return tuple(int(i) for i in np.unravel_index(k, region.shape)), float(values[bad[0]])
    return None


_BUFFERS = threading.local()


def _read_buffer(nbytes: int) -> memoryview:
    """A reused, already-resident buffer of exactly `nbytes` bytes for this thread (a view of one
    that only grows): a fresh one per read would cost page faults, which on a VM cost more than
    the reads."""
    buf = getattr(_BUFFERS, "buf", None)
    if buf is None or len(buf) < nbytes:
        buf = _BUFFERS.buf = memoryview(bytearray(nbytes))
    return buf[:nbytes]


def _read_batches(fd: int, ranges: list[tuple[int, int]]) -> Iterator[memoryview]:
    """The bytes of `ranges`, read into the reused buffer and yielded in batches of at most
    _BATCH_BYTES (or one range, if longer); each batch is overwritten by the next."""
    total = sum(b - a for a, b in ranges)
    buf = _read_buffer(max(min(total, _BATCH_BYTES), max(b - a for a, b in ranges)))
    n = 0
    for a, b in ranges:
        if n + b - a > len(buf):
            yield buf[:n]
            n = 0
        n += os.preadv(fd, [buf[n:n + b - a]], a)
    yield buf[:n]


def _merged(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte ranges sorted, adjacent ones joined up to _MERGE_BYTES (one pread each)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(pieces):
        if out and out[-1][1] == a and b - out[-1][0] <= _MERGE_BYTES:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def check_file(regions: Mapping[str, FileRegion], label: str = "", error: type[WorkbenchError] = WorkbenchError,
               limit: float = MAX_ABS_WEIGHT) -> None:
    """The load-time check of every float tensor of one file, read with ``pread`` (see the module
    docstring): each tensor whole up to FULL_CHECK_BYTES, else on SAMPLE_WINDOWS windows. The
    pieces of one dtype are read (adjacent ones together) and checked at once: a check's cost is
    its calls, not its bytes. If they fail, that dtype's tensors are searched exactly in file
    order, and the first bad value is raised as `error` naming ``label + name``, the file and the
    index."""
    pieces: dict[str, list[tuple[int, int]]] = {}  # dtype -> byte ranges to read
    for region in regions.values():
        if region.dtype in _FLOAT_FILE_DTYPES and region.nbytes:
            size = _np_dtype(region.dtype).itemsize
            pieces.setdefault(region.dtype, []).extend(_windows(region.offset, region.offset + region.nbytes, size))
    if not pieces:
        return
    path = next(iter(regions.values())).path
    fd = os.open(path, os.O_RDONLY)
    try:
        for dtype, ranges in pieces.items():
            if all(_squares_ok(_as_float(part, dtype), limit) for part in _read_batches(fd, _merged(ranges))):
                continue
            for name, region in sorted(regions.items(), key=lambda item: item[1].offset):
                found = _first_bad_in_file(fd, region, limit) if region.dtype == dtype else None
                if found is not None:
                    raise error(_bad_message(label + name, path, *found))
    finally:
        os.close(fd)


def _memory_ok(t: Tensor, limit: float, sample: bool) -> bool:
    """The same check on a contiguous CPU tensor: whole, or (`sample`) on windows of its memory;
    in chunks of _CHUNK values (no full-size temporaries)."""
    flat = t.detach().reshape(-1)  # (numel,) a view
    size, begin = flat.element_size(), flat.data_ptr()
    end = begin + flat.numel() * size
    for a, b in _windows(begin, end) if sample else [(begin, end)]:
        for lo in range((a - begin) // size, (b - begin) // size, _CHUNK):
            part = flat[lo:min((b - begin) // size, lo + _CHUNK)]
            if not _squares_ok((part.float() if part.dtype == torch.bfloat16 else part).numpy(), limit):
                return False
    return True


def check_weight(t: Tensor, name: str, source: str, error: type[WorkbenchError] = WorkbenchError,
                 rows: Tensor | None = None, sample: bool = False) -> None:
    """Raise `error` naming `name`, `source` and the index unless every value of `t` is finite and
    ``|x| <= MAX_ABS_WEIGHT``.

    `rows`: `t` holds these rows of the named tensor (the index reported is the tensor's).
    `sample`: a tensor larger than FULL_CHECK_BYTES is checked on a sample of windows of its
    memory (see the module docstring); a failing sample is searched whole for the message.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return
    if t.device.type == "cpu" and t.is_contiguous() and _memory_ok(t, MAX_ABS_WEIGHT, sample):
        return
    found = first_bad(t)
    if found is None:
        return
    idx, value = found
    if rows is not None and idx:
        idx = (int(rows.reshape(-1)[idx[0]]), *idx[1:])
    raise error(_bad_message(name, source, idx, value))


def check_finite_run(named: Iterator[tuple[str, Tensor]] | list[tuple[str, Tensor]], loaded: Any,
                     transcoders: Any, hint: str = "The model or transcoder weights overflow in this dtype; "
                                                   "try float32.") -> None:
    """Every ``(name, tensor)`` of a run of the model with its transcoders (activations, residual stream,
    logits) must be finite; else raise naming the weight to blame (:func:`find_non_finite_weight`; ``loaded``
    None: the transcoders only) or, when no weight is, the first bad quantity and ``hint``."""
    for name, t in named:
        if not bool(torch.isfinite(t).all()):
            find_non_finite_weight(loaded, transcoders)  # names the weight, if one is to blame
            raise WorkbenchError(f"{name} must be finite; got NaN/inf for this prompt. {hint}")


def find_non_finite_weight(loaded: Any, transcoders: Any) -> None:
    """Check every weight of a loaded model (None: none) and transcoder set whole (decoders too); raise
    naming the first bad one. Called when a forward pass produced NaN/inf, to say which weight did."""
    if loaded is not None:
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


__all__ = ["FULL_CHECK_BYTES", "MAX_ABS_WEIGHT", "SAMPLE_WINDOW", "SAMPLE_WINDOWS", "FileRegion", "check_file",
           "check_finite_run", "check_weight", "find_non_finite_weight", "first_bad"]

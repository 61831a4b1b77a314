"""Memory-mapped adjacency matrices: read (and written) out of core, one block of rows at a time.

A graph file's adjacency can be larger than memory (N = 74,575 float32 nodes: 22 GB). Mapped
here, it is an ordinary ``(n_nodes, n_nodes)`` tensor whose pages the kernel reads on demand.
Every block loop over an adjacency in :mod:`tracer.graph` calls :func:`release_rows` when it is
done with a block: for a mapping made here that drops the block's pages from the process
(``madvise(MADV_DONTNEED)``), so resident memory stays one block, not the file; for any other
tensor it does nothing.

* :func:`map_tensor`: a read-only mapping of a file region (a graph larger than memory plus swap
  can be mapped; a private writable one could not). Never modify such a tensor in place (a write
  faults); released pages are re-read from the file.
* :func:`register_mapping`: a writable shared mapping (the graph file being written,
  :mod:`tracer.graph.stream`), released the same way; its dirty pages are written back by the
  kernel.
* :func:`npz_member`: where an array lies in an ``.npz`` (stored, i.e. uncompressed, members only);
  a safetensors file's layout comes from :mod:`tracer.safetensors_header`.
"""

import logging
import mmap
import struct
import threading
import warnings
import weakref
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

PAGE = mmap.PAGESIZE
_MAPPINGS: dict[int, tuple[int, mmap.mmap]] = {}
"""base address -> (length, mapping) of every live mapping made here"""
_LOCK = threading.Lock()

NUMPY_DTYPES: dict[torch.dtype, np.dtype] = {
    torch.float32: np.dtype("<f4"), torch.float64: np.dtype("<f8"), torch.float16: np.dtype("<f2"),
    torch.bfloat16: np.dtype("<u2"),  # numpy has no bfloat16: raw bits, viewed as bf16 in torch
    torch.int64: np.dtype("<i8"), torch.int32: np.dtype("<i4"), torch.int8: np.dtype("i1"),
    torch.uint8: np.dtype("u1"), torch.bool: np.dtype("?"),
}
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def register_mapping(mapping: mmap.mmap, owner: np.ndarray) -> None:
    """Let :func:`release_rows` drop pages of `mapping`, for as long as `owner` (a numpy array
    over the whole mapping, from offset 0) is alive."""
    address = int(owner.ctypes.data)
    with _LOCK:
        _MAPPINGS[address] = (len(mapping), mapping)
    weakref.finalize(owner, unregister_mapping, address)


def unregister_mapping(address: int) -> None:
    with _LOCK:
        _MAPPINGS.pop(address, None)


def view_tensor(base: np.ndarray, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """A tensor over bytes ``base[offset:]`` (base: uint8 array over a mapping)."""
    np_dtype = NUMPY_DTYPES[dtype]
    count = int(np.prod(shape)) if shape else 1
    array = base[offset:offset + count * np_dtype.itemsize].view(np_dtype).reshape(shape)
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor


def map_tensor(path: str | Path, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """A read-only memory map of the array at byte `offset` of `path` (read on demand).

    Read-only, not copy-on-write: a private writable mapping is charged in full against the
    kernel's commit limit, so a graph file larger than memory plus swap could not be mapped at
    all (ENOMEM). The tensor must not be written to: a write faults (SIGSEGV); ``.clone()`` it first.
    """
    with open(path, "rb") as fh:
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    base = np.frombuffer(mapping, dtype=np.uint8)  # (file bytes,), read-only
    register_mapping(mapping, base)
    with warnings.catch_warnings():  # torch warns that the array is not writable: documented above
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return view_tensor(base, offset, dtype, shape)


def lazy_zeros(n: int, dtype: torch.dtype) -> Tensor:
    """(n,) zeros whose pages cost no memory until written: a private anonymous mapping, where
    reads see the kernel's shared zero page (``torch.zeros`` writes, so makes, every page)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    if n * itemsize < (1 << 24) or not hasattr(mmap, "MAP_ANONYMOUS"):
        return torch.zeros(n, dtype=dtype)
    mapping = mmap.mmap(-1, n * itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return view_tensor(np.frombuffer(mapping, dtype=np.uint8), 0, dtype, (n,))


def is_mapped(tensor: Tensor) -> bool:
    """Whether `tensor`'s memory lies in a mapping made here."""
    return _find(tensor.data_ptr(), tensor.data_ptr() + 1) is not None


def _find(start: int, end: int) -> tuple[int, mmap.mmap] | None:
    with _LOCK:
        for base, (length, mapping) in _MAPPINGS.items():
            if base <= start and end <= base + length:
                return base, mapping
    return None


def release_rows(matrix: Tensor, r0: int, r1: int) -> None:
    """Drop the pages wholly inside rows ``[r0, r1)`` of a mapped `matrix` from memory.

    Other tensors (in memory, on a GPU, not row-contiguous) are left alone. The data stays in
    the file; touching the rows again reads them back.
    """
    if not _MAPPINGS or r1 <= r0 or matrix.device.type != "cpu" or matrix.dim() != 2 \
            or matrix.stride(1) != 1 or not hasattr(mmap, "MADV_DONTNEED"):
        return
    row_bytes = matrix.stride(0) * matrix.element_size()
    start = matrix.data_ptr() + r0 * row_bytes
    end = matrix.data_ptr() + (r1 - 1) * row_bytes + matrix.shape[1] * matrix.element_size()
    found = _find(start, end)
    if found is None:
        return
    base, mapping = found
    lo = -(-(start - base) // PAGE) * PAGE
    hi = (end - base) // PAGE * PAGE
    if hi > lo:
        mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def release_all(matrix: Tensor) -> None:
    """:func:`release_rows` over every row."""
    release_rows(matrix, 0, int(matrix.shape[0]) if matrix.dim() == 2 else 0)


# ----------------------------------------------------------------------------- file layouts
class ArrayPlace(NamedTuple):
    """Where an array's bytes lie in a file."""

    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The torch dtype of these bytes (None: numpy only)."""
        return next((t for t, d in NUMPY_DTYPES.items() if d == self.dtype and t != torch.bfloat16), None)

    @property
    def mappable(self) -> bool:
        """Whether :func:`map_tensor` can map it (a torch dtype, C order, aligned)."""
        return self.torch_dtype is not None and not self.fortran_order and self.offset % self.dtype.itemsize == 0


def npz_member(path: str | Path, key: str) -> ArrayPlace | None:
    """Where member `key` of an ``.npz`` lies, or None if it is compressed (cannot be mapped)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            return None
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, np_dtype = reader(fh)
        offset = fh.tell()
    return ArrayPlace(offset, np_dtype, tuple(shape), bool(fortran))

"""Graph files written as the rows are computed: preallocated, memory-mapped, atomic.

:func:`open_graph_file` checks the free disk space, creates a temporary file next to the final
path (:func:`tracer.io.atomic_path`), preallocates it and maps the adjacency region; the caller
writes rows into :attr:`GraphFileWriter.adjacency` and reports finished rows in order with
:meth:`GraphFileWriter.rows_done`, which drops their pages from memory (the kernel writes them
back). :meth:`GraphFileWriter.finish` writes everything else; only then is the file renamed onto
its path, so a failed or killed run never leaves a file there. Saving an in-memory graph
(:meth:`tracer.graph.core.Graph.save`) copies its rows through the same writer, so a streamed
file and a saved one have one layout.

Layouts (both readable by the usual tools, and with the adjacency first, 4096-byte aligned, so
that it can be mapped back, see :mod:`tracer.mapped`):

* native: a safetensors file. The header (JSON, ``__metadata__`` holding the graph's JSON) is
  written last into space reserved before the data (the format allows trailing spaces);
  tensors: ``adjacency`` (its own dtype), then the other fields of :class:`tracer.graph.core.Graph`.
* ``.npz``: an uncompressed zip64 archive of ``.npy`` members, ``adjacency.npy`` (float32) first,
  then the keys of design notes §2.3. Zip needs each member's CRC-32: it is computed over each
  finished block of rows before the block is released, and rows known to be zero (error and token
  nodes have no inputs) are skipped arithmetically (:func:`crc32_zeros`).
"""

import contextlib
import json
import logging
import mmap
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.io import atomic_path
from tracer.mapped import PAGE, register_mapping, release_rows, unregister_mapping, view_tensor


class GraphParts(Protocol):
    """What :meth:`GraphFileWriter.finish` needs of a graph (:class:`tracer.graph.core.Graph` has it)."""

    @property
    def n_nodes(self) -> int: ...

    def file_meta(self) -> dict[str, object]:
        """The JSON-able fields of the native header."""
        ...

    def file_tensors(self) -> dict[str, Tensor]:
        """The tensors of the native file after the adjacency, in file order."""
        ...

    def npz_arrays(self) -> dict[str, np.ndarray]:
        """Every member of the §2.3 npz except the adjacency, in file order."""
        ...

logger = logging.getLogger(__name__)

_ALIGN = 4096
"""The adjacency's data starts at a multiple of this in both layouts."""
_RELEASE_BYTES = 16 << 20
"""Finished rows are released in chunks of at least this many bytes."""
_WRITEBACK_MIN_FILE = 1 << 30
"""Files larger than this have their released rows queued for write-back right away."""
_DISK_MARGIN = 64 << 20
_ST_NAMES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_ZIP64_MAX = 0xFFFFFFFF
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, zipfile's default ZipInfo date
NPZ_ADJACENCY_DTYPE = torch.float32


def _roundup(n: int, k: int) -> int:
    return -(-n // k) * k


def _tensor_bytes(tensor: Tensor) -> memoryview:
    flat = tensor.detach().cpu().contiguous().reshape(-1)  # (numel,)
    return flat.view(torch.uint8).numpy().data if flat.numel() else memoryview(b"")


# ----------------------------------------------------------------------------- CRC-32 of zero runs
def _gf2_times(matrix: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= matrix[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32_zeros(crc: int, n_bytes: int) -> int:
    """``zlib.crc32(bytes(n_bytes), crc)`` without touching n_bytes of memory (zlib's crc32_combine
    operator: appending a zero byte is linear over GF(2) in the CRC register)."""
    if n_bytes <= 0:
        return crc
    if n_bytes <= 1 << 16:
        return zlib.crc32(bytes(n_bytes), crc)
    reg = crc ^ 0xFFFFFFFF  # the raw register zlib's pre/post inversion hides
    op = [0xEDB88320] + [1 << n for n in range(31)]  # the operator of one zero bit
    for _ in range(3):
        op = _gf2_square(op)  # ... of one zero byte
    while True:  # op: the operator of 2^k zero bytes
        if n_bytes & 1:
            reg = _gf2_times(op, reg)
        n_bytes >>= 1
        if not n_bytes:
            break
        op = _gf2_square(op)
    return reg ^ 0xFFFFFFFF


# ----------------------------------------------------------------------------- zip records
def _zip_local_header(name: bytes, size: int, crc: int, pad: int = 0) -> bytes:
    """A zip64 local file header for a stored member; `pad` extra bytes of padding field."""
    extra = struct.pack("<HHQQ", 0x0001, 16, size, size)
    if pad:
        extra += struct.pack("<HH", 0xD935, pad - 4) + bytes(pad - 4)  # zipalign's padding id
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, _DOS_DATE, crc, _ZIP64_MAX, _ZIP64_MAX,
                       len(name), len(extra)) + name + extra


def _zip_central_entry(name: bytes, size: int, crc: int, offset: int) -> bytes:
    extra = struct.pack("<HHQQQ", 0x0001, 24, size, size, offset)
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45 | (3 << 8), 45, 0, 0, 0, _DOS_DATE, crc,
                       _ZIP64_MAX, _ZIP64_MAX, len(name), len(extra), 0, 0, 0, 0o600 << 16,
                       _ZIP64_MAX) + name + extra


def _zip_end(n_entries: int, cd_offset: int, cd_size: int) -> bytes:
    end64 = cd_offset + cd_size
    record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n_entries, n_entries, cd_size, cd_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, end64, 1)
    small = min(n_entries, 0xFFFF)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, small, small, min(cd_size, _ZIP64_MAX),
                       min(cd_offset, _ZIP64_MAX), 0)
    return record + locator + eocd


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


# ----------------------------------------------------------------------------- disk space
def file_size_bound(n_nodes: int, dtype: torch.dtype, header_reserve: int = 0) -> int:
    """Bytes of the adjacency plus room for the header (the small tensors are not counted)."""
    return _roundup(header_reserve + 8, _ALIGN) + n_nodes * n_nodes * torch.empty((), dtype=dtype).element_size()


def check_disk_space(path: Path, n_bytes: int) -> None:
    """Refuse up front (one line) when the folder of `path` has less than `n_bytes` free."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < n_bytes + _DISK_MARGIN:
        err = WorkbenchError(
            f"free disk space must hold the graph file; got {free / 2**30:.2f} GiB free in {str(folder)!r} for "
            f"{str(path)!r}, which needs {(n_bytes + _DISK_MARGIN) / 2**30:.2f} GiB. Free some space, write "
            "elsewhere, cap the graph (max_feature_nodes) or store it as bfloat16 (adjacency_dtype).")
        err.fields = ("max_feature_nodes", "adjacency_dtype")
        raise err


# ----------------------------------------------------------------------------- the writer
class GraphFileWriter:
    """A graph file being written (see the module docstring). Use :func:`open_graph_file`."""

    def __init__(self, path: Path, fmt: str, n_nodes: int, dtype: torch.dtype, header_reserve: int) -> None:
        self.path, self.fmt, self.n_nodes, self.dtype = path, fmt, n_nodes, dtype
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.row_bytes = n_nodes * itemsize
        self.adjacency_bytes = n_nodes * self.row_bytes
        if fmt == "npz":
            self._npy = _npy_header(np.dtype("<f4"), (n_nodes, n_nodes))
            bare = len(_zip_local_header(b"adjacency.npy", 0, 0)) + len(self._npy)
            pad = _roundup(bare + 4, _ALIGN) - bare  # a padding field is at least 4 bytes
            self.data_offset = bare + pad
            self._pad = pad
            self._crc = zlib.crc32(self._npy)
        else:
            self.data_offset = _roundup(8 + header_reserve, _ALIGN)
        self.finished = False
        self._done_row = self._released_row = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        size = self.data_offset + self.adjacency_bytes
        try:
            _preallocate(self._fd, size, path)
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise
        self._base = np.frombuffer(self._map, dtype=np.uint8)  # (size,)
        register_mapping(self._map, self._base)
        self.adjacency = view_tensor(self._base, self.data_offset, dtype, (n_nodes, n_nodes))
        """(n_nodes, n_nodes): write rows here (zeros to start with)."""

    # ------------------------------------------------------------------ rows
    def rows_done(self, end: int) -> None:
        """Rows below `end` are final: checksum them (npz) and release them from memory."""
        if end <= self._done_row:
            return
        if self.fmt == "npz":
            lo, hi = self.data_offset + self._done_row * self.row_bytes, self.data_offset + end * self.row_bytes
            self._crc = zlib.crc32(self._base[lo:hi].data, self._crc)
        self._done_row = end
        self._release(force=end == self.n_nodes)

    def rows_zero(self, end: int) -> None:
        """Rows from the last finished one up to `end` were never written: they are zero."""
        if end <= self._done_row:
            return
        self._release(force=True)
        if self.fmt == "npz":
            self._crc = crc32_zeros(self._crc, (end - self._done_row) * self.row_bytes)
        self._done_row = self._released_row = end

    def _release(self, *, force: bool) -> None:
        start, end = self._released_row, self._done_row
        if end <= start or ((end - start) * self.row_bytes < _RELEASE_BYTES and not force):
            return
        release_rows(self.adjacency, start, end)
        if self.adjacency_bytes > _WRITEBACK_MIN_FILE and hasattr(os, "posix_fadvise"):
            lo = _roundup(self.data_offset + start * self.row_bytes, PAGE)
            hi = (self.data_offset + end * self.row_bytes) // PAGE * PAGE
            if hi > lo:  # start writing back now, and drop what is already clean
                os.posix_fadvise(self._fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
        self._released_row = end

    # ------------------------------------------------------------------ the rest of the file
    def finish(self, graph: GraphParts) -> None:
        """Write everything but the adjacency rows (which must all be done)."""
        if graph.n_nodes != self.n_nodes:
            raise ValueError(f"graph must have {self.n_nodes} nodes; got {graph.n_nodes}.")
        self.rows_done(self.n_nodes)
        if self.fmt == "npz":
            self._finish_npz(graph)
        else:
            self._finish_native(graph)
        self.finished = True

    def _finish_native(self, graph: GraphParts) -> None:
        entries: dict[str, object] = {
            "__metadata__": {"manifold_workbench_graph": json.dumps(graph.file_meta())},
            "adjacency": {"dtype": _ST_NAMES[self.dtype], "shape": [self.n_nodes, self.n_nodes],
                          "data_offsets": [0, self.adjacency_bytes]},
        }
        pos = self.data_offset + self.adjacency_bytes
        offset = self.adjacency_bytes
        for name, tensor in graph.file_tensors().items():
            data = _tensor_bytes(tensor)
            entries[name] = {"dtype": _ST_NAMES[tensor.dtype], "shape": list(tensor.shape),
                             "data_offsets": [offset, offset + len(data)]}
            os.pwrite(self._fd, data, pos)
            pos += len(data)
            offset += len(data)
        header = json.dumps(entries).encode()
        room = self.data_offset - 8
        if len(header) > room:
            raise RuntimeError(f"graph header must fit its reserved {room} bytes; got {len(header)}")
        os.pwrite(self._fd, struct.pack("<Q", room) + header + b" " * (room - len(header)), 0)

    def _finish_npz(self, graph: GraphParts) -> None:
        size = len(self._npy) + self.adjacency_bytes
        entries = [(b"adjacency.npy", size, self._crc & 0xFFFFFFFF, 0)]
        head = _zip_local_header(b"adjacency.npy", size, entries[0][2], self._pad)
        os.pwrite(self._fd, head + self._npy, 0)
        pos = self.data_offset + self.adjacency_bytes
        chunks = []
        for key, value in graph.npz_arrays().items():
            arr = np.asarray(value)
            arr = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)  # keeps 0-d arrays 0-d
            data = _npy_header(arr.dtype, arr.shape) + arr.tobytes()
            name = f"{key}.npy".encode()
            crc = zlib.crc32(data)
            chunks += [_zip_local_header(name, len(data), crc), data]
            entries.append((name, len(data), crc, pos))
            pos += len(chunks[-2]) + len(data)
        central = b"".join(_zip_central_entry(*entry) for entry in entries)
        chunks += [central, _zip_end(len(entries), pos, len(central))]
        os.pwrite(self._fd, b"".join(chunks), self.data_offset + self.adjacency_bytes)

    def close(self) -> None:
        """Unmap and close (also after a failure; the caller deletes the file then)."""
        unregister_mapping(int(self._base.ctypes.data))
        del self.adjacency, self._base
        with contextlib.suppress(BufferError):  # a caller still holds a view: unmapped when it goes
            self._map.close()
        os.close(self._fd)


def _preallocate(fd: int, size: int, path: Path) -> None:
    """Reserve the blocks now, so that writing through the map can never hit a full disk (SIGBUS)."""
    if not hasattr(os, "posix_fallocate"):  # not on every platform: a sparse file then
        os.ftruncate(fd, size)
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno in (28, 122):  # ENOSPC, EDQUOT
            raise WorkbenchError(f"free disk space must hold the graph file; got {err.strerror} while "
                                 f"reserving {size / 2**30:.2f} GiB for {str(path)!r}. Free some space or "
                                 "write elsewhere.") from None
        os.ftruncate(fd, size)  # file systems without fallocate


@contextlib.contextmanager
def open_graph_file(path: str | os.PathLike[str], n_nodes: int, dtype: torch.dtype, *,
                    header_reserve: int = 1 << 16, fmt: str | None = None) -> Iterator[GraphFileWriter]:
    """A :class:`GraphFileWriter` for `path`, renamed into place on success.

    `fmt`: "npz" or "native" (default: npz for a ``.npz`` path, else native). `dtype` is the
    adjacency's (npz always stores float32); `header_reserve` the bytes kept for the native
    header. Refuses up front when the disk cannot hold the file.
    """
    path = Path(path)
    fmt = fmt or ("npz" if path.suffix == ".npz" else "native")
    file_dtype = NPZ_ADJACENCY_DTYPE if fmt == "npz" else dtype
    check_disk_space(path, file_size_bound(n_nodes, file_dtype, header_reserve))
    with atomic_path(path) as tmp:
        writer = GraphFileWriter(tmp, fmt, n_nodes, file_dtype, header_reserve)
        try:
            yield writer
            if not writer.finished:
                raise RuntimeError("the graph file must be finished before it is closed")
        finally:
            writer.close()
    logger.info("wrote %s (%d nodes)", path, n_nodes)

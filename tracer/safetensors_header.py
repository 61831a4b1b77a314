"""Validated safetensors headers: structure, dtypes, shapes and offsets, before any tensor is read.

The safetensors format is 8 bytes of header length, a JSON object ``{name: {dtype, shape,
data_offsets}, "__metadata__": {...}}``, then the data. A damaged file can hold a JSON list, entries
without offsets, negative or huge shapes, or offsets past the end; :func:`read_safetensors_header`
turns each into a one-line error naming the file (used for model weights and transcoders).
"""

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from tracer.errors import WorkbenchError

ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
            "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
"""Every dtype of the safetensors format, with its size in bytes."""
MAX_HEADER_BYTES = 100_000_000
"""The safetensors library's own limit on the JSON header."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _raw_header(path: Path, what: str, error: type[WorkbenchError]) -> tuple[object, int, int]:
    """(parsed JSON header, header length, file size)."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n <= 0 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            return json.loads(fh.read(n)), n, size
    except FileNotFoundError:
        raise error(f"{what} must exist; got {str(path)!r}, which does not exist. Check the path.") from None
    except PermissionError:
        raise error(f"{what} must be readable; got {str(path)!r} (permission denied).") from None
    except IsADirectoryError:
        raise error(f"{what} must be a file; got {str(path)!r}, a folder.") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise error(f"{what} must be valid safetensors; got {str(path)!r} ({str(err)[:100]}). "
                    "The file is corrupt or truncated: re-download or re-export it.") from None


def _entry(path: Path, name: str, entry: object, data_len: int, what: str,
           error: type[WorkbenchError]) -> TensorInfo:
    """One validated header entry: dtype known, shape non-negative ints, offsets inside the data
    and exactly as long as the shape needs."""
    def bad(why: str) -> WorkbenchError:
        return error(f"{what} must be valid safetensors; got {str(path)!r} with a bad entry {name[:80]!r} "
                     f"({why}). The file is corrupt or truncated: re-download or re-export it.")

    if not isinstance(entry, dict):
        raise bad(f"not an object but {type(entry).__name__}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ITEMSIZE:
        raise bad(f"dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise bad(f"shape {str(shape)[:40]} is not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise bad(f"data_offsets {str(offsets)[:40]} is not a pair of integers")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise bad(f"offsets {begin}..{end} outside the {data_len} data bytes")
    numel = 1
    for d in shape:
        numel *= d
    if numel * ITEMSIZE[dtype] != end - begin:
        raise bad(f"shape {shape} of {dtype} needs {numel * ITEMSIZE[dtype]} bytes, the offsets give {end - begin}")
    return TensorInfo(dtype, tuple(shape), begin, end)


def read_safetensors_file(path: Path, what: str = "safetensors file", error: type[WorkbenchError] = WorkbenchError
                          ) -> tuple[dict[str, TensorInfo], int, dict[str, str]]:
    """Parse and validate a safetensors header: ({name: info}, byte offset of the data, ``__metadata__``).

    Every structural fault (a header that is not a JSON object, entries without ``data_offsets``,
    negative or huge shapes, offsets past the end) is a one-line `error` naming the file.
    """
    header, n, size = _raw_header(path, what, error)
    if not isinstance(header, dict):
        raise error(f"{what} must be valid safetensors; got {str(path)!r}, whose header is a JSON "
                    f"{type(header).__name__}, not an object. The file is corrupt: re-download or re-export it.")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise error(f"{what} must be valid safetensors; got {str(path)!r}, whose __metadata__ is not a "
                    "string map. The file is corrupt: re-download or re-export it.")
    data_len = size - 8 - n
    infos = {name: _entry(path, name, entry, data_len, what, error)
             for name, entry in header.items() if name != "__metadata__"}
    _check_layout(path, infos, data_len, what, error)
    return infos, 8 + n, dict(meta or {})


def _check_layout(path: Path, infos: dict[str, TensorInfo], data_len: int, what: str,
                  error: type[WorkbenchError]) -> None:
    """The tensors tile the data exactly, as the safetensors library requires: in offset order each
    begins where the one before ends, from byte 0 to the last byte (overlapping entries once read one
    tensor out of another's bytes)."""
    at = 0
    for name, info in sorted(infos.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin != at:
            how = "overlaps the tensor before it" if info.begin < at else f"leaves bytes {at}..{info.begin} unused"
            raise error(f"{what} must be valid safetensors; got {str(path)!r}, whose tensor {name[:60]!r} (offsets "
                        f"{info.begin}..{info.end}) {how}. The file is corrupt: re-download or re-export it.")
        at = info.end
    if at != data_len:
        raise error(f"{what} must be valid safetensors; got {str(path)!r}, whose tensors end at data byte {at} of "
                    f"{data_len} (trailing bytes). The file is corrupt: re-download or re-export it.")


def read_safetensors_header(path: Path, what: str = "safetensors file",
                            error: type[WorkbenchError] = WorkbenchError) -> tuple[dict[str, TensorInfo], int]:
    """:func:`read_safetensors_file` without the metadata: ({name: info}, byte offset of the data)."""
    infos, data_offset, _ = read_safetensors_file(path, what, error)
    return infos, data_offset

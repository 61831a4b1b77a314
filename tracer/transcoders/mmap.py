"""Memory-mapped safetensors: read only the rows you index.

A Qwen3-4B transcoder set is 163,840 features x 36 layers; its decoders must never sit in RAM
whole. :class:`MappedTensor` maps one tensor of a safetensors file and reads rows on demand
(fancy indexing touches only the pages of those rows). The header is parsed and validated here,
so a corrupt file gets an error that names it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tracer.errors import TranscoderFormatError
from tracer.mapped import safetensors_header

_DTYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "F64": (np.dtype("<f8"), torch.float64),
    "F32": (np.dtype("<f4"), torch.float32),
    "F16": (np.dtype("<f2"), torch.float16),
    "BF16": (np.dtype("<u2"), torch.bfloat16),  # numpy has no bf16: read raw bits, view in torch
    "I64": (np.dtype("<i8"), torch.int64),
    "I32": (np.dtype("<i4"), torch.int32),
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path) -> tuple[dict[str, TensorInfo], int]:
    """Parse and validate a safetensors header: ({name: info}, byte offset of the data)."""
    try:
        header, data_offset = safetensors_header(path)
    except FileNotFoundError:
        raise TranscoderFormatError(f"transcoder file must exist; got {str(path)!r}. Check the path.") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise TranscoderFormatError(
            f"transcoder file must be valid safetensors; got {str(path)!r} ({err}). "
            "The file is corrupt or truncated: re-download or re-export it."
        ) from None
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]  # type: ignore[index]
        if entry["dtype"] not in _DTYPES:  # type: ignore[index]
            raise TranscoderFormatError(
                f"transcoder file must be valid safetensors; got {str(path)!r} with a bad entry "
                f"{name!r} ({entry['dtype']}, offsets {begin}..{end}). "  # type: ignore[index]
                "The file is corrupt or truncated: re-download or re-export it."
            )
        infos[name] = TensorInfo(entry["dtype"], tuple(entry["shape"]), begin, end)  # type: ignore[index]
    return infos, data_offset


class MappedTensor:
    """One tensor of a safetensors file, memory-mapped; index rows to read them."""

    def __init__(self, path: Path, info: TensorInfo, data_offset: int) -> None:
        self.path = path
        self.shape = info.shape
        np_dtype, self.torch_dtype = _DTYPES[info.dtype]
        count = int(np.prod(info.shape)) if info.shape else 1
        if count * np_dtype.itemsize != info.end - info.begin:
            raise TranscoderFormatError(
                f"tensor size must match its shape in {str(path)!r}; shape {info.shape} of "
                f"{info.dtype} needs {count * np_dtype.itemsize} bytes, got {info.end - info.begin}."
            )
        # mode "c": copy-on-write, so torch gets a writable array and the file is never modified
        self._array = np.memmap(path, dtype=np_dtype, mode="c", offset=data_offset + info.begin,
                                shape=info.shape)

    def _to_torch(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.view(torch.bfloat16) if self.torch_dtype == torch.bfloat16 else t

    def rows(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Rows ``index`` of the first dimension (reads only those)."""
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        return self._to_torch(self._array[idx])

    def full(self) -> torch.Tensor:
        """The whole tensor, read into memory."""
        return self._to_torch(np.asarray(self._array))


def open_safetensors(path: Path) -> dict[str, MappedTensor]:
    """Map every tensor of a safetensors file (lazily; nothing is read yet)."""
    infos, offset = read_header(path)
    return {name: MappedTensor(path, info, offset) for name, info in infos.items()}

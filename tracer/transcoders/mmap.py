"""Memory-mapped safetensors: read only the rows you index.

A Qwen3-4B transcoder set is 163,840 features x 36 layers; its decoders must never sit in RAM
whole. :class:`MappedTensor` maps one tensor of a safetensors file and reads rows on demand
(fancy indexing touches only the pages of those rows). The header is parsed and validated here
(:func:`read_safetensors_header`, also used for model weights), so a corrupt file gets a one-line
error that names it. Rows are checked for NaN/inf as they are read (:mod:`tracer.weights`).
"""

from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import torch

from tracer.errors import TranscoderFormatError
from tracer.mapped import NUMPY_DTYPES, SAFETENSORS_DTYPES
from tracer.safetensors_header import TensorInfo, read_safetensors_header
from tracer.weights import FileRegion, check_file, check_weight

_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32")
"""The safetensors dtypes a transcoder tensor may have (numpy reads BF16 as raw bits, viewed in torch)."""


def read_header(path: Path) -> tuple[dict[str, TensorInfo], int]:
    """:func:`read_safetensors_header` of a transcoder file (errors are TranscoderFormatError)."""
    return read_safetensors_header(path, "transcoder file", TranscoderFormatError)


class MappedTensor:
    """One tensor of a safetensors file, memory-mapped; index rows to read them (checked finite)."""

    def __init__(self, path: Path, info: TensorInfo, data_offset: int, name: str = "tensor") -> None:
        self.path, self.name = path, name
        self.shape = info.shape
        self.region = FileRegion(str(path), data_offset + info.begin, info.end - info.begin, info.dtype, info.shape)
        """Where the tensor's bytes lie (the load-time check reads them from the file)."""
        if info.dtype not in _DTYPES:
            raise TranscoderFormatError(f"{name} in {str(path)!r} must be F64, F32, F16, BF16, I64 or I32; got "
                                        f"{info.dtype}. Re-export the transcoders in a float dtype.")
        self.torch_dtype = SAFETENSORS_DTYPES[info.dtype]
        np_dtype = NUMPY_DTYPES[self.torch_dtype]
        # mode "c": copy-on-write, so torch gets a writable array and the file is never modified
        self._array = np.memmap(path, dtype=np_dtype, mode="c", offset=data_offset + info.begin,
                                shape=info.shape) if info.end > info.begin else np.zeros(info.shape, np_dtype)

    def _to_torch(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.view(torch.bfloat16) if self.torch_dtype == torch.bfloat16 else t

    def rows(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Rows ``index`` of the first dimension (reads only those, and checks them)."""
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        out = self._to_torch(self._array[idx])
        check_weight(out, self.name, str(self.path), TranscoderFormatError, rows=torch.from_numpy(idx))
        return out

    def full(self) -> torch.Tensor:
        """The whole tensor (a view of the mapping; pages are read on use). The file was checked
        when it was opened (:func:`open_safetensors`)."""
        return self._to_torch(np.asarray(self._array))


def open_safetensors(path: Path, check: bool = True) -> dict[str, MappedTensor]:
    """Map every tensor of a safetensors file (lazily: no page of the mapping is touched), after
    the load-time check of its values, read from the file (:func:`check_mapped`), unless `check`
    is False (the caller checks later, e.g. a whole set at once)."""
    infos, offset = read_header(path)
    tensors = {name: MappedTensor(path, info, offset, name) for name, info in infos.items()}
    if check:
        check_mapped(tensors)
    return tensors


def check_mapped(tensors: Mapping[str, object], skip: Collection[str] = ()) -> None:
    """The load-time check (:func:`tracer.weights.check_file`) of one file's mapped tensors, but
    those named in `skip` (decoders: every use reads rows through ``decoder_rows``, which checks
    each row exactly as it is read)."""
    regions = {name: t.region for name, t in tensors.items() if isinstance(t, MappedTensor) and name not in skip}
    if regions:
        check_file(regions, error=TranscoderFormatError)

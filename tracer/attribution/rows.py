"""Where the adjacency rows go: a matrix in memory, or a graph file being written.

The engine writes every row into a :class:`RowSink` and reports finished rows in order
(:meth:`RowSink.done`); a file sink (:mod:`tracer.graph.stream`) then checksums and releases them,
so that resident memory does not grow with the graph. Rows are computed straight into the
destination when it has the sweep's dtype and device; otherwise (an npz file stores float32, a
file lives in host memory) each batch is computed into a small zeroed buffer and copied, which
gives the same numbers: the sweep only accumulates into zeroed rows.
"""

from collections.abc import Callable

import torch
from torch import Tensor


class RowSink:
    """The final ``(n_nodes, n_nodes)`` adjacency, filled row by row."""

    def __init__(self, dest: Tensor, dtype: torch.dtype, device: torch.device,
                 on_done: Callable[[int], None] | None = None,
                 on_zero: Callable[[int], None] | None = None) -> None:
        self.dest = dest
        """(n_nodes, n_nodes) destination"""
        self.dtype, self.device = dtype, device
        self._on_done, self._on_zero = on_done, on_zero
        self.direct = dest.dtype == dtype and dest.device == device
        """rows are computed in place"""

    @property
    def n_nodes(self) -> int:
        return int(self.dest.shape[0])

    def compute(self, fill: Callable[[Tensor, int], None], row: int, n_rows: int) -> None:
        """``fill(buffer, first_row)`` adds rows ``row .. row + n_rows`` of the adjacency into a
        zeroed buffer: the destination itself, or a staging buffer that is then copied."""
        if self.direct:
            fill(self.dest, row)
            return
        staged = torch.zeros(n_rows, self.n_nodes, dtype=self.dtype, device=self.device)  # (n_rows, n_nodes)
        fill(staged, 0)
        self.put(row, staged)

    def put(self, row: int, values: Tensor) -> None:
        """Write finished rows ``row .. row + len(values)`` (converting dtype and device)."""
        self.dest[row:row + values.shape[0]].copy_(values)

    def done(self, end: int) -> None:
        """Every row below `end` is final (called with increasing `end`)."""
        if self._on_done is not None:
            self._on_done(end)

    def zero(self, end: int) -> None:
        """Rows from the last finished one up to `end` stay zero (nodes without inputs)."""
        if self._on_zero is not None:
            self._on_zero(end)

"""An explicit, scoped change of torch's intra-op thread count (never a silent global one)."""

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; the previous count is restored after.

    torch's thread count is process-wide: tracer uses this only around work that runs on its own
    parallel single-threaded workers (attribution sweeps) or must match circuit-tracer's
    reduction order (pruning), and documents it there.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)

"""Up-front memory checks: estimate what an allocation needs and compare it with what is free.

A graph's adjacency is ``N x N`` with ``N = selected features + errors + tokens + logits``
(``errors = n_layers * n_pos``, ``tokens = n_pos``); at 100k nodes that is 40 GB in float32. The
attribution engine calls :func:`check_adjacency_fits` once before allocating it, and the ``.pt``
importer calls :func:`check_fits` before materialising a tensor, so that a graph too big for the
machine stops with a one-line error instead of an allocator traceback or the OOM killer.
"""

from pathlib import Path

import torch

from tracer.errors import MemoryLimitError


def graph_nodes(n_features: int, n_layers: int, n_pos: int, n_logits: int) -> int:
    """N: selected features + error nodes (n_layers * n_pos) + token nodes (n_pos) + logits."""
    return n_features + (n_layers + 1) * n_pos + n_logits


def adjacency_bytes(n_rows: int, n_cols: int, dtype: torch.dtype) -> int:
    """Bytes of an ``(n_rows, n_cols)`` matrix of `dtype`."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(n_rows) * int(n_cols) * itemsize


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """Room left under this process's cgroup memory limit (v2, else v1), or None."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            return max(0, limit - usage)
    return None


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory free for a new allocation on `device`, or None when it cannot be told."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free + cached)
    if dev.type != "cpu":
        return None
    found = [x for x in (_meminfo_available(), _cgroup_available()) if x is not None]
    return min(found) if found else None


def check_fits(n_bytes: int, device: torch.device | str, what: str, remedy: str = "",
               fields: tuple[str, ...] = (), available: int | None = None) -> None:
    """Raise :class:`MemoryLimitError` if `n_bytes` exceed the memory available on `device`.

    `available` overrides the measurement (tests). `remedy` ends the message; `fields` names
    the config fields it mentions (a front end may add its own spelling).
    """
    free = available_bytes(device) if available is None else available
    if free is None or n_bytes <= free:
        return
    raise MemoryLimitError(f"{what} must fit in memory; it needs {format_bytes(n_bytes)} but only "
                           f"{format_bytes(free)} are available on {torch.device(device)}. {remedy}".rstrip(),
                           fields=fields)


def check_adjacency_fits(n_nodes: int, n_bytes: int, dtype: torch.dtype, device: torch.device | str,
                         available: int | None = None, *, streamed: bool = False) -> None:
    """The attribution engine's guard before allocating the adjacency of `n_nodes` nodes.

    `n_bytes` is what the engine will allocate for it (see :func:`adjacency_bytes`). The message
    states the size and offers the remedies: fewer feature nodes (``max_feature_nodes``) or a
    half-precision adjacency (``adjacency_dtype``) and, unless the rows are already `streamed`, streaming
    the graph into a file (``out``), which keeps only a capped graph's row buffer in memory.
    """
    dtype_name = str(dtype).removeprefix("torch.")
    half = "" if dtype in (torch.bfloat16, torch.float16) else \
        " or store it in bfloat16/float16 (adjacency_dtype) to halve it"
    stream = "" if streamed else "; or stream the graph into a file (out), which needs disk, not memory"
    check_fits(n_bytes, device, f"the adjacency of {n_nodes:,} nodes ({dtype_name})",
               remedy=f"Cap the feature nodes (max_feature_nodes){half}{stream}.",
               fields=("max_feature_nodes", "adjacency_dtype"), available=available)


__all__ = ["adjacency_bytes", "available_bytes", "check_adjacency_fits", "check_fits", "format_bytes",
           "graph_nodes"]

"""Measuring: child processes (wall time, peak RSS), per-phase peak RSS, a GEMM peak, the machine.

* :func:`run_measured` starts a command and reaps it with ``os.wait4``, whose rusage gives the
  child's own peak RSS (``ru_maxrss``, KiB on Linux) -- the whole process, start-up included.
  Interrupted (Ctrl-C, SIGTERM), it stops the child with SIGTERM first (:func:`stop_child`), so
  that the child removes its own temp files; :func:`remove_leftover_temps` removes those of a
  child that had to be killed.
* :func:`reset_peak_rss` / :func:`peak_rss_mb`: inside a process, the kernel's peak counter
  (VmHWM) is reset by writing "5" to ``/proc/self/clear_refs``, so that the peak of one phase
  can be read afterwards. Where that is unsupported the peak is reported as None, never guessed.
* :func:`gemm_peak`: float32 matrix-multiply GFLOP/s with the benchmark's thread count, the
  yardstick for the engine's achieved FLOP rate.
"""

import logging
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from tracer.io import TEMP_PREFIX, remove_stale_temps

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measured:
    """A finished child process."""

    returncode: int
    wall_s: float
    """Seconds from start to exit (the whole process)."""
    max_rss_mb: float | None
    """Peak resident set of the child itself (rusage), MiB."""
    log: Path
    timed_out: bool = False
    started: float | None = None
    """Wall-clock time (``time.time()``) just before the child was started."""


def run_measured(cmd: list[str], *, log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float | None = None) -> Measured:
    """Run `cmd` with stdout and stderr to `log`; wall time and the child's own peak RSS.

    With `timeout` (seconds) the child is killed when it runs longer (``timed_out``).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    logger.debug("running %s", " ".join(cmd))
    with open(log, "wb") as fh:
        started = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer is not None:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: let the child clean up, then re-raise
            stop_child(proc)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    rss_kb = usage.ru_maxrss if sys.platform.startswith("linux") else usage.ru_maxrss / 1024
    timed_out = timeout is not None and timeout != 0 and proc.returncode < 0 and wall >= timeout
    return Measured(proc.returncode, wall, round(rss_kb / 1024, 1) if rss_kb else None, log, timed_out,
                    started)


STOP_GRACE_S = 10.0
"""Seconds an interrupted run's child gets after SIGTERM to remove its temp files before SIGKILL."""


def stop_child(proc: "subprocess.Popen[bytes]", grace: float | None = None) -> None:
    """SIGTERM `proc` and wait up to `grace` seconds (default :data:`STOP_GRACE_S`), then SIGKILL;
    it is reaped in any case (also when a second interrupt cuts the wait short)."""
    grace = STOP_GRACE_S if grace is None else grace
    try:
        proc.terminate()
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        logger.warning("child %d did not stop %.1f s after SIGTERM; killing it", proc.pid, grace)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()


def remove_leftover_temps(folder: Path) -> list[Path]:
    """Remove the temp files that stopped children left anywhere under `folder`; return them.

    Ours (``.mwtmp-*``) go when their process is gone (:func:`tracer.io.remove_stale_temps`);
    ``ct_runner.py``'s (``<name>.tmp`` in its ``ct-*`` folders) go as well: call this only when
    no child writes under `folder` any more.
    """
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink())]:
        removed += remove_stale_temps(sub)
    for path in folder.glob("ct-*/*.tmp"):
        if not path.name.startswith(TEMP_PREFIX) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def log_tail(path: Path, n_lines: int = 1) -> str:
    """The last non-empty lines of a log (for one-line error messages)."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n_lines:])


# ----------------------------------------------------------------------------- in-process peaks
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS counter to its current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(was_reset: bool) -> float | None:
    """Peak RSS since the last successful :func:`reset_peak_rss` (None if there was none)."""
    kb = _status_kb("VmHWM") if was_reset else None
    return None if kb is None else round(kb / 1024, 1)


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024, 1)


# ----------------------------------------------------------------------------- GEMM peak, machine
class GemmPeak(TypedDict):
    """What :func:`gemm_peak` measured."""

    n: int
    dtype: str
    device: str
    threads: int
    iterations: int
    seconds: float
    gflops: float


def gemm_peak(*, seconds: float = 2.0, threads: int | None = None, device: str = "cpu",
              n: int | None = None) -> GemmPeak:
    """Sustained float32 GEMM GFLOP/s (n x n @ n x n, repeated for ~`seconds`)."""
    import torch

    n = n or (2048 if device == "cpu" else 8192)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(device)
        b = torch.randn(n, n, generator=gen).to(device)
        out = torch.empty(n, n, device=device)
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        torch.matmul(a, b, out=out)  # warm-up
        sync()
        iters, t0 = 0, time.perf_counter()
        while True:
            torch.matmul(a, b, out=out)
            iters += 1
            if iters % 4 == 0 or device == "cpu":
                sync()
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds:
                    break
        gflops = 2 * n**3 * iters / elapsed / 1e9
        return {"n": n, "dtype": "float32", "device": device, "threads": torch.get_num_threads(),
                "iterations": iters, "seconds": round(elapsed, 3), "gflops": round(gflops, 2)}
    finally:
        torch.set_num_threads(old)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info(device: str) -> dict[str, object]:
    import importlib.metadata as md

    import torch

    def version(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, object] = {
        "hostname": platform.node(), "platform": platform.platform(), "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(), "usable_cores": usable, "memory_gb": _mem_total_gb(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0], "torch": torch.__version__, "transformers": version("transformers"),
        "manifold_workbench": version("manifold-workbench"), "torch_threads_default": torch.get_num_threads(),
        "mkl": bool(torch.backends.mkl.is_available()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info

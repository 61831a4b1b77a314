"""Interruptions: SIGINT, SIGTERM or SIGKILL at a random point of trace, prune, export or demo leaves
every output path either absent or complete (old or new, never part of one).

A driver process imports everything, says "ready", then runs the four commands in a loop (in
process, so that the kill lands in their work, not in Python's start-up); the test kills it after
a random delay and checks every output file. A SIGKILL may leave a ``.mwtmp-*`` temp file: the
next run of a command writing into that folder removes it, which the last check verifies.
"""

import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tracer.graph import Graph, load_prune_result
from tracer.io import remove_stale_temps
from workbench.paths import world_dir

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Two days after Friday is"
DRIVER = """
import signal, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
import tracer.attribution, tracer.graph.export, tracer.models, workbench.demo, workbench.cmd_graph  # warm imports
from transformers import AutoTokenizer  # export loads the graph's tokenizer
from workbench.cli import main

def _term(signum, frame):
    raise KeyboardInterrupt  # between commands; inside one, the CLI's own handler applies

signal.signal(signal.SIGTERM, _term)
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent may have ignored SIGINT
commands = {commands!r}
print("ready", flush=True)
while True:
    try:
        for argv in commands:
            rc = main(argv)
            if rc in (130, 143):
                raise KeyboardInterrupt
            assert rc == 0, (argv, rc)
        print("round", flush=True)
    except KeyboardInterrupt:
        print("stopped", flush=True)
        if sys.stdin.readline().strip() != "go":
            break
"""


def _commands(out: Path) -> list[list[str]]:
    world = world_dir()
    g = str(out / "g.safetensors")
    return [
        ["trace", "--model", str(world / "model"), "--transcoders", str(world / "plt"), "--prompt", PROMPT,
         "--out", g, "-q"],
        ["prune", g, "--out", str(out / "p.npz"), "-q"],
        ["export", g, "--out", str(out / "viewer"), "--labels", str(world / "labels_plt.jsonl"), "-q"],
        ["demo", "--out", str(out / "demo"), "-q"],
    ]


def _start(out: Path) -> subprocess.Popen[str]:
    code = DRIVER.format(root=str(ROOT), commands=_commands(out))
    scratch = out.parent / "tmp"  # a SIGKILL leaves the demo's scratch folders: keep them out of the system's
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    log_path = out.parent / "driver.log"
    with open(log_path, "a") as log:  # the child's stderr, shown if it fails
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for ln in proc.stdout:
            lines.put(ln)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    proc.lines, proc.log_path = lines, log_path  # type: ignore[attr-defined]
    assert _next(proc) == "ready"
    return proc


def _next(proc: subprocess.Popen[str], timeout: float = 180.0) -> str:
    """The driver's next status line (its commands' own output is skipped); fails rather than hangs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = proc.lines.get(timeout=max(0.1, deadline - time.monotonic()))  # type: ignore[attr-defined]
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"driver silent for {timeout:.0f}s: {proc.log_path.read_text()[-3000:]}") from None  # type: ignore[attr-defined]
        if not line:
            raise AssertionError(f"driver exited with {proc.wait()}: "
                                 f"{proc.log_path.read_text()[-3000:]}")  # type: ignore[attr-defined]
        if line.strip() in ("ready", "round", "stopped"):
            return line.strip()


def _complete(path: Path) -> None:
    """Raise unless `path` is a whole file of its kind."""
    if path.suffix == ".safetensors" and "manifold" in path.parts:
        from safetensors.numpy import load_file

        load_file(path)  # a result's arrays (demo/manifold/: fits, discovery)
    elif path.suffix == ".safetensors":
        Graph.load(path)
    elif path.suffix == ".png":
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), path
    elif path.suffix == ".svg":
        assert path.read_text(encoding="utf-8").rstrip().endswith("</svg>"), path
    elif path.name == "p.npz":
        load_prune_result(path)
    elif path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".html":
        assert path.read_text(encoding="utf-8").rstrip().endswith("</html>"), path
    else:
        raise AssertionError(f"unexpected output file {path}")


def check_outputs(out: Path, allow_temps: bool) -> list[Path]:
    """Every file under `out` is complete; returns the temp files found (only SIGKILL may leave some)."""
    temps = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.name.startswith(".mwtmp-"):
            temps.append(path)
        else:
            _complete(path)
    assert allow_temps or not temps, temps
    return temps


def _digest(folder: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_random_kills_leave_outputs_absent_or_complete(tmp_path):
    world_before = _digest(world_dir())
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(int(os.environ.get("MW_KILL_SEED", "0")))
    proc = _start(out)
    t = time.perf_counter()
    assert _next(proc) == "round"  # one clean round: how long the work takes
    work = time.perf_counter() - t
    check_outputs(out, allow_temps=False)
    log = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        delay = rng.uniform(0.0, work)
        time.sleep(delay)
        proc.send_signal(sig)
        deadline = time.monotonic() + 120
        while _next(proc) != "stopped":  # (a round may end before the signal lands)
            assert time.monotonic() < deadline, f"the driver ignored {sig.name}"
        log.append((sig.name, round(delay, 2)))
        check_outputs(out, allow_temps=False)  # SIGINT / SIGTERM: every temp file was removed
        proc.stdin.write("go\n")  # type: ignore[union-attr]
    for last in (False, True):
        delay = rng.uniform(0.0, work)
        time.sleep(delay)
        proc.kill()
        assert proc.wait(60) == -signal.SIGKILL
        log.append(("SIGKILL", round(delay, 2)))
        check_outputs(out, allow_temps=True)
        if not last:
            proc = _start(out)
    for folder in {p.parent for p in out.rglob(".mwtmp-*")}:  # what a later run's output check does
        remove_stale_temps(folder)
    assert check_outputs(out, allow_temps=False) == []
    assert _digest(world_dir()) == world_before
    print(f"one round {work:.1f}s; interrupts (signal, delay s): {log}")


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "KeyboardInterrupt")])
def test_an_interrupt_swallowed_by_a_gc_callback_is_delivered_again(signum, raised):
    """A signal whose handler runs inside a __del__ (or a weakref callback) raises there, and Python
    drops that exception ("Exception ignored in ..."); seen as a demo that ran on after SIGTERM while
    matplotlib's objects were collected. The CLI's guard sends the signal again until it interrupts."""
    from workbench.cli_safety import Terminated, terminate_on_sigterm

    class Victim:
        def __del__(self) -> None:
            os.kill(os.getpid(), signum)
            for _ in range(10_000):  # the handler runs in here; its exception is swallowed
                pass

    hook = sys.unraisablehook
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            with terminate_on_sigterm():
                victim = Victim()
                del victim
                deadline = time.monotonic() + 5  # without the redelivery this loop just ends
                while time.monotonic() < deadline:
                    time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, previous_int)
    assert type(caught.value).__name__ == raised
    assert isinstance(caught.value, Terminated) == (signum == signal.SIGTERM)
    assert sys.unraisablehook is hook  # restored

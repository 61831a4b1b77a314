"""`workbench bench` refuses bad input before any work and leaves no temp files when interrupted.

The interrupt tests run tiny fake children (``python -c``) in place of ``workbench trace``: each
writes a temp file named like :func:`tracer.io.temp_name`'s, says so in a marker file and sleeps;
the test process is then interrupted (SIGALRM raising an exception in the main thread, as SIGTERM
raises ``Terminated`` in the CLI) while it waits for the child.
"""

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracer.errors import WorkbenchError
from tracer.io import TEMP_PREFIX, temp_name
from workbench.bench import cli as bench_module
from workbench.bench import procs, run
from workbench.bench.build import BuiltModel
from workbench.bench.config import BenchConfig, ModelSpec

FAKE_CHILD = """
import os, pathlib, signal, sys, time
argv = sys.argv
folder = pathlib.Path(argv[argv.index("--out") + 1]).parent if "--out" in argv else pathlib.Path(argv[1])
folder.mkdir(parents=True, exist_ok=True)
tmp = folder / ".mwtmp-{{}}-{host}-abcdefgh.tmp".format(os.getpid())
def on_term(signum, frame):
    tmp.unlink()
    (folder / "cleaned").write_text("yes")
    sys.exit(0)
signal.signal(signal.SIGTERM, {on_term})
tmp.write_bytes(b"0" * 4096)
(folder / "ready").write_text(str(os.getpid()))
time.sleep(60)
"""


class Interrupted(Exception):
    """Stands in for KeyboardInterrupt / Terminated (which pytest itself would act on)."""


def fake_child(*, cleans_up: bool) -> str:
    """A child that writes a temp file and sleeps; on SIGTERM it removes it, or ignores SIGTERM."""
    host = temp_name()[len(TEMP_PREFIX):].split("-")[1]
    return FAKE_CHILD.format(host=host, on_term="on_term" if cleans_up else "signal.SIG_IGN")


@contextlib.contextmanager
def interrupt_when(marker: Path, timeout: float = 30.0) -> Iterator[None]:
    """Raise :class:`Interrupted` in the main thread as soon as `marker` exists."""

    def raise_interrupted(signum: int, frame: object) -> None:
        raise Interrupted()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        watcher.join()
        signal.signal(signal.SIGALRM, previous)


def temps_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(TEMP_PREFIX) or p.name.endswith(".tmp")]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------------------- interrupts
def test_interrupted_run_measured_lets_the_child_clean_up(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    cmd = [sys.executable, "-c", fake_child(cleans_up=True), str(folder)]
    with interrupt_when(folder / "ready"), pytest.raises(Interrupted):
        procs.run_measured(cmd, log=tmp_path / "child.log")
    assert (folder / "cleaned").exists(), "the child was killed instead of asked to stop (SIGTERM)"
    assert temps_under(folder) == []


def test_interrupted_run_measured_kills_a_child_that_ignores_sigterm(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "STOP_GRACE_S", 0.3)
    folder = tmp_path / "out"
    cmd = [sys.executable, "-c", fake_child(cleans_up=False), str(folder)]
    t0 = time.monotonic()
    with interrupt_when(folder / "ready"), pytest.raises(Interrupted):
        procs.run_measured(cmd, log=tmp_path / "child.log")
    assert time.monotonic() - t0 < 30
    pid = int((folder / "ready").read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


def test_interrupted_case_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child ignores SIGTERM, so it is killed: the case's cleanup must remove its temp file."""
    monkeypatch.setattr(procs, "STOP_GRACE_S", 0.3)
    monkeypatch.setattr(run, "workbench_command", lambda: ([sys.executable, "-c", fake_child(cleans_up=False)], {}))
    built = BuiltModel(root=tmp_path / "model", manifest={"spec": {"vocab": 64}})
    cfg = BenchConfig(transcoders=("plt",), n_tokens=(6,), run_baseline=False, threads=1, work_dir=tmp_path)
    case_dir = tmp_path / "runs" / "plt-n6"
    with interrupt_when(case_dir / "ours-r0" / "ready"), pytest.raises(Interrupted):
        run.run_case(built, "plt", 6, cfg, None, case_dir, [], None)
    assert (case_dir / "ours-r0" / "ready").exists()  # the child did write its temp file
    assert temps_under(case_dir) == []


def test_remove_leftover_temps_keeps_results_and_live_temps(tmp_path: Path) -> None:
    ours, ct = tmp_path / "ours-r0" / "runner", tmp_path / "ct-nnsight-r0"
    ours.mkdir(parents=True)
    ct.mkdir()
    host = temp_name()[len(TEMP_PREFIX):].split("-")[1]
    dead = ours / f"{TEMP_PREFIX}{dead_pid()}-{host}-abcdefgh.tmp"
    live = ours / temp_name()  # this process's: it may still be writing
    leftovers = [dead, ct / "graph.npz.tmp", ct / "result.json.tmp"]
    kept = [live, ours / "result.json", ct / "graph.npz"]
    for path in leftovers + kept:
        path.write_text("x")
    assert sorted(procs.remove_leftover_temps(tmp_path)) == sorted(leftovers)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in leftovers)
    assert procs.remove_leftover_temps(tmp_path / "missing") == []


# ----------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("bad", [dict(final_norm_scale=math.inf), dict(final_norm_scale=math.nan),
                                 dict(final_norm_scale=-math.inf), dict(final_norm_scale=0.0),
                                 dict(final_norm_scale=1e30), dict(target_l0=math.inf), dict(target_l0=math.nan),
                                 dict(seed=2**63), dict(seed=2**64 - 1), dict(seed=-1), dict(seed=1.5),
                                 dict(seed=True)])
def test_model_spec_rejects_non_finite_and_out_of_range(bad: dict[str, object]) -> None:
    with pytest.raises(WorkbenchError, match="must"):
        ModelSpec(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [dict(gemm_seconds=math.inf), dict(gemm_seconds=math.nan), dict(gemm_seconds=0.0),
                                 dict(gemm_seconds=1e300), dict(baseline_timeout=math.inf),
                                 dict(baseline_timeout=math.nan), dict(baseline_timeout=0.0),
                                 dict(baseline_timeout=1e300), dict(prompt_seed=2**63), dict(prompt_seed=-1),
                                 dict(n_tokens=(4, 4)), dict(n_tokens=(8, 4, 8)), dict(transcoders=("plt", "plt")),
                                 dict(baseline_backends=("nnsight", "nnsight"))])
def test_bench_config_rejects_non_finite_out_of_range_and_repeats(bad: dict[str, object]) -> None:
    with pytest.raises(WorkbenchError, match="must"):
        BenchConfig(**bad)  # type: ignore[arg-type]


def test_edges_of_the_ranges_are_accepted() -> None:
    assert ModelSpec(seed=2**63 - 1, final_norm_scale=1e6).seed == 2**63 - 1
    cfg = BenchConfig(prompt_seed=0, gemm_seconds=3600, baseline_timeout=1e-3, n_tokens=(4, 8))
    assert cfg.n_tokens == (4, 8)


@pytest.mark.parametrize("flags, message", [
    (["--final-norm-scale", "inf"], "--final-norm-scale must be a finite number"),
    (["--gemm-seconds", "inf"], "--gemm-seconds must be a finite number"),
    (["--gemm-seconds", "nan"], "--gemm-seconds must be a finite number"),
    (["--baseline-timeout", "inf"], "--baseline-timeout must be a finite number"),
    (["--seed", str(2**63)], "--seed must be an integer in [0, 2**63)"),
    (["--prompt-seed", str(2**64)], "--prompt-seed must be an integer in [0, 2**63)"),
    (["--n-tokens", "4,4"], "--n-tokens must name each entry once; got '4' twice"),
    (["--n-tokens", "1 6"], "--n-tokens must be comma-separated integers; got '1 6'"),  # it read 16
    (["--n-tokens", "8,,16"], "--n-tokens must be comma-separated entries, none empty"),
    (["--device", "cuda:x"], "--device must be"),  # a traceback from the GEMM peak
    (["--n-tokens", "16,5000"], "--n-tokens must be <= the benchmark model's context (4096 tokens); got 5000"),
    (["--n-tokens", "100000", "--calib-len", "8"], "context (4096 tokens); got 100000"),
])
def test_cli_refuses_bad_values_before_any_work(bench_cli: Any, tmp_path: Path, flags: list[str], message: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the GEMM phase ran")

    monkeypatch.setattr(procs, "gemm_peak", no_work)
    monkeypatch.setattr(run, "gemm_peak", no_work)
    work = tmp_path / "work"
    status, _, err = bench_cli("--no-baseline", "--work-dir", str(work), "--out", str(tmp_path / "b.json"), *flags)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not work.exists() and not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("sub", ["", "models", "runs"])
def test_cli_refuses_a_work_dir_that_is_a_file_up_front(bench_cli: Any, tmp_path: Path, sub: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(run, "run_benchmark", no_work)
    work = tmp_path / "work"
    if sub:
        work.mkdir()
    (work / sub if sub else work).write_text("not a folder")
    status, _, err = bench_cli("--no-baseline", "--work-dir", str(work), "--out", str(tmp_path / "b.json"))
    assert status == 2 and "--work-dir" in err and "must be a folder" in err, err
    assert len(err.strip().splitlines()) == 1


def test_cli_report_is_strict_json(bench_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_benchmark(*args: object, **kwargs: object) -> dict[str, object]:
        return {"summary": [], "errors": [], "gemm_peak": {"gflops": math.inf}, "ratio": math.nan}

    monkeypatch.setattr(run, "run_benchmark", fake_benchmark)
    out = tmp_path / "b.json"
    status, stdout, _ = bench_cli("--no-baseline", "--work-dir", str(tmp_path / "work"), "--out", str(out))

    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    assert status == 0 and "report:" in stdout
    doc = json.loads(out.read_text(), parse_constant=refuse)
    assert doc["gemm_peak"]["gflops"] is None and doc["ratio"] is None


def test_help_states_each_default_once() -> None:
    parser = argparse.ArgumentParser(prog="workbench")
    sub = parser.add_subparsers()
    bench_module.register(sub)
    bench = sub.choices["bench"]
    helps = {a.option_strings[0]: a.help or "" for a in bench._actions if a.option_strings}
    assert "(default None)" not in bench.format_help()
    for flag in ("--head-dim", "--d-mlp", "--clt-d-transcoder", "--threads", "--max-feature-nodes",
                 "--baseline-timeout", "--work-dir"):
        assert helps[flag].count("default") == 1, helps[flag]
    assert "XDG_CACHE_HOME" in helps["--work-dir"] and "~/.cache/manifold-workbench/bench" in helps["--work-dir"]
    assert helps["--gemm-seconds"].endswith("(default 2.0)") and helps["--seed"].endswith("(default 0)")


def test_a_baseline_that_is_not_installed_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """QA pass 30: without circuit-tracer the default --baseline measured ours only, without a word."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "circuit_tracer" else real(name, *a))
    cfg = BenchConfig(transcoders=("plt",), n_tokens=(6,), work_dir=tmp_path)
    with caplog.at_level("WARNING"):
        assert run.resolve_baseline(cfg, ModelSpec()) is None
    assert "circuit-tracer is not installed here: measuring ours only" in caplog.text
    caplog.clear()
    import dataclasses

    assert run.resolve_baseline(dataclasses.replace(cfg, run_baseline=False), ModelSpec()) is None
    assert "circuit-tracer" not in caplog.text  # --no-baseline: nothing to say

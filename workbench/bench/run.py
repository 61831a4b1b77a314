"""The benchmark run: build (or reuse) the model, measure ours and circuit-tracer, compare, report.

Phases (one function each):

0. ``resolve_baseline``: which interpreter runs circuit-tracer, and with which back ends (checked
   up front by running ``ct_runner.py --probe`` with it);
1. ``machine_info`` + ``gemm_peak`` (same machine, same run, same thread count);
2. ``ensure_built``: the synthetic model and transcoders, cached by the spec's hash;
3. per (transcoder kind, n_tokens), ``repeats`` times: the ``workbench trace`` CLI (whole process),
   ``ours_runner`` (attribute and prune in-process) and ``ct_runner.py`` per back end;
4. ``compare_graphs`` / ``compare_prune`` on the first repeat's outputs;
5. the summary rows and scaling fits (:mod:`workbench.bench.report`).

Every child runs with the same torch thread count (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and
``torch.set_num_threads``), offline, with its output in a log next to its results. A failed child
is recorded under ``errors`` and the run goes on (circuit-tracer may run out of memory at sizes we
handle); the CLI then exits 1.
"""

import dataclasses
import datetime as dt
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from tracer.errors import WorkbenchError
from workbench.bench.build import BuiltModel, check_buildable, ensure_built, random_prompt
from workbench.bench.compare import alignment, compare_graphs, compare_prune, score_deltas
from workbench.bench.config import BenchConfig, ModelSpec
from workbench.bench.procs import Measured, gemm_peak, log_tail, machine_info, remove_leftover_temps, run_measured
from workbench.bench.records import BenchReport, Case, CtRuns, JSONRecord, OursRuns
from workbench.bench.report import scaling, summary_rows

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CT_RUNNER = Path(__file__).resolve().parent / "ct_runner.py"


@dataclass(frozen=True)
class Baseline:
    python: str
    backends: tuple[str, ...]
    versions: JSONRecord


# ----------------------------------------------------------------------------- phase 0
def resolve_baseline(cfg: BenchConfig, spec: ModelSpec) -> Baseline | None:
    """The circuit-tracer interpreter and back ends, or None when no baseline runs."""
    if not cfg.run_baseline:
        return None
    python = cfg.baseline_python
    if python is None:
        if not cfg.baseline_backends and importlib.util.find_spec("circuit_tracer") is None:
            logger.warning("circuit-tracer is not installed here: measuring ours only (pass --baseline-python PYTHON "
                           "of an environment that has it, or --no-baseline to say so)")
            return None
        python = sys.executable
    backends = cfg.baseline_backends or (("transformerlens",) if spec.arch == "qwen3" else ("nnsight",))
    if spec.arch != "qwen3" and "transformerlens" in backends:
        raise WorkbenchError(f"baseline backend must be nnsight for arch {spec.arch!r}; got transformerlens. "
                             "TransformerLens hard-codes the dims of official Llama names; use "
                             "--baseline-backend nnsight.")
    info = probe_baseline(python)
    for backend in backends:
        status = info["backends"].get(backend)
        if status is not True:
            raise WorkbenchError(f"baseline backend {backend!r} must import in {python!r}; got {status!r}. "
                                 "(circuit-tracer's nnsight back end needs nnsight 0.6/0.7.)")
    return Baseline(python, tuple(backends), info["versions"])


def probe_baseline(python: str) -> JSONRecord:
    """Run ``ct_runner.py --probe`` with `python`: versions and importable back ends."""
    exe = shutil.which(python) or python
    try:
        proc = subprocess.run([exe, str(CT_RUNNER), "--probe"], capture_output=True, text=True, timeout=600,
                              env=child_env(1))
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WorkbenchError(f"--baseline-python must be a runnable Python; got {python!r} ({err}).") \
            from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WorkbenchError(f"--baseline-python must import circuit_tracer; got {python!r}: {last}. "
                             "Install circuit-tracer==0.5.0 into that environment.")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise WorkbenchError(f"--baseline-python {python!r} must print the probe's JSON; got "
                             f"{proc.stdout.strip()[-200:]!r}.") from None


def child_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


# ----------------------------------------------------------------------------- phase 3
def workbench_command() -> tuple[list[str], dict[str, str]]:
    """``python -m workbench.cli``, and the environment that makes it import this very ``workbench``
    package (an installed ``workbench`` script may belong to another checkout)."""
    import workbench

    root = str(Path(workbench.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", "workbench.cli"], {"PYTHONPATH": path}


def trace_phases(stats: JSONRecord | None, measured: Measured) -> dict[str, float] | None:
    """The ``workbench trace`` process split into import (process start to the end of its imports,
    interpreter start-up included), load, attribute (rows streamed into the file), save (completing
    the file) and exit (after attribute to the process's end: stats, teardown); they sum to the
    process's wall time."""
    if not stats or measured.started is None or "timestamps" not in stats:
        return None
    stamps, seconds = stats["timestamps"], stats["seconds"]
    end = measured.started + measured.wall_s
    phases = {"startup": stamps["start"] - measured.started, "import": stamps["import"] - measured.started,
              "load": seconds["load"], "attribute": seconds["attribute"], "save": seconds["save"],
              "exit": end - stamps["attribute"]}
    return {k: round(float(v), 4) for k, v in phases.items()}


def _common_flags(cfg: BenchConfig, ids: list[int]) -> list[str]:
    flags = ["--token-ids", ",".join(map(str, ids)), "--device", cfg.device,
             "--batch-size", str(cfg.batch_size)]
    if cfg.max_feature_nodes is not None:
        flags += ["--max-feature-nodes", str(cfg.max_feature_nodes)]
    return flags


def _read_json(path: Path) -> JSONRecord | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def measure_ours(built: BuiltModel, kind: str, ids: list[int], cfg: BenchConfig,
                 out: Path) -> dict[str, JSONRecord]:
    """The `workbench trace` process, then ours_runner; raises RuntimeError if either fails."""
    command, extra_env = workbench_command()
    env = child_env(cfg.n_threads, extra_env)
    paths = ["--model", str(built.model_dir), "--transcoders", str(built.transcoder_dir(kind))]
    trace_cmd = [*command, "trace", *paths, *_common_flags(cfg, ids),
                 "--out", str(out / _graph_name(cfg)), "--quiet", "--stats-json", str(out / "stats.json")]
    trace = run_measured(trace_cmd, log=out / "trace.log", env=env)
    if trace.returncode != 0:
        raise RuntimeError(f"workbench trace failed (exit {trace.returncode}): {log_tail(trace.log)} "
                           f"[{trace.log}]")
    runner_cmd = [sys.executable, "-m", "workbench.bench.ours_runner", *paths, *_common_flags(cfg, ids),
                  "--out-dir", str(out / "runner"), "--threads", str(cfg.n_threads)]
    runner = run_measured(runner_cmd, log=out / "runner.log", env=env)
    result = _read_json(out / "runner" / "result.json")
    if runner.returncode != 0 or result is None:
        raise RuntimeError(f"ours_runner failed (exit {runner.returncode}): {log_tail(runner.log)} "
                           f"[{runner.log}]")
    stats = _read_json(out / "stats.json")
    # the process's own peak (VmHWM): rusage's ru_maxrss of a child also holds this process's
    # peak, which Linux folds into the child's when it execs after the fork
    own_peak = (stats or {}).get("peak_rss_mb")
    return {"trace": {"wall_s": round(trace.wall_s, 4), "max_rss_mb": own_peak or trace.max_rss_mb,
                      "rusage_max_rss_mb": trace.max_rss_mb, "stats": stats,
                      "phases": trace_phases(stats, trace), "command": trace_cmd},
            "runner": {**result, "wall_s": round(runner.wall_s, 4), "max_rss_mb": runner.max_rss_mb}}


def measure_ct(built: BuiltModel, kind: str, ids: list[int], cfg: BenchConfig, baseline: Baseline,
               backend: str, out: Path, *, write_graph: bool) -> JSONRecord:
    """One ct_runner.py process; raises RuntimeError if it fails."""
    model = built.tl_model_name if backend == "transformerlens" else str(built.model_dir)
    caches = {"CIRCUIT_TRACER_CACHE_DIR": str(built.ct_cache), "HF_HOME": str(built.hf_home)}
    env = child_env(cfg.n_threads, caches)
    cmd = [baseline.python, str(CT_RUNNER), "--model", str(model),
           "--transcoders", built.transcoder_ref(kind), "--ct-cache", str(built.ct_cache),
           "--hf-home", str(built.hf_home), "--backend", backend,
           "--token-ids", ",".join(map(str, ids)), "--out-dir", str(out), "--threads", str(cfg.n_threads),
           "--device", cfg.device, "--batch-size", str(cfg.batch_size)]
    if cfg.max_feature_nodes is not None:
        cmd += ["--max-feature-nodes", str(cfg.max_feature_nodes)]
    if not write_graph:
        cmd.append("--no-graph")
    proc = run_measured(cmd, log=out / "ct.log", env=env, timeout=cfg.baseline_timeout)
    result = _read_json(out / "result.json")
    if proc.timed_out:
        raise RuntimeError(f"circuit-tracer ({backend}) ran past --baseline-timeout {cfg.baseline_timeout}s; "
                           f"killed [{proc.log}]")
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"circuit-tracer ({backend}) failed (exit {proc.returncode}): "
                           f"{log_tail(proc.log)} [{proc.log}]")
    return {**result, "wall_s": round(proc.wall_s, 4), "max_rss_mb": proc.max_rss_mb}


def run_case(built: BuiltModel, kind: str, n_tokens: int, cfg: BenchConfig, baseline: Baseline | None,
             case_dir: Path, errors: list[str], pbar: tqdm | None) -> Case:
    """All repeats of one (kind, n_tokens) cell, then the comparison.

    Whatever happens (a failed or timed-out child, an interrupt), no temp file is left in
    `case_dir`: a graph's preallocated temp file is N x N float32, tens of GB in a big run.
    """
    try:
        return _measure_case(built, kind, n_tokens, cfg, baseline, case_dir, errors, pbar)
    finally:
        for path in remove_leftover_temps(case_dir):
            logger.info("removed the leftover temp file %s", path)


def _measure_case(built: BuiltModel, kind: str, n_tokens: int, cfg: BenchConfig, baseline: Baseline | None,
                  case_dir: Path, errors: list[str], pbar: tqdm | None) -> Case:
    ids = random_prompt(n_tokens, int(built.manifest["spec"]["vocab"]), cfg.prompt_seed)
    case: Case = {"transcoder": kind, "n_tokens": n_tokens, "token_ids": ids,
                               "dir": str(case_dir)}
    ours: OursRuns = {"trace": [], "runner": []}
    skip_ct = cfg.baseline_max_n_tokens is not None and n_tokens > cfg.baseline_max_n_tokens
    backends = baseline.backends if baseline and not skip_ct else ()
    ct: dict[str, CtRuns] = {b: {"runs": [], "error": None} for b in backends}
    for rep in range(cfg.repeats):
        try:
            got = measure_ours(built, kind, ids, cfg, case_dir / f"ours-r{rep}")
            ours["trace"].append(got["trace"])
            ours["runner"].append(got["runner"])
            if rep > 0 and not cfg.keep_graphs:  # only the first repeat's graph is compared
                (case_dir / f"ours-r{rep}" / _graph_name(cfg)).unlink(missing_ok=True)
        except RuntimeError as err:
            errors.append(f"{kind} n={n_tokens} ours: {err}")
            case["ours_error"] = str(err)
        _tick(pbar)
        for backend in ct:
            assert baseline is not None  # ct has back ends only when a baseline runs
            if ct[backend]["error"] is not None:
                continue
            try:
                run = measure_ct(built, kind, ids, cfg, baseline, backend,
                                 case_dir / f"ct-{backend}-r{rep}", write_graph=rep == 0)
                ct[backend]["runs"].append(run)
            except RuntimeError as err:
                errors.append(f"{kind} n={n_tokens} {backend}: {err}")
                ct[backend]["error"] = str(err)
            _tick(pbar)
    case["ours"], case["ct"] = ours, ct
    case["comparison"] = compare_case(case_dir / "ours-r0" / _graph_name(cfg), ct, ours)
    if not cfg.keep_graphs:
        for path in [*case_dir.glob("*/graph.npz"), *case_dir.glob("*/graph.safetensors")]:
            path.unlink()
    return case


def _tick(pbar: tqdm | None) -> None:
    if pbar is not None:
        pbar.update(1)


def _graph_name(cfg: BenchConfig) -> str:
    return "graph.npz" if cfg.trace_format == "npz" else "graph.safetensors"


def compare_case(ours_graph: Path, ct: dict[str, CtRuns],
                 ours: OursRuns) -> dict[str, JSONRecord | None]:
    """Graph and prune equality of the first repeat (`ours_graph`: its traced graph), per back end."""
    out: dict[str, JSONRecord | None] = {}
    case_dir = ours_graph.parent.parent
    ours_prune = ours_graph.parent / "runner" / "prune.npz"
    for backend, entry in ct.items():
        ct_dir = case_dir / f"ct-{backend}-r0"
        if not entry["runs"] or not ours_graph.is_file() or not (ct_dir / "graph.npz").is_file():
            out[backend] = None
            continue
        _, perm = alignment(ours_graph, ct_dir / "graph.npz")
        graph = compare_graphs(ours_graph, ct_dir / "graph.npz")
        prune = compare_prune(ours_prune, ct_dir / "prune.npz", perm) if ours_prune.is_file() else None
        ours_scores = ours["runner"][0]["scores"] if ours["runner"] else None
        deltas = score_deltas(ours_scores, entry["runs"][0]["scores"]) if ours_scores else None
        out[backend] = {"graph": graph, "prune": prune, "scores_delta": deltas}
    return out


# ----------------------------------------------------------------------------- the whole run
def run_benchmark(spec: ModelSpec, cfg: BenchConfig, *, argv: list[str] | None = None,
                  verbose: bool = True) -> BenchReport:
    """Everything in the module docstring; returns the JSON-ready report."""
    check_buildable(spec)
    baseline = resolve_baseline(cfg, spec)
    logger.info("phase 1: machine and GEMM peak (%d threads)", cfg.n_threads)
    machine = machine_info(cfg.device)
    peak = gemm_peak(seconds=cfg.gemm_seconds, threads=cfg.n_threads, device=cfg.device)
    logger.info("phase 2: benchmark model %s", spec.key)
    built, reused = ensure_built(spec, Path(cfg.work_dir), verbose=verbose)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.work_dir) / "runs" / f"{stamp}-{os.getpid()}-{spec.key}"
    errors: list[str] = []
    cases = []
    n_ct = len(baseline.backends) if baseline else 0
    lengths = [(n, cfg.baseline_max_n_tokens is None or n <= cfg.baseline_max_n_tokens) for n in cfg.n_tokens]
    steps = len(cfg.transcoders) * cfg.repeats * sum(1 + (n_ct if with_ct else 0) for _, with_ct in lengths)
    with tqdm(total=steps, desc="bench runs", disable=not verbose) as pbar:
        for kind in cfg.transcoders:
            for n_tokens in cfg.n_tokens:
                logger.info("phase 3: %s, %d tokens", kind, n_tokens)
                case_dir = run_dir / f"{kind}-n{n_tokens}"
                cases.append(run_case(built, kind, n_tokens, cfg, baseline, case_dir, errors, pbar))
    dims = _dims(spec)
    rows = [row for case in cases for row in summary_rows(case, dims, peak.get("gflops"))]
    return {
        "schema_version": SCHEMA_VERSION, "kind": "workbench-bench",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "argv": argv,
        "config": _jsonable({**dataclasses.asdict(cfg), "n_threads": cfg.n_threads}),
        "model_spec": dataclasses.asdict(spec), "machine": machine, "gemm_peak": peak,
        "model": _model_info(built, reused, dims),
        "baseline": None if baseline is None else {
            "python": baseline.python, "backends": list(baseline.backends), "versions": baseline.versions},
        "run_dir": str(run_dir), "summary": rows, "scaling": scaling(rows), "cases": cases, "errors": errors,
    }


def _dims(spec: ModelSpec) -> dict[str, int]:
    return {"n_layers": spec.n_layers, "d_model": spec.d_model, "n_heads": spec.n_heads,
            "n_kv_heads": spec.n_kv_heads, "head_dim": spec.head_width, "d_mlp": spec.mlp_width,
            "vocab": spec.vocab}


def _model_info(built: BuiltModel, reused: bool, dims: dict[str, int]) -> dict[str, object]:
    m = built.manifest
    return {"key": m.get("key"), "dir": str(built.root), "reused": reused,
            "build_seconds": m.get("build_seconds"), "hf_architecture": m.get("hf_architecture"),
            "dims": dims, "tl_model_name": m.get("tl_model_name"), "transcoders": m.get("transcoders"),
            "calibration_tokens": m.get("calibration_tokens")}


def _jsonable(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj

"""`workbench bench`: our engine against circuit-tracer 0.5.0 on a synthetic model of any size.

    workbench bench --arch qwen3 --n-layers 4 --d-model 256 --d-transcoder 2048 --target-l0 48 \\
        --transcoder both --n-tokens 16,64 --baseline-python /path/to/ct-venv/bin/python --out bench.json

Builds (or reuses, by hash) the model and transcoders in --work-dir, runs the real ``workbench
trace`` CLI and an in-process runner for our side, ``ct_runner.py`` with the baseline interpreter
for circuit-tracer's, compares the graphs, prints a table and writes the JSON report atomically.
See :mod:`workbench.bench.run` (what runs) and :mod:`workbench.bench.report` (what the numbers mean).
"""

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.bench.config import BenchConfig, ModelSpec

logger = logging.getLogger(__name__)

# flag -> (ModelSpec field, type)
_MODEL_FLAGS = {
    "--arch": ("arch", str), "--n-layers": ("n_layers", int), "--d-model": ("d_model", int),
    "--n-heads": ("n_heads", int), "--n-kv-heads": ("n_kv_heads", int), "--head-dim": ("head_dim", int),
    "--d-mlp": ("d_mlp", int), "--vocab": ("vocab", int), "--d-transcoder": ("d_transcoder", int),
    "--clt-d-transcoder": ("clt_d_transcoder", int), "--target-l0": ("target_l0", float),
    "--act": ("act", str), "--seed": ("seed", int), "--final-norm-scale": ("final_norm_scale", float),
    "--calib-seqs": ("calib_seqs", int), "--calib-len": ("calib_len", int),
}
_BENCH_FLAGS = {"transcoders": "--transcoder", "run_baseline": "--baseline", "baseline_backends": "--baseline-backend"}
"""BenchConfig fields whose flag is not the field's name (the others: ``--`` + the name with dashes)"""
_CHOICES = {"--arch": ["qwen3", "llama"], "--act": ["relu", "jumprelu"]}
WORK_DIR_DEFAULT = (" (default $XDG_CACHE_HOME/manifold-workbench/bench, or ~/.cache/manifold-workbench/bench "
                    "when XDG_CACHE_HOME is unset)")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from workbench.bench.config import BenchConfig, ModelSpec
    from workbench.config_cli import field_docs

    model_help, bench_help = field_docs(ModelSpec), field_docs(BenchConfig)
    spec = ModelSpec()
    p = sub.add_parser("bench", help="benchmark our engine against circuit-tracer on a synthetic model",
                       description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("benchmark model (cached in --work-dir by a hash of these)")
    for flag, (name, kind) in _MODEL_FLAGS.items():
        default = getattr(spec, name)
        g.add_argument(flag, type=kind, default=default, choices=_CHOICES.get(flag),
                       help=with_default(model_help.get(name, ""), default))
    flag_pair = argparse.BooleanOptionalAction
    g.add_argument("--skip", action=flag_pair, default=False, help=model_help.get("skip"))
    r = p.add_argument_group("runs")
    r.add_argument("--transcoder", default="both", choices=["plt", "clt", "both"],
                   help=bench_help.get("transcoders"))
    r.add_argument("--n-tokens", default="16,64,256",
                   help=bench_help.get("n_tokens", "") + " Comma-separated.")
    r.add_argument("--max-feature-nodes", type=int, default=None, help=bench_help.get("max_feature_nodes"))
    r.add_argument("--baseline", action=flag_pair, default=True, help=bench_help.get("run_baseline"))
    r.add_argument("--baseline-python", default=None, help=bench_help.get("baseline_python"))
    r.add_argument("--baseline-backend", default="auto",
                   choices=["auto", "transformerlens", "nnsight", "both"],
                   help="circuit-tracer back end(s); auto: transformerlens for qwen3, nnsight for llama")
    r.add_argument("--baseline-max-n-tokens", type=int, default=None,
                   help=bench_help.get("baseline_max_n_tokens"))
    r.add_argument("--baseline-timeout", type=float, default=None, help=bench_help.get("baseline_timeout"))
    for flag, name, kind in (("--repeats", "repeats", int), ("--threads", "threads", int),
                             ("--device", "device", str), ("--prompt-seed", "prompt_seed", int),
                             ("--batch-size", "batch_size", int), ("--gemm-seconds", "gemm_seconds", float)):
        default = getattr(BenchConfig, name, None) if name != "threads" else None
        r.add_argument(flag, type=kind, default=default, help=with_default(bench_help.get(name, ""), default))
    r.add_argument("--trace-format", default="native", choices=["native", "npz"],
                   help=bench_help.get("trace_format"))
    r.add_argument("--keep-graphs", action=flag_pair, default=False,
                   help=bench_help.get("keep_graphs"))
    r.add_argument("--work-dir", default=None, help=bench_help.get("work_dir", "") + WORK_DIR_DEFAULT)
    r.add_argument("--out", default="bench.json", help="JSON report path (default bench.json)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    p.set_defaults(func=run_bench)


def with_default(text: str, default: object) -> str:
    """`text` and its default; a None default means "derived", which the text itself explains."""
    return text if default is None else f"{text} (default {default})"


def check_work_dir(work_dir: Path) -> None:
    """Refuse a --work-dir (or its models/runs folders) that is not a folder or a new path, up front."""
    from workbench.cli_safety import check_out

    check_out(work_dir, folder=True, flag="--work-dir")
    for sub in ("models", "runs"):
        check_out(work_dir / sub, folder=True, flag=f"--work-dir {sub} folder")


def parse_n_tokens(text: str) -> tuple[int, ...]:
    """``--n-tokens "16,64"`` -> (16, 64); an empty entry ("8,,16") or a spaced number ("1 6" read 16) is refused."""
    from workbench.cli_safety import int_items

    return tuple(int_items(text, "--n-tokens"))


def configs_from_args(args: argparse.Namespace) -> tuple["ModelSpec", "BenchConfig"]:
    """(ModelSpec, BenchConfig) from the parsed flags (validation raises WorkbenchError)."""
    from workbench.bench.config import BenchConfig, ModelSpec, default_work_dir
    from workbench.config_cli import flag_name, naming_flags

    values = {name: getattr(args, flag[2:].replace("-", "_")) for flag, (name, _) in _MODEL_FLAGS.items()}
    with naming_flags({name: flag for flag, (name, _) in _MODEL_FLAGS.items()} | {"skip": "--skip"}):
        spec = ModelSpec(**values, skip=args.skip)
    choice = args.baseline_backend
    backends = {"auto": (), "both": ("transformerlens", "nnsight")}.get(choice, (choice,))
    with naming_flags({f.name: flag_name(f.name) for f in dataclasses.fields(BenchConfig)} | _BENCH_FLAGS):
        cfg = BenchConfig(
            transcoders=("plt", "clt") if args.transcoder == "both" else (args.transcoder,),
            n_tokens=parse_n_tokens(args.n_tokens), max_feature_nodes=args.max_feature_nodes,
            run_baseline=args.baseline, baseline_python=args.baseline_python, baseline_backends=backends,
            baseline_max_n_tokens=args.baseline_max_n_tokens, baseline_timeout=args.baseline_timeout,
            repeats=args.repeats, threads=args.threads, device=args.device, prompt_seed=args.prompt_seed,
            batch_size=args.batch_size, gemm_seconds=args.gemm_seconds, keep_graphs=args.keep_graphs,
            trace_format=args.trace_format,
            work_dir=Path(args.work_dir) if args.work_dir else default_work_dir(),
        )
    check_fits(spec, cfg)
    from tracer.models.loading import parse_device

    with naming_flags({"device": "--device"}):
        parse_device(cfg.device)  # "cuda" without CUDA ended in a traceback from the GEMM peak
    return spec, cfg


def check_fits(spec: "ModelSpec", cfg: "BenchConfig") -> None:
    """Every prompt length must fit the benchmark model's context (refused before any work)."""
    from tracer.errors import WorkbenchError

    longest = max(cfg.n_tokens)
    if longest > spec.max_positions:
        raise WorkbenchError(f"--n-tokens must be <= the benchmark model's context ({spec.max_positions} tokens); "
                             f"got {longest}. Use shorter prompts.")


def run_bench(args: argparse.Namespace) -> int:
    from tracer.io import atomic_write_json
    from workbench.bench.report import format_table
    from workbench.bench.run import run_benchmark
    from workbench.cli_safety import check_out

    out = check_out(args.out)
    spec, cfg = configs_from_args(args)
    check_work_dir(Path(cfg.work_dir))
    report = run_benchmark(spec, cfg, argv=sys.argv[1:], verbose=not args.quiet)
    atomic_write_json(out, report, indent=2)  # strict JSON: NaN and inf become null
    sys.stdout.write(format_table(report["summary"]) + "\n")
    sys.stdout.write(f"report: {out}\n")
    for err in report["errors"]:
        logger.error("%s", err)
    return 1 if report["errors"] else 0

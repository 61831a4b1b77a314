"""What the load-time NaN/inf checks cost: the share of model and transcoder load time spent in them.

    python -m workbench.bench.load_checks --n-layers 8 --d-model 1024 --d-transcoder 8192 --out load.json

Builds (or reuses, by hash, in --work-dir) a random benchmark model with its transcoders, then
loads them ``--repeats`` times each way: the model natively and through transformers, the
transcoders with lazy (memory-mapped) and eager decoders, and the cross-layer transcoders
(lazy) where the build has them. Every call of
:func:`tracer.weights.check_file` and :func:`tracer.weights.check_weight` is timed, so the
overhead is measured directly, not as a difference of two noisy totals. Writes JSON: per path
the median load seconds, the median seconds inside the checks, and their ratio.
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.cli_parser import script_parser

_MODULES = ("tracer.models.native", "tracer.models.loading", "tracer.transcoders.loaders",
            "tracer.transcoders.mmap")
_CHECKS = ("check_weight", "check_file")


@contextmanager
def timed_checks() -> Iterator[list[float]]:
    """Patch every module's ``check_weight`` and ``check_file`` with a timed wrapper; yield the
    list of durations."""
    import importlib

    spent: list[float] = []
    originals: list[tuple[Any, str, Callable[..., None]]] = []
    for name in _MODULES:
        module = importlib.import_module(name)
        for attr in _CHECKS:
            original = getattr(module, attr, None)
            if original is None:
                continue
            originals.append((module, attr, original))

            def wrapper(*args: Any, _f: Callable[..., None] = original, **kwargs: Any) -> None:
                t0 = time.perf_counter()
                try:
                    _f(*args, **kwargs)
                finally:
                    spent.append(time.perf_counter() - t0)

            setattr(module, attr, wrapper)
    try:
        yield spent
    finally:
        for module, attr, original in originals:
            setattr(module, attr, original)


def _measure(load: Callable[[], object], repeats: int,
             use: Callable[[Any], object] | None = None) -> dict[str, float]:
    """Median load seconds, seconds inside the checks and their share; with `use`, also the
    seconds of a first use of what was loaded (a forward pass: mapped weights are read then)."""
    totals, checks, uses = [], [], []
    load()  # warm the page cache and the imports
    for _ in range(repeats):
        with timed_checks() as spent:
            t0 = time.perf_counter()
            loaded = load()
            totals.append(time.perf_counter() - t0)
        checks.append(sum(spent))
        if use is not None:
            t0 = time.perf_counter()
            use(loaded)
            uses.append(time.perf_counter() - t0)
    total, check = statistics.median(totals), statistics.median(checks)
    out = {"load_seconds": round(total, 4), "check_seconds": round(check, 4),
           "check_share": round(check / total, 4) if total else 0.0}
    if uses:
        first = statistics.median(uses)
        out["first_use_seconds"] = round(first, 4)
        out["check_share_of_load_and_first_use"] = round(check / (total + first), 4)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.bench.build import ensure_built
    from workbench.bench.config import ModelSpec, default_work_dir

    torch.set_num_threads(args.threads)
    spec = ModelSpec(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.n_heads, n_kv_heads=args.n_kv_heads,
                     vocab=args.vocab, d_transcoder=args.d_transcoder, calib_seqs=8, calib_len=16)
    built, _ = ensure_built(spec, Path(args.work_dir) if args.work_dir else default_work_dir())
    weights = sum(p.stat().st_size for p in built.model_dir.glob("*.safetensors"))
    tc_dir = built.transcoder_dir("plt")
    tc_bytes = sum(p.stat().st_size for p in tc_dir.glob("*.safetensors"))
    results: dict[str, Any] = {"spec": vars(spec) if hasattr(spec, "__dict__") else str(spec),
                               "model_bytes": weights, "transcoder_bytes": tc_bytes, "repeats": args.repeats,
                               "threads": args.threads}
    ids = torch.arange(1, 17)[None]  # (1, 16) a short prompt

    def forward(loaded: Any) -> object:
        with torch.no_grad():
            return loaded.model(ids)

    results["model_native"] = _measure(lambda: load_model(built.model_dir, backend="native"), args.repeats, forward)
    results["model_hf"] = _measure(lambda: load_model(built.model_dir, backend="hf"), args.repeats, forward)
    x = torch.randn(16, spec.d_model)  # (16, d_model) a short prompt's MLP inputs

    def encode(tc: Any) -> object:
        return [layer.encode(x) for layer in tc.layers]

    results["transcoders_lazy"] = _measure(lambda: load_transcoders(tc_dir, lazy_decoder=True), args.repeats, encode)
    results["transcoders_eager"] = _measure(lambda: load_transcoders(tc_dir, lazy_decoder=False), args.repeats,
                                            encode)
    clt_dir = built.transcoder_dir("clt")
    if clt_dir.is_dir():  # cross-layer transcoders: an encoder file and a decoder file per layer
        results["clt_lazy"] = _measure(lambda: load_transcoders(clt_dir, lazy_decoder=True), args.repeats, encode)
    return results


def main(argv: list[str] | None = None) -> int:
    p = script_parser("python -m workbench.bench.load_checks", __doc__.split("\n\n")[0])
    p.add_argument("--n-layers", type=int, default=8)
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--n-heads", type=int, default=16)
    p.add_argument("--n-kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--d-transcoder", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", default=None, help="where benchmark models are cached")
    p.add_argument("--out", required=True, help="JSON report")
    args = p.parse_args(argv)
    from tracer.io import atomic_write_json
    from workbench.cli_safety import check_out

    check_out(args.out)  # before any work
    report = run(args)
    atomic_write_json(args.out, json.loads(json.dumps(report, default=str)), indent=2)
    sys.stdout.write(json.dumps({k: v for k, v in report.items() if isinstance(v, dict) and "check_share" in v},
                                indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.bench.load_checks"))

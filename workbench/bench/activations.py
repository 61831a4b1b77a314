"""Throughput of corpus activation collection against a bare batched forward + encode.

Both sides run the same prompts (the demo world's corpus) in the same length-sorted batches on
the same loaded model: the baseline captures the transcoders' inputs with a plain forward pass
and encodes them densely (nothing kept); ours is :func:`tracer.activations.collect_activations`
(sparse extraction, shards written to disk). Runs alternate (baseline, ours, ...) so that load on
a shared machine hits both alike; the median of the repeats is reported, as tokens per second.

    python -m workbench.bench.activations --n-prompts 4000 --repeats 3 --out bench-activations.json
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tracer.activations import ActivationConfig, collect_activations
from tracer.activations.collect import _batches
from tracer.io import atomic_write_json, json_safe
from tracer.models import LoadedModel, load_model, tokenize
from tracer.models.forward import capture
from tracer.replacement import encode
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import load_transcoders
from workbench.cli_parser import script_parser
from workbench.paths import world_dir


@torch.no_grad()
def bare_forward_encode(loaded: LoadedModel, tc: Transcoders, tokens: list[torch.Tensor], batch_size: int) -> int:
    """The baseline: batched forward passes capturing transcoder inputs, dense encode; returns nnz."""
    lengths = [int(t.shape[0]) for t in tokens]
    in_loc = loaded.adapter.input_location(tc.input_hook)
    nnz = 0
    for batch in _batches(lengths, batch_size):
        T = max(lengths[i] for i in batch)
        ids = torch.zeros(len(batch), T, dtype=torch.long)
        for b, i in enumerate(batch):
            ids[b, :lengths[i]] = tokens[i]
        with capture(loaded, input_location=in_loc) as got:
            loaded.logits(ids)
        for layer in range(loaded.n_layers):
            nnz += int((encode(tc.layers[layer], got.inputs[layer]) != 0).sum())
    return nnz


def run(args: argparse.Namespace) -> dict[str, object]:
    from workbench.world import generator
    from workbench.world.evaluate import manifest_spec

    world = Path(args.world)
    manifest = json.loads((world / "manifest.json").read_text())
    spec = manifest_spec(manifest)  # its shape too (a tiny world has other cities)
    prompts = [" ".join(s.words) for s in generator.sample_corpus(spec, args.n_prompts, seed=1, stream="bench")]
    loaded = load_model(world / "model", backend=args.backend)
    tc = load_transcoders(world / args.transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    tokens = [tokenize(loaded, p) for p in prompts]
    n_tokens = sum(int(t.shape[0]) for t in tokens)
    cfg = ActivationConfig(batch_size=args.batch_size, shard_prompts=args.shard_prompts)
    base_s, ours_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        bare_forward_encode(loaded, tc.to(loaded.device, loaded.dtype), tokens, args.batch_size)
        base_s.append(time.perf_counter() - t0)
        out = Path(tempfile.mkdtemp(prefix="bench-act-"))
        try:
            t0 = time.perf_counter()
            collect_activations(loaded, tc, prompts, out / "run", cfg, verbose=False)
            ours_s.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    base, ours = statistics.median(base_s), statistics.median(ours_s)
    return {"command": " ".join(sys.argv), "n_prompts": len(prompts), "n_tokens": n_tokens,
            "batch_size": args.batch_size, "threads": torch.get_num_threads(), "backend": args.backend,
            "transcoders": args.transcoders, "baseline_seconds": base_s, "ours_seconds": ours_s,
            "baseline_tokens_per_s": n_tokens / base, "ours_tokens_per_s": n_tokens / ours,
            "throughput_ratio": base / ours}


def main(argv: list[str] | None = None) -> int:
    p = script_parser("python -m workbench.bench.activations", __doc__.split("\n\n")[0])
    p.add_argument("--world", default=str(world_dir()), help="demo world folder (default: the shipped one)")
    p.add_argument("--transcoders", default="plt", choices=["plt", "clt"])
    p.add_argument("--backend", default="hf", choices=["hf", "native"], help="model loader (default hf)")
    p.add_argument("--n-prompts", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-prompts", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON here too")
    args = p.parse_args(argv)
    from workbench.cli_safety import check_out

    if args.out:
        check_out(args.out, inputs=[args.world])  # before any work
    result = run(args)
    print(json.dumps(json_safe(result), indent=1, allow_nan=False))  # noqa: T201
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.bench.activations"))

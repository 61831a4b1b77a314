"""`workbench activations`: transcoder activations over a corpus, streamed to shards (resumable)."""

import argparse
import logging
import sys
from pathlib import Path

from workbench.cli_model import add_model_placement, model_placement

logger = logging.getLogger(__name__)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from tracer.config import ActivationConfig
    from workbench.config_cli import add_config_arguments

    p = sub.add_parser(
        "activations", help="collect transcoder activations over a corpus",
        description="Run prompts through the model and store every layer's sparse transcoder activations "
                    "(and, on request, residual-stream or transcoder-input vectors) as safetensors shards "
                    "plus a JSON index in --out. A killed run continues where it stopped when started again "
                    "with the same arguments. Prompts: a text file (one prompt per line) or JSONL records "
                    "{\"prompt\": ..., other fields kept as metadata}.",
    )
    p.add_argument("--model", required=True, help="local Hugging Face model folder")
    p.add_argument("--transcoders", required=True, help="transcoder folder (circuit-tracer formats)")
    p.add_argument("--prompts", required=True, help="prompt file: .jsonl records or plain text lines")
    p.add_argument("--out", required=True, help="output folder (new, or the folder of a run to resume)")
    add_config_arguments(p, ActivationConfig)
    p.add_argument("--allow-unk", action="store_true",
                   help="trace words the tokenizer does not know as its unknown token (default: refuse)")
    add_model_placement(p, dtype=True)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    p.set_defaults(func=run_activations)


RUN_FILE = "run.json"
"""Beside an activation run: the command line that made it (:func:`workbench.provenance.run_record`)."""


def _check_out(args: argparse.Namespace, n_prompts: int, shard_prompts: int) -> Path:
    """--out, before any work: not an input or inside one, writable, holding none of the inputs by a
    run file name, and new, empty or an activation run (to resume)."""
    from tracer.activations.collect import check_run_folder
    from tracer.activations.store import INDEX, PROMPTS, shard_name
    from workbench.cli_safety import check_out, check_out_files

    inputs = [args.model, args.transcoders, args.prompts]
    out = check_out(args.out, inputs=inputs, folder=True)
    shards = {shard_name(k) for k in range(-(-n_prompts // shard_prompts))}
    named = {Path(i).name for i in inputs} & shards  # a shard name only matters if an input bears it
    check_out_files(out, [INDEX, PROMPTS, RUN_FILE, *sorted(named)], inputs=inputs)
    check_run_folder(out, "--out")
    return out


def run_activations(args: argparse.Namespace) -> int:
    from tracer.activations import ActivationConfig, collect_activations, read_prompts
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.config_cli import config_from_args

    cfg = config_from_args(ActivationConfig, args)
    dtype, device = model_placement(args)
    records = read_prompts(args.prompts)
    out = _check_out(args, len(records), cfg.shard_prompts)
    loaded = load_model(args.model, device=device, dtype=dtype, backend="auto")
    tc = load_transcoders(args.transcoders, dtype=loaded.dtype, n_layers=loaded.n_layers, d_model=loaded.d_model)
    if args.allow_unk:
        logger.warning("--allow-unk: unknown words are traced as the tokenizer's unknown token")
    store = collect_activations(loaded, tc, records, out, cfg, allow_unk=args.allow_unk, verbose=not args.quiet)
    from tracer.io import atomic_write_json
    from workbench.provenance import run_record

    atomic_write_json(out / RUN_FILE, run_record(args))  # the index records the settings; this, the command line
    if not args.quiet:
        print(f"wrote {out}: {store.n_prompts} prompts, {store.n_rows} token rows, {len(store.shards)} shards",
              file=sys.stderr)
    return 0

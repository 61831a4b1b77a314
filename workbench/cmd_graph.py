"""`workbench trace`: build an attribution graph and save it (native safetensors+JSON, or .npz)."""

import argparse
import json
import logging
import sys
import time

from workbench.cli_model import add_model_placement, model_placement

logger = logging.getLogger(__name__)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "trace", help="build an attribution graph for a prompt",
        description="Trace the attribution graph of a prompt through a model's transcoders. A path "
                    "ending in .npz writes the npz of the design notes (uncompressed: the arrays only, without "
                    "the prompt text, the model and transcoder ids or the logit token strings, so `export` "
                    "then needs --scan); any other path writes the native format (one safetensors file with a "
                    "JSON header that keeps them).",
    )
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="output path (native .safetensors, or .npz: arrays only)")
    p.add_argument("--max-n-logits", type=int, default=10, help="most logit targets (default 10)")
    p.add_argument("--desired-logit-prob", type=float, default=0.95,
                   help="cumulative probability the logit targets should cover (default 0.95)")
    p.add_argument("--max-feature-nodes", type=int, default=None,
                   help="keep at most this many features, chosen greedily by influence (default: all)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="target rows per batch; with --max-feature-nodes it sets the re-ranking chunk")
    p.add_argument("--update-interval", type=int, default=4, help="greedy re-ranking interval in batches")
    add_model_placement(p, dtype=True)
    p.add_argument("--adjacency-dtype", default="auto", choices=["auto", "float32", "float64", "bfloat16", "float16"],
                   help="storage dtype of the adjacency (auto: float64 for --dtype float64, else float32; "
                        "bf16/fp16 halve its memory)")
    p.add_argument("--engine", default="fast", choices=["fast", "autograd"],
                   help="fast (explicit backward) or autograd (slow reference)")
    p.add_argument("--model-backend", default="auto", choices=["auto", "native", "hf"],
                   help="auto (default): load without transformers when the config allows; hf: always "
                        "through transformers")
    p.add_argument("--workers", type=int, default=None, help="parallel sweep workers (default: CPU threads)")
    p.add_argument("--eager-decoder", action="store_true",
                   help="read whole decoders into memory instead of memory-mapping active rows")
    p.add_argument("--stats-json", default=None, help="also write timings and sizes to this JSON file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    p.set_defaults(func=run_trace)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --transcoders and the prompt (--prompt | --token-ids): shared by trace and intervene."""
    p.add_argument("--model", required=True, help="local Hugging Face model folder")
    p.add_argument("--transcoders", required=True, help="transcoder folder (circuit-tracer formats)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (a BOS is prepended, as circuit-tracer does)")
    src.add_argument("--token-ids", help="comma-separated token ids, used exactly as given (include the BOS)")
    p.add_argument("--allow-unk", action="store_true",
                   help="trace prompt words the tokenizer does not know as its unknown token (with a warning); "
                        "by default they are an error")


def parse_token_ids(text: str) -> list[int]:
    from workbench.cli_safety import parse_token_ids as parse

    return parse(text)


def run_trace(args: argparse.Namespace) -> int:
    """Trace, streaming the adjacency into --out as it is computed (never held in memory whole)."""
    from workbench.cli_safety import check_distinct, check_out, need_input

    clock = _Clock()
    need_input(args.model, "--model", folder=True)
    need_input(args.transcoders, "--transcoders", folder=True)
    out = check_out(args.out, inputs=[args.model, args.transcoders])
    if args.stats_json:
        check_distinct(("--out", args.out), ("--stats-json", args.stats_json))
        check_out(args.stats_json, inputs=[args.model, args.transcoders, args.out], flag="--stats-json")
    import torch

    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.models import load_model, tokenize
    from tracer.transcoders.loaders import load_transcoders
    from workbench.config_cli import flag_name, naming_flags

    fields = ("max_n_logits", "desired_logit_prob", "batch_size", "max_feature_nodes", "update_interval", "engine",
              "adjacency_dtype")
    with naming_flags({**{f: flag_name(f) for f in fields}, "n_workers": "--workers"}):
        cfg = AttributionConfig(**{f: getattr(args, f) for f in fields}, n_workers=args.workers,
                                verbose=not args.quiet)
    dtype, device = model_placement(args)
    token_ids = parse_token_ids(args.token_ids) if args.token_ids is not None else None
    clock.mark("import")
    loaded = load_model(args.model, device=device, dtype=dtype, backend=args.model_backend)
    tc = load_transcoders(args.transcoders, dtype=dtype, lazy_decoder=not args.eager_decoder,
                          n_layers=loaded.n_layers, d_model=loaded.d_model)
    tokens = torch.tensor(token_ids) if token_ids is not None else tokenize(loaded, args.prompt,
                                                                           allow_unk=args.allow_unk)
    clock.mark("load")
    graph = attribute(loaded, tc, tokens, cfg, out=out)
    clock.mark("attribute")
    finish = graph.extra.get("finish_seconds", 0.0)
    clock.move("attribute", "save", float(finish) if isinstance(finish, (int, float)) else 0.0)
    seconds = clock.seconds()
    stats = {
        "n_nodes": graph.n_nodes, "n_active_features": int(graph.active_features.shape[0]),
        "n_selected_features": graph.n_selected, "n_pos": graph.n_pos, "n_logits": graph.n_logits,
        "seconds": seconds, "timestamps": clock.stamps,
        "flops": graph.extra.get("flops"), "out": str(out), "out_bytes": out.stat().st_size,
        "peak_rss_mb": _peak_rss_mb(),
    }
    if args.stats_json:
        from tracer.io import atomic_path

        with atomic_path(args.stats_json) as tmp:
            tmp.write_text(json.dumps(stats, indent=2))
    if not args.quiet:
        print(f"wrote {out}: {graph.n_nodes} nodes ({graph.n_selected} features, {graph.n_pos} tokens, "
              f"{graph.n_logits} logits) in {seconds['total']:.1f}s", file=sys.stderr)
    args.fast_exit = True  # nothing left to free: the CLI may end the process without teardown
    return 0


def _peak_rss_mb() -> float | None:
    """This process's own peak resident set (VmHWM; None where /proc is missing). Unlike a parent's
    rusage of the child, it does not include the parent's memory, which Linux folds into the
    child's peak when it execs after the fork."""
    try:
        with open("/proc/self/status") as fh:
            kb = next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), None)
    except OSError:
        return None
    return None if kb is None else round(kb / 1024, 1)


class _Clock:
    """Phase timings of one command: seconds per phase, and wall-clock stamps at each phase end
    (``time.time()``, so that a parent process can line them up with its own clock)."""

    def __init__(self) -> None:
        self._t0 = self._last = time.perf_counter()
        self._seconds: dict[str, float] = {}
        self.stamps: dict[str, float] = {"start": time.time()}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self._seconds[phase] = now - self._last
        self.stamps[phase] = time.time()
        self._last = now

    def move(self, source: str, dest: str, seconds: float) -> None:
        """Book `seconds` of phase `source` under `dest` instead."""
        seconds = min(seconds, self._seconds.get(source, 0.0))
        self._seconds[source] = self._seconds.get(source, 0.0) - seconds
        self._seconds[dest] = self._seconds.get(dest, 0.0) + seconds

    def seconds(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self._seconds.items()}
        out["total"] = round(time.perf_counter() - self._t0, 3)
        return out

"""`workbench intervene`: set, scale or add to transcoder features in the real model.

Intervention syntax: ``LAYER:POS:FEATURE=VALUE`` with POS one of ``N`` (a position; negative
counts from the end), ``N..M`` (positions N..M-1), ``N..`` (N to the end, generated tokens
included). Prints the largest next-token probability changes (clean vs intervened) and, with
``--generate``, the clean and intervened continuations; ``--out`` writes the same as JSON.
"""

import argparse
import logging
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from workbench.cli_model import add_model_placement, model_placement
from workbench.cli_safety import parse_token_ids
from workbench.cmd_graph import add_model_arguments

if TYPE_CHECKING:
    from torch import Tensor

    from tracer.interventions import CleanRun, Intervention
    from tracer.interventions.api import Mode
    from tracer.models import LoadedModel
    from tracer.transcoders.base import Transcoders

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SPEC = re.compile(r"^\s*(-?\d+)\s*:\s*([-\d.]+)\s*:\s*(\d+)\s*=\s*(\S+)\s*$")


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser(
        "intervene", help="set / scale / add to transcoder features in the real model",
        description="Intervene on transcoder features in the real model and show how the next-token "
                    "distribution (and optionally a generated continuation) changes. "
                    "SPEC = LAYER:POS:FEATURE=VALUE; POS = N | N..M | N.. (open-ended).",
    )
    add_model_arguments(p)
    p.set_defaults(specs=[])
    for mode, what in (("set", "set a feature's activation to VALUE"),
                       ("scale", "multiply a feature's activation by VALUE"),
                       ("add", "add VALUE to a feature's activation")):
        p.add_argument(f"--{mode}", action=_SpecAction, dest="specs", metavar="SPEC",
                       help=f"{what} (repeatable; --set/--scale/--add apply in command-line order)")
    att = p.add_mutually_exclusive_group()
    att.add_argument("--freeze-attention", dest="freeze_attention", action="store_true", default=True,
                     help="replay attention patterns from the clean run (default)")
    att.add_argument("--free-attention", dest="freeze_attention", action="store_false",
                     help="recompute attention patterns in the intervened run")
    con = p.add_mutually_exclusive_group()
    con.add_argument("--propagate", action="store_true",
                     help="let effects propagate through every MLP (default)")
    con.add_argument("--constrained-layers", default=None, metavar="LAYERS",
                     help="freeze MLP outputs in these layers: 'all', '0-3', '1,4' "
                          "(all layers: direct effects)")
    p.add_argument("--generate", type=int, default=0, metavar="N",
                   help="also generate N tokens, clean and intervened (greedy unless --sample)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature, with --sample (default 1)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed, with --sample (default 0)")
    p.add_argument("--top-k", type=int, default=10, help="how many next-token changes to show (default 10)")
    p.add_argument("--out", default=None, help="write the results to this JSON file")
    add_model_placement(p, dtype=True)
    p.add_argument("--quiet", "-q", action="store_true", help="no info logs")
    p.set_defaults(func=run_intervene)


class _SpecAction(argparse.Action):
    """Collect (mode, SPEC) pairs from --set/--scale/--add in command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        mode = (option_string or "--set").lstrip("-")
        namespace.specs = [*getattr(namespace, "specs", []), (mode, str(values))]


def parse_position(text: str) -> int | slice:
    """'3' -> 3, '-1' -> -1, '2..5' -> slice(2, 5), '2..' -> slice(2, None)."""
    from tracer.errors import WorkbenchError

    m = re.fullmatch(r"(-?\d+)(?:\.\.(-?\d+)?)?", text)
    if m is None:
        raise WorkbenchError(f"intervention position must be N, N..M or N..; got {text!r}. Example: 3.. "
                             "(position 3 onwards, generated tokens included).")
    if ".." not in text:
        return int(m.group(1))
    return slice(int(m.group(1)), int(m.group(2)) if m.group(2) is not None else None)


def parse_spec(text: str, mode: str) -> "Intervention":
    """'LAYER:POS:FEATURE=VALUE' -> an Intervention (validated later against the model)."""
    from tracer.errors import WorkbenchError
    from tracer.interventions import Intervention

    m = _SPEC.match(text)
    if m is None:
        raise WorkbenchError(f"--{mode} must be LAYER:POS:FEATURE=VALUE; got {text!r}. "
                             f"Example: --{mode} 2:5:123=4.0")
    try:
        value = float(m.group(4))
    except ValueError:
        raise WorkbenchError(f"--{mode} value must be a number; got {m.group(4)!r} in {text!r}.") from None
    return Intervention(layer=int(m.group(1)), position=parse_position(m.group(2)), feature=int(m.group(3)),
                        value=value, mode=cast("Mode", mode))  # mode: the flag's name (set/scale/add)


def parse_layers(text: str | None) -> list[int] | str | None:
    """None -> None; 'all' -> 'all'; '0-3,5' -> [0, 1, 2, 3, 5]."""
    from tracer.errors import WorkbenchError

    if text is None:
        return None
    if text.strip() == "all":
        return "all"
    layers: list[int] = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise WorkbenchError(f"--constrained-layers must be 'all', 'A-B' or a comma list of layers; got "
                                 f"{text!r}. Example: --constrained-layers 0-3")
        layers.extend(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return layers


def top_changes(clean_logits: "Tensor", logits: "Tensor", k: int,
                decode: Callable[[list[int]], str]) -> list[dict[str, object]]:
    """The k tokens whose next-token probability changed most (by |delta|), at the last position; equal
    changes (none at all, when the interventions change nothing) go by the larger probability, so the
    model's top predictions come first."""
    import torch

    p0 = torch.softmax(clean_logits[-1].double(), -1)  # (d_vocab,)
    p1 = torch.softmax(logits[-1].double(), -1)
    delta = p1 - p0
    by_prob = torch.sort(torch.maximum(p0, p1), descending=True, stable=True).indices  # (d_vocab,)
    by_change = torch.sort(delta.abs()[by_prob], descending=True, stable=True).indices  # (d_vocab,)
    idx = by_prob[by_change][:k]
    return [{"token_id": int(i), "token": decode([int(i)]), "clean_prob": float(p0[i]),
             "intervened_prob": float(p1[i]), "delta": float(delta[i])} for i in idx]


def warn_no_ops(clean: "CleanRun", ivs: list["Intervention"]) -> None:
    """Log a warning for each --set that leaves a feature at its clean activation (at one position: an
    inactive feature set to 0 is the usual slip), so an unchanged distribution is not taken as a result."""
    for iv in ivs:
        if iv.mode != "set" or not isinstance(iv.position, int) or not 0 <= iv.layer < clean.transcoders.n_layers:
            continue
        acts = clean.activations(iv.layer)  # (n_pos, d_transcoder)
        if -acts.shape[0] <= iv.position < acts.shape[0] and 0 <= iv.feature < acts.shape[1]:
            now = float(acts[iv.position, iv.feature])
            if now == iv.value:
                logger.warning("--set %d:%d:%d=%g changes nothing: that feature's clean activation there is "
                               "already %g", iv.layer, iv.position, iv.feature, iv.value, now)


def _describe(iv: "Intervention") -> dict[str, object]:
    pos: object = iv.position
    if isinstance(pos, slice):
        pos = f"{pos.start}..{'' if pos.stop is None else pos.stop}"
    return {"layer": iv.layer, "position": pos, "feature": iv.feature, "value": iv.value, "mode": iv.mode}


def _tokens(args: argparse.Namespace, loaded: "LoadedModel", token_ids: list[int] | None) -> "Tensor":
    import torch

    from tracer.models import tokenize

    if token_ids is not None:
        return torch.tensor(token_ids)
    return tokenize(loaded, args.prompt, allow_unk=args.allow_unk)


def _generate(args: argparse.Namespace, loaded: "LoadedModel", tc: "Transcoders", clean: "CleanRun",
              ivs: list["Intervention"], constrained: object) -> dict[str, dict[str, object]]:
    from tracer.interventions import feature_intervention_generate
    from workbench.config_cli import naming_flags

    out: dict[str, dict[str, object]] = {}
    no_ivs: list[Intervention] = []
    for name, items in (("clean", no_ivs), ("intervened", ivs)):
        with naming_flags({"temperature": "--temperature", "max_new_tokens": "--generate", "seed": "--seed"}):
            g = feature_intervention_generate(
                loaded, tc, clean.tokens, items, args.generate, freeze_attention=args.freeze_attention,
                constrained_layers=constrained, do_sample=args.sample,
                temperature=1.0 if args.temperature is None else args.temperature,
                seed=0 if args.seed is None else args.seed, clean=clean)
        out[name] = {"token_ids": g.new_tokens.tolist(), "text": g.text}
    return out


def token_cell(token: str, width: int = 18) -> str:
    """A token as one table cell: quoted and escaped (its spaces, newlines and control characters visible,
    " Tuesday" apart from "Tuesday"), cut to ``width`` with an ellipsis."""
    shown = repr(token)
    return shown if len(shown) <= width else shown[:width - 1] + "…"


def _print(changes: list[dict[str, object]], gen: dict[str, dict[str, object]] | None) -> None:
    print(f"{'id':>7} {'token':>18} {'clean p':>9} {'new p':>9} {'delta':>9}")  # noqa: T201
    for row in changes:
        line = (f"{row['token_id']:>7} {token_cell(str(row['token'])):>18} {row['clean_prob']:9.4f} "
                f"{row['intervened_prob']:9.4f}")
        print(f"{line} {row['delta']:+9.4f}")  # noqa: T201
    if gen:
        for name in ("clean", "intervened"):
            g = gen[name]
            print(f"{name:>10}: {g['text'] if g['text'] is not None else g['token_ids']}")  # noqa: T201


def _check_sampling(args: argparse.Namespace) -> None:
    """--sample needs --generate; --temperature and --seed need --sample (greedy decoding ignored them)."""
    from tracer.errors import WorkbenchError

    if args.sample and not args.generate:
        raise WorkbenchError("--sample needs --generate N (it samples the generated tokens); got no --generate.")
    given = [f"{flag} {value}" for flag, value in (("--temperature", args.temperature), ("--seed", args.seed))
             if value is not None]
    if given and not args.sample:
        raise WorkbenchError(f"--temperature and --seed need --sample (greedy decoding uses neither); got "
                             f"{' and '.join(given)} without --sample. Add --sample or drop them.")


def run_intervene(args: argparse.Namespace) -> int:
    from tracer.errors import WorkbenchError

    if not args.specs:
        raise WorkbenchError("interventions must be given; got none. Add --set, --scale or --add "
                             "LAYER:POS:FEATURE=VALUE.")
    if args.top_k < 1 or args.generate < 0:
        raise WorkbenchError(f"--top-k must be >= 1 and --generate >= 0; got {args.top_k} and "
                             f"{args.generate}.")
    _check_sampling(args)
    from workbench.cli_safety import check_out, need_input

    need_input(args.model, "--model", folder=True)
    need_input(args.transcoders, "--transcoders", folder=True)
    if args.out:
        check_out(args.out, inputs=[args.model, args.transcoders])
    ivs = [parse_spec(text, mode) for mode, text in args.specs]
    constrained = parse_layers(args.constrained_layers)
    args.propagate = constrained is None  # the run record says what ran (the flag only names the default)
    token_ids = parse_token_ids(args.token_ids) if args.token_ids is not None else None
    out_path = args.out
    from tracer.interventions import feature_intervention, prepare
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    dtype, device = model_placement(args)
    loaded = load_model(args.model, device=device, dtype=dtype, backend="hf")
    tc = load_transcoders(args.transcoders, dtype=dtype, n_layers=loaded.n_layers, d_model=loaded.d_model)
    clean = prepare(loaded, tc, _tokens(args, loaded, token_ids))
    warn_no_ops(clean, ivs)
    res = feature_intervention(loaded, tc, clean.tokens, ivs, freeze_attention=args.freeze_attention,
                               constrained_layers=constrained, return_activations=False, clean=clean)
    tok = loaded.tokenizer

    def decode(ids: list[int]) -> str:
        return tok.decode(ids) if tok is not None else str(ids[0])

    from workbench.provenance import run_record

    changes = top_changes(res.clean_logits, res.logits, args.top_k, decode)
    result: dict[str, object] = {
        "schema_version": SCHEMA_VERSION, "model": args.model, "transcoders": args.transcoders,
        "token_ids": clean.tokens.tolist(), "interventions": [_describe(iv) for iv in ivs],
        "settings": {"freeze_attention": args.freeze_attention, "constrained_layers": constrained},
        "top_changes": changes, "run": run_record(args),
    }
    gen = _generate(args, loaded, tc, clean, ivs, constrained) if args.generate else None
    if gen is not None:
        result["generation"] = gen
    _print(changes, gen)
    if out_path:
        from tracer.io import atomic_write_json

        atomic_write_json(out_path, result, indent=2)
        if not args.quiet:
            print(f"wrote {out_path}", file=sys.stderr)  # noqa: T201
    return 0

"""Score a demo world: model accuracy per task and split, transcoder FVU / L0 / dead fraction.

Works on a freshly trained world and on the shipped files (:func:`load_world`).
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen3ForCausalLM

from tracer.errors import WorkbenchError
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import load_transcoders
from workbench.world import generator as gen
from workbench.world import language as lang
from workbench.world.train_model import accuracy, encode_corpus
from workbench.world.train_transcoders import collect_mlp_io, transcoder_metrics

logger = logging.getLogger(__name__)

# acceptance targets on held-out prompts (top-1)
TARGETS = {"day_arith": 0.95, "month_arith": 0.95, "hue_arith": 0.90, "two_hop": 0.90}
FVU_MAX, L0_MAX, DEAD_MAX = 0.15, 32.0, 0.10


@dataclass(frozen=True, kw_only=True)
class LoadedWorld:
    """A built world read back from disk."""

    model: Qwen3ForCausalLM
    """The model, in eval mode, float32."""
    tokenizer: PreTrainedTokenizerFast
    """Its word-level tokenizer."""
    manifest: dict[str, Any]
    """manifest.json."""
    plt: Transcoders
    """Per-layer transcoders (decoders in memory)."""
    clt: Transcoders
    """Cross-layer transcoder (decoders in memory)."""

    def spec(self) -> lang.WorldSpec:
        """The world's language, rebuilt from the manifest's seed and shape."""
        return manifest_spec(self.manifest)


def manifest_spec(manifest: dict[str, Any]) -> lang.WorldSpec:
    """A built world's language, rebuilt from its manifest's seed, shape and held-out share (``build.config``'s
    ``heldout_frac``; 0.10 where a manifest does not record it), checked against the held-out splits it records."""
    facts = manifest["facts"]
    config = (manifest.get("build") or {}).get("config") or {}
    spec = lang.make_world(int(manifest["seed"]), n_regions=len(facts["regions"]),
                           cities_per_region=len(facts["cities"]) // len(facts["regions"]),
                           heldout_frac=float(config.get("heldout_frac", lang.HELDOUT_FRAC)))
    recorded = (manifest.get("splits") or {}).get("heldout_arith")
    if recorded is not None and {f: sorted(map(list, c)) for f, c in spec.heldout_arith.items()} != {
            f: sorted(map(list, c)) for f, c in recorded.items()}:
        raise WorkbenchError("the world's manifest must record the held-out splits its seed and build config give; "
                             "they differ. The manifest was edited or comes from another version: rebuild the world.")
    return spec


def load_world(directory: str | Path) -> LoadedWorld:
    """Read model, tokenizer, transcoders and manifest of a built world."""
    d = Path(directory)
    if not (d / "manifest.json").is_file():
        from tracer.folders import folder_hint

        raise WorkbenchError(f"world directory must contain manifest.json; got {str(d)!r}. "
                             f"Build one with `workbench world build --out DIR`.{folder_hint(d, 'world')}")
    from tracer.models.loading import hf_progress_bars

    with hf_progress_bars(logger.isEnabledFor(logging.INFO)):  # no "Loading weights" bar under --quiet
        model = AutoModelForCausalLM.from_pretrained(d / "model", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(d / "model")
    if not isinstance(tokenizer, PreTrainedTokenizerFast):  # a world's word-level tokenizer is a fast one
        raise WorkbenchError(f"world tokenizer must be a fast (tokenizer.json) tokenizer; got "
                             f"{type(tokenizer).__name__} in {str(d / 'model')!r}. Rebuild the world.")
    manifest = json.loads((d / "manifest.json").read_text())
    dims = {"n_layers": model.config.num_hidden_layers, "d_model": model.config.hidden_size}
    return LoadedWorld(model=model, tokenizer=tokenizer, manifest=manifest,
                       plt=load_transcoders(d / "plt", lazy_decoder=False, **dims),
                       clt=load_transcoders(d / "clt", lazy_decoder=False, **dims))


def evaluate_model(model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast,
                   prompts: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Top-1 accuracy per task and split ("train", "heldout"), plus chance level per task."""
    acc: dict[str, dict[str, float]] = {}
    for task, rows in prompts.items():
        acc[task] = {}
        for split in ("train", "heldout"):
            chosen = [r for r in rows if r["split"] == split]
            if chosen:
                acc[task][split] = round(accuracy(model, tokenizer, chosen), 4)
        acc[task]["n_heldout"] = sum(r["split"] == "heldout" for r in rows)
        acc[task]["chance"] = round(1.0 / len({r["answer"] for r in rows}), 4)
    return {"accuracy": acc}


def evaluate_transcoders(world: LoadedWorld, *, n_sentences: int = 400) -> dict[str, list[dict[str, float]]]:
    """FVU / L0 / dead per layer on fresh held-out sentences (positions >= 1)."""
    spec = world.spec()
    sents = gen.sample_corpus(spec, n_sentences, seed=int(world.manifest["seed"]), stream="check")
    X, Y = collect_mlp_io(world.model, encode_corpus(sents, world.tokenizer)[0])
    return {"plt": transcoder_metrics(world.plt, X, Y), "clt": transcoder_metrics(world.clt, X, Y)}


def target_failures(accuracy_table: dict[str, dict[str, float]],
                    tc: dict[str, list[dict[str, float]]], *, dead_max: float = DEAD_MAX) -> list[str]:
    """The acceptance targets a world misses, as readable lines (empty when all hold)."""
    fails = []
    for task, target in TARGETS.items():
        got = accuracy_table[task].get("heldout", math.nan)
        if not got >= target:
            fails.append(f"{task} held-out accuracy {got:.3f} < {target}")
    for name, layers in tc.items():
        for i, m in enumerate(layers):
            if not m["fvu"] <= FVU_MAX:
                fails.append(f"{name} layer {i} FVU {m['fvu']:.3f} > {FVU_MAX}")
            if not m["l0"] <= L0_MAX:
                fails.append(f"{name} layer {i} L0 {m['l0']:.1f} > {L0_MAX}")
            if not m["dead"] <= dead_max:
                fails.append(f"{name} layer {i} dead {m['dead']:.3f} > {dead_max}")
    return fails

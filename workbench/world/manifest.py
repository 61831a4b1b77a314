"""The ground-truth manifest of a built world (manifest.json).

It records what the generator planted (families and their order, the geography's facts, the
prompt sets with answers and splits), the demo prompts, what the build achieved (accuracy per
task, transcoder FVU / L0 / dead per layer), how long each phase took, and the versions used.
"""

import hashlib
import logging
import platform
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

from workbench.world import language as lang
from workbench.world.train_model import predict_next

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
WEIGHT_FOLDERS = ("model", "plt", "clt")
"""The world's folders whose ``*.safetensors`` files the manifest's ``checksums`` cover."""
PREFERRED_DEMOS = {"day_arith": "Two days after Friday is", "two_hop": None}


def build_manifest(*, spec: lang.WorldSpec, seed: int, tiny: bool, prompts: dict[str, list[dict[str, Any]]],
                   model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, model_metrics: dict[str, Any],
                   tc_metrics: dict[str, Any], times: dict[str, float], config: dict[str, Any]) -> dict[str, Any]:
    """Everything manifest.json holds (a JSON-ready dict)."""
    demos = choose_demo_prompts(model, tokenizer, prompts)
    return {
        "schema_version": SCHEMA_VERSION,
        "seed": seed,
        "tiny": tiny,
        "description": "Synthetic demo world: cyclic families (days, months, hues) with arithmetic, "
                       "two-hop facts (city -> region -> capital) and filler prose.",
        "files": {"model": "model", "plt": "plt", "clt": "clt", "labels_plt": "labels_plt.jsonl",
                  "labels_clt": "labels_clt.jsonl"},
        "tokenizer": {"kind": "word-level, whitespace split; punctuation is its own word",
                      "special_tokens": {t: i for i, t in enumerate(lang.SPECIAL_TOKENS)},
                      "prompt_format": "BOS + words (the tokenizer prepends <bos>)",
                      "vocab_size": len(tokenizer)},
        "families": {name: {"values": list(values), "period": len(values), "unit": [unit, units],
                            "order": "calendar / colour-wheel order; value i is followed by value i+1 mod period"}
                     for name, (values, unit, units) in lang.FAMILIES.items()},
        "offsets": {"min": 1, "max": lang.MAX_OFFSET, "words": list(lang.NUMBERS[1:lang.MAX_OFFSET + 1])},
        "facts": {"regions": list(spec.regions), "cities": list(spec.cities), "region_of": spec.region_of,
                  "capital_of": spec.capital_of,
                  "capital_of_city": {c: spec.capital_of[r] for c, r in spec.region_of.items()}},
        "splits": {"heldout_arith": {f: sorted([list(c) for c in combos]) for f, combos in spec.heldout_arith.items()},
                   "heldout_two_hop_cities": sorted(spec.heldout_two_hop),
                   "note": "held-out combinations/cities never appear in any training sentence of that "
                           "task; the one-hop facts of held-out two-hop cities do."},
        "prompt_sets": prompts,
        "demo_prompts": {k: v["prompt"] for k, v in demos.items()},
        "demo_answers": {k: v["answer"] for k, v in demos.items()},
        "demo_details": demos,
        "metrics": {"model": model_metrics, "plt": tc_metrics["plt"], "clt": tc_metrics["clt"],
                    "transcoder_tokens": {"train": tc_metrics["n_train_tokens"], "eval": tc_metrics["n_eval_tokens"]},
                    "summary": summarize(model_metrics, tc_metrics)},
        "build": {"seconds": {k: round(v, 1) for k, v in times.items()}, "threads": torch.get_num_threads(),
                  "config": config},
        "versions": versions(),
    }


def summarize(model_metrics: dict[str, Any], tc_metrics: dict[str, Any]) -> dict[str, Any]:
    """Held-out accuracy of the main tasks and the worst transcoder layer."""
    acc = model_metrics["accuracy"]
    out: dict[str, Any] = {f"{t}_heldout": acc[t].get("heldout") for t in ("day_arith", "month_arith", "hue_arith",
                                                                          "two_hop")}
    for name in ("plt", "clt"):
        layers = tc_metrics[name]
        out[f"{name}_max_fvu"] = round(max(m["fvu"] for m in layers), 4)
        out[f"{name}_max_l0"] = round(max(m["l0"] for m in layers), 2)
        out[f"{name}_max_dead"] = round(max(m["dead"] for m in layers), 4)
    return out


def choose_demo_prompts(model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast,
                        prompts: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One demo prompt per demo task: the preferred one if the model answers it, else the
    held-out prompt (two-hop: a held-out city) the model answers with the highest probability."""
    vocab = tokenizer.get_vocab()
    demos: dict[str, dict[str, Any]] = {}
    for task, preferred in PREFERRED_DEMOS.items():
        rows = [r for r in prompts[task] if r["template"] == 0]
        top, prob = predict_next(model, tokenizer, [r["prompt"] for r in rows])
        scored = [(float(p), r) for t, p, r in zip(top.tolist(), prob, rows) if t == vocab[r["answer"]]]
        pick = next((r for _, r in scored if r["prompt"] == preferred), None)
        if pick is None:
            held = [x for x in scored if x[1]["split"] == "heldout"] or scored or [(0.0, rows[0])]
            pick = max(held, key=lambda x: x[0])[1]
        p = next(float(q) for q, r in zip(prob, rows) if r is pick)
        demos[task] = {**pick, "top1_probability": round(p, 4)}
    return demos


def versions() -> dict[str, str]:
    """Versions of the libraries the build used."""
    import safetensors
    import tokenizers
    import transformers

    import workbench

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__, "workbench": getattr(workbench, "__version__", "0.1.0")}


def weight_checksums(world: Path) -> dict[str, str]:
    """sha256 of every ``*.safetensors`` file in the world's model and transcoder folders, keyed by its
    path relative to the world (``model/model.safetensors``, ``plt/layer_0.safetensors``, ...)."""
    out: dict[str, str] = {}
    for folder in WEIGHT_FOLDERS:
        for path in sorted((world / folder).glob("*.safetensors")):
            h = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[f"{folder}/{path.name}"] = h.hexdigest()
    return out


def checksum_mismatches(world: Path, manifest: dict[str, Any]) -> list[str]:
    """The weight files of ``world`` that differ from, are missing from or are unknown to the manifest's
    ``checksums`` (empty when they all match; a manifest without checksums has nothing to check)."""
    want = manifest.get("checksums")
    if not isinstance(want, dict):
        return []
    have = weight_checksums(world)
    return sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))


MODEL_FILE = "model/model.safetensors"


def same_model(built: dict[str, Any], reference: dict[str, Any]) -> bool | None:
    """Whether a build's model has the bytes of a reference world's (the shipped one) built from the same
    seed, size and model settings; None when the two are not comparable (other seed, size or settings,
    or a manifest without checksums)."""
    cfg, ref_cfg = built.get("build", {}).get("config", {}), reference.get("build", {}).get("config", {})
    comparable = (built.get("seed") == reference.get("seed") and built.get("tiny") == reference.get("tiny")
                  and all(cfg.get(k) == ref_cfg.get(k) for k in ("model", "train", "n_regions", "cities_per_region"))
                  and cfg.get("heldout_frac", lang.HELDOUT_FRAC) == ref_cfg.get("heldout_frac", lang.HELDOUT_FRAC)
                  and MODEL_FILE in reference.get("checksums", {}) and MODEL_FILE in built.get("checksums", {}))
    return built["checksums"][MODEL_FILE] == reference["checksums"][MODEL_FILE] if comparable else None

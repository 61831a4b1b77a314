"""Build the whole demo world from a seed: language, model, transcoders, labels, manifest.

Phases (each a function, each logged): 1 language + tokenizer, 2 model training, 3 model
evaluation, 4 transcoder training (PLT, CLT), 5 labels, 6 per-feature truth (which fixes the labels
it contradicts), 7 manifest. :func:`rebuild_truth` reruns phase 6 alone on a built world. ``tiny=True`` runs the same
pipeline at toy scale (for CI).

Both write the world whole or not at all (:func:`workbench.world.staging.staged_folder`): the
build goes into a hidden folder beside the output and replaces it only when complete, so an
interrupted or failed build leaves the old world as it was, and a rebuild leaves no file of the
old world behind (only files the build does not make, e.g. README.md, are kept).
"""

import dataclasses
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tracer.errors import WorkbenchError
from tracer.io import TEMP_PREFIX, atomic_path, current_umask
from tracer.labels import FeatureLabel, load_labels
from tracer.transcoders.base import Transcoders
from workbench.world import generator as gen
from workbench.world import language as lang
from workbench.world.evaluate import evaluate_model
from workbench.world.labels import annotate, label_layer
from workbench.world.manifest import MODEL_FILE, build_manifest, same_model, weight_checksums
from workbench.world.staging import staged_folder
from workbench.world.tokenizer import build_tokenizer, save_tokenizer
from workbench.world.train_model import (
    ModelConfig,
    TrainConfig,
    build_model,
    encode_corpus,
    neighbour_table,
    train_model,
)
from workbench.world.train_transcoders import (
    TranscoderTrainConfig,
    collect_mlp_io,
    train_transcoders,
    transcoder_metrics,
)
from workbench.world.transcoders import encode_layers, save_transcoders
from workbench.world.truth import TruthConfig, world_truth
from workbench.world.truth_labels import write_world_truth

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class WorldBuildConfig:
    """Everything that shapes a built world (besides the seed)."""

    n_regions: int = 10
    """Regions of the fictional geography."""
    cities_per_region: int = 8
    """Cities per region (capitals not counted). With 6, the model tended to memorise each
    training city's capital and lose the composed city -> region -> capital path that held-out
    cities need; 8 keeps it."""
    heldout_frac: float = lang.HELDOUT_FRAC
    """Share of each cyclic family's arithmetic combinations (offsets >= 2) held out of training: the unseen
    combinations the held-out prompt sets test (0.10: 14 day, 24 month and 24 hue combinations, two templates
    each)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Shape of the model."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Model optimisation (its seed is replaced by the build seed, as are the transcoders')."""
    plt: TranscoderTrainConfig = field(default_factory=TranscoderTrainConfig)
    """Per-layer transcoder training."""
    clt: TranscoderTrainConfig = field(default_factory=TranscoderTrainConfig)
    """Cross-layer transcoder training."""
    n_transcoder_sentences: int = 12_000
    """Sentences whose MLP activations train the transcoders."""
    n_eval_sentences: int = 4_000
    """Fresh sentences (plus every evaluation prompt's sentence) for held-out transcoder metrics
    and labels."""
    truth: TruthConfig = field(default_factory=TruthConfig)
    """The per-feature truth procedure (its own held-out corpus and thresholds)."""
    threads: int = 2
    """torch CPU threads."""

    @property
    def n_corpus(self) -> int:
        """Training sentences for the model (each step draws a batch from them)."""
        return self.train.steps * self.train.batch_size


def default_config(*, tiny: bool = False) -> WorldBuildConfig:
    """The shipped world's configuration, or the CI-sized one."""
    if not tiny:
        return WorldBuildConfig()
    return WorldBuildConfig(
        n_regions=4, cities_per_region=4,
        model=ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, d_mlp=128),
        train=TrainConfig(steps=250, batch_size=64, lr=5e-3, warmup=25),
        plt=TranscoderTrainConfig(d_transcoder=128, k=8, steps=150, batch_size=1024),
        clt=TranscoderTrainConfig(d_transcoder=128, k=8, steps=150, batch_size=1024),
        n_transcoder_sentences=1500, n_eval_sentences=400, threads=1, truth=TruthConfig(n_sentences=600))


SEED_MAX = 2**63 - 1
"""The largest build seed (torch's seeds and the manifest's readers take 64-bit integers)."""
TRANSCODER_SETS = ("plt", "clt")
"""The transcoder sets a build trains, in this order."""
BUILD_OUTPUTS = frozenset({"model", *TRANSCODER_SETS, "manifest.json", *(
    f"{kind}_{name}.jsonl" for kind in ("labels", "feature_truth") for name in TRANSCODER_SETS)})
"""The top-level entries of a world folder that a build writes (a rebuild replaces them all)."""


def check_seed(seed: object, name: str = "seed") -> int:
    """`seed` if it is an integer in [0, SEED_MAX], else a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise WorkbenchError(f"{name} must be an integer in [0, 2**63 - 1]; got {seed!r}. Pass a whole number "
                             "from 0 to 9223372036854775807.")
    return seed


def _is_leftover(name: str) -> bool:
    """A temp entry of an older build or write (never carried into a rebuilt world)."""
    return name.startswith((TEMP_PREFIX, ".model-"))


def _keep_on_rebuild(name: str) -> bool:
    """Whether a rebuild carries an entry of the old world over: not what the build writes."""
    return name not in BUILD_OUTPUTS and not _is_leftover(name)


def check_replaceable(out: Path) -> None:
    """Refuse an output that a build must not replace whole: a file, or a folder that holds other
    things than a world (a folder with manifest.json, or only build outputs and README files)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise WorkbenchError(f"out_dir (--out) must be a folder; got the file {str(out)!r}. Pass a folder path.")
    if (out / "manifest.json").is_file():
        return
    other = sorted(n for n in os.listdir(out) if _keep_on_rebuild(n) and not n.startswith("README"))
    if other:
        raise WorkbenchError(f"out_dir (--out) must be a new or empty folder or a built world (with manifest.json); "
                             f"got {str(out)!r}, which holds {other[0]!r} and no manifest.json. The build replaces the "
                             "whole folder: choose a new one.")


def build_world(out_dir: str | Path, *, seed: int = 0, tiny: bool = False, progress: bool = False,
                config: WorldBuildConfig | None = None) -> dict[str, Any]:
    """Build the demo world into `out_dir` and return its metrics (also in manifest.json).

    The world is built beside `out_dir` and replaces it only when complete (see the module
    docstring); an existing `out_dir` must be a world (or empty).
    """
    check_seed(seed)
    cfg = config or default_config(tiny=tiny)
    out = Path(out_dir)
    if not str(out_dir):
        raise WorkbenchError("out_dir (--out) must be a path; got ''.")
    check_replaceable(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with staged_folder(out, keep_old=_keep_on_rebuild) as stage:
            metrics = _build(stage, seed, tiny, cfg, progress)
        return metrics
    finally:
        torch.set_num_threads(threads)


def seeded(cfg: WorldBuildConfig, seed: int) -> WorldBuildConfig:
    """``cfg`` with the build seed in place of its model's and transcoders' own seeds (what the build
    trains with, and what the manifest records)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed),
                               plt=dataclasses.replace(cfg.plt, seed=seed), clt=dataclasses.replace(cfg.clt, seed=seed))


def _build(out: Path, seed: int, tiny: bool, cfg: WorldBuildConfig, progress: bool) -> dict[str, Any]:
    cfg = seeded(cfg, seed)
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    logger.info("Phase 1: language, corpus and tokenizer (seed %d)", seed)
    t = time.perf_counter()
    spec = lang.make_world(seed, n_regions=cfg.n_regions, cities_per_region=cfg.cities_per_region,
                           heldout_frac=cfg.heldout_frac)
    tokenizer = build_tokenizer(lang.vocabulary())
    corpus = gen.sample_corpus(spec, cfg.n_corpus, seed=seed, stream="model")
    times["corpus"] = time.perf_counter() - t

    logger.info("Phase 2: training the model (%d steps)", cfg.train.steps)
    t = time.perf_counter()
    model = build_model(cfg.model, len(tokenizer), seed)
    ids, answer_pos = encode_corpus(corpus, tokenizer)
    losses = train_model(model, ids, answer_pos, neighbour_table(tokenizer), cfg.train, progress=progress)
    _save_model(model, tokenizer, out / "model", progress=progress)
    times["model"] = time.perf_counter() - t

    logger.info("Phase 3: evaluating the model")
    t = time.perf_counter()
    prompts = gen.prompt_sets(spec)
    model_metrics = evaluate_model(model, tokenizer, prompts)
    model_metrics["final_loss"] = losses[-1]
    times["model_eval"] = time.perf_counter() - t

    logger.info("Phase 4: transcoders")
    tc_metrics, saved, eval_sents, X_eval = _transcoder_phase(out, spec, tokenizer, model, prompts, seed, cfg,
                                                              progress, times)

    logger.info("Phase 5: labels")
    t = time.perf_counter()
    infos = annotate(eval_sents)
    labels: dict[str, dict[tuple[int, int], FeatureLabel]] = {}
    for name, tc in saved.items():
        acts = encode_layers(tc, X_eval)  # (L, n_tokens, F)
        scan = {"scan": transcoder_scan(name, seed)}  # lets `export` refuse labels of another transcoder set
        labels[name] = {lab.key: dataclasses.replace(lab, extra={**lab.extra, **scan}) for layer in range(tc.n_layers)
                        for lab in label_layer(acts[layer], infos, layer, spec)}
    times["labels"] = time.perf_counter() - t

    logger.info("Phase 6: per-feature truth")
    t = time.perf_counter()
    truths = world_truth(model, tokenizer, spec, saved, seed=seed, cfg=cfg.truth)
    truth_summary = write_world_truth(out, truths, labels)
    times["truth"] = time.perf_counter() - t

    logger.info("Phase 7: manifest")
    times["total"] = time.perf_counter() - t_all
    manifest = build_manifest(spec=spec, seed=seed, tiny=tiny, prompts=prompts, model=model, tokenizer=tokenizer,
                              model_metrics=model_metrics, tc_metrics=tc_metrics, times=times,
                              config=dataclasses.asdict(cfg))
    manifest = {**with_truth(manifest, truth_summary, cfg.truth), "checksums": weight_checksums(out)}
    with atomic_path(out / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    logger.info("World built in %.0fs: %s", times["total"], json.dumps(manifest["metrics"]["summary"]))
    _compare_with_shipped(manifest)
    return manifest["metrics"]


def _compare_with_shipped(manifest: dict[str, Any]) -> None:
    """Log whether the build reproduced the shipped world (when it was built from the same settings)."""
    from workbench.paths import world_dir

    shipped = world_dir() / "manifest.json"
    if not shipped.is_file():
        return
    reference = json.loads(shipped.read_text())
    same = same_model(json.loads(json.dumps(manifest)), reference)  # JSON round trip: tuples become lists
    if same is None:
        return
    mine, theirs = manifest["checksums"][MODEL_FILE][:12], reference["checksums"][MODEL_FILE][:12]
    if same:
        logger.info("World build: the model reproduces the shipped world's (sha256 %s).", mine)
    else:
        logger.warning("World build: the model differs from the shipped world's (sha256 %s against %s) though seed "
                       "and settings are the same. Training is deterministic on one machine but not across CPUs, "
                       "so figures measured on the shipped world need not hold for this build (data/world/README.md).",
                       mine, theirs)


def _transcoder_phase(out: Path, spec: lang.WorldSpec, tokenizer: Any, model: Any,
                      prompts: dict[str, list[dict[str, Any]]], seed: int, cfg: WorldBuildConfig,
                      progress: bool, times: dict[str, float]) -> tuple[dict[str, Any], dict[str, Transcoders],
                                                                       list[gen.Sentence], torch.Tensor]:
    t = time.perf_counter()
    train_sents = gen.sample_corpus(spec, cfg.n_transcoder_sentences, seed=seed, stream="transcoders")
    eval_sents = gen.sample_corpus(spec, cfg.n_eval_sentences, seed=seed, stream="eval") + prompt_sentences(spec)
    X, Y = collect_mlp_io(model, encode_corpus(train_sents, tokenizer)[0])
    X_eval, Y_eval = collect_mlp_io(model, encode_corpus(eval_sents, tokenizer)[0])
    times["activations"] = time.perf_counter() - t
    metrics: dict[str, Any] = {"n_train_tokens": int(X.shape[1]), "n_eval_tokens": int(X_eval.shape[1])}
    saved: dict[str, Transcoders] = {}
    for name, tcfg in zip(TRANSCODER_SETS, (cfg.plt, cfg.clt)):
        t = time.perf_counter()
        tc, _ = train_transcoders(name, X, Y, tcfg, progress=progress, scan=transcoder_scan(name, seed))
        save_transcoders(tc, out / name)
        metrics[name] = transcoder_metrics(tc, X_eval, Y_eval)
        saved[name] = tc
        times[name] = time.perf_counter() - t
    return metrics, saved, eval_sents, X_eval


def transcoder_scan(name: str, seed: int) -> str:
    """The id of a built world's transcoder set (config.yaml's scan; every label record carries it)."""
    return f"manifold-workbench/demo-world-{name}@seed{seed}"


def prompt_sentences(spec: lang.WorldSpec) -> list[gen.Sentence]:
    """The full sentence of every arithmetic and two-hop evaluation prompt (held-out ones too)."""
    sents = [gen.arith_sentence(family, s, o, d, t) for family in lang.FAMILIES
             for (s, o, d) in lang.all_combos(len(lang.FAMILIES[family][0])) for t in (0, 1)]
    sents += [gen.two_hop_sentence(spec, c, t) for c in spec.cities for t in (0, 1)]
    rng = random.Random(f"prompt-sentences-{spec.seed}")
    rng.shuffle(sents)
    return sents


def _save_model(model: Any, tokenizer: Any, path: Path, *, progress: bool = False) -> None:
    """save_pretrained and the tokenizer into the new folder `path` (transformers' "Writing model
    shards" bar only with ``progress``); every file gets the umask's permissions (transformers
    writes model.safetensors as 0600)."""
    from tracer.models.loading import hf_progress_bars

    path.mkdir(parents=True, exist_ok=True)
    with hf_progress_bars(progress):
        model.save_pretrained(path, safe_serialization=True)
    save_tokenizer(tokenizer, path)
    mode = 0o666 & ~current_umask()
    for f in path.iterdir():
        if f.is_file() and not f.is_symlink():
            os.chmod(f, mode)


def with_truth(manifest: dict[str, Any], summary: dict[str, Any], cfg: TruthConfig) -> dict[str, Any]:
    """The manifest with the truth files listed and the truth's summary and settings recorded."""
    truth_files = {f"feature_truth_{name}": f"feature_truth_{name}.jsonl" for name in summary}
    files = {**manifest.get("files", {}), **truth_files}
    truth = {"procedure": "workbench/world/truth.py (see data/world/README.md)", "config": dataclasses.asdict(cfg),
             "summary": summary}
    return {**manifest, "files": files, "truth": truth}


def rebuild_truth(directory: str | Path, *, cfg: TruthConfig | None = None) -> dict[str, Any]:
    """Recompute the per-feature truth of a built world from its shipped model and transcoders
    (phase 6 alone): rewrites ``feature_truth_*.jsonl``, the labels it fixes and the manifest's
    truth entries, all together or (interrupted, failed) none. Returns the truth summary."""
    from workbench.world.evaluate import load_world

    d = Path(directory)
    world = load_world(d)
    cfg = cfg or TruthConfig()
    saved = {"plt": world.plt, "clt": world.clt}
    truths = world_truth(world.model, world.tokenizer, world.spec(), saved, seed=int(world.manifest["seed"]),
                         cfg=cfg)
    labels = {name: load_labels(d / f"labels_{name}.jsonl") for name in saved}
    with staged_folder(d) as stage:  # the rest of the world is carried over: all files change, or none
        summary = write_world_truth(stage, truths, labels)
        manifest = with_truth(world.manifest, summary, cfg)
        with atomic_path(stage / "manifest.json") as tmp:
            tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return summary

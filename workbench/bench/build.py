"""Synthetic benchmark models: random HF weights and transcoders calibrated to a target L0.

One build (cached under ``<work_dir>/models/<ModelSpec.key>/``) holds::

    model/                        Qwen3ForCausalLM or LlamaForCausalLM (save_pretrained, safetensors)
                                  + a word-level tokenizer (ids: 0 <unk>, 1 BOS, 2 <pad>, 3 EOS, words)
    ct_cache/bench/<key>-plt/     config.yaml (transcoder_set) + layer_{i}.safetensors
    ct_cache/bench/<key>-clt/     config.yaml (cross_layer_transcoder) + W_enc_{i} / W_dec_{i}.safetensors
    hf_home/hub/models--Qwen--Qwen3-0.6B/   (Qwen3 only) a hub-cache entry whose files link to model/
    bench_model.json              manifest: spec, paths, calibration L0 / FVU per layer

``ct_cache`` is circuit-tracer's local transcoder cache (``CIRCUIT_TRACER_CACHE_DIR``): with it,
``ReplacementModel.from_pretrained(model, "bench/<key>-plt")`` never contacts the hub. Our engine
reads the same folders. TransformerLens accepts only official model names; for Qwen3 it reads
every dimension from the HF config, so with ``HF_HOME=<build>/hf_home`` the name
``Qwen/Qwen3-0.6B`` resolves to this model. (TransformerLens hard-codes Llama dims: Llama runs
with circuit-tracer's nnsight back end only.) BOS is id 1 because circuit-tracer picks the first
*truthy* special id.

Transcoders: random unit encoder rows; each feature's bias (ReLU) or threshold (JumpReLU) is set
so that it fires on ``target_l0 / d_transcoder`` of a calibration batch of random sequences run
through the model; decoders are ridge fits of the true MLP outputs (the CLT's by one backfitting
pass over source layers), so error nodes are real but smaller than the features' part.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tracer.errors import WorkbenchError
from tracer.models import wrap_model
from tracer.models.forward import capture_transcoder_io
from tracer.models.loading import hf_progress_bars
from tracer.transcoders.base import TranscoderLayer, Transcoders
from tracer.transcoders.fit import ridge_solve
from tracer.transcoders.writer import write_transcoders
from workbench.bench.config import BUILD_VERSION, ModelSpec
from workbench.bench.records import JSONRecord

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<unk>", "<|endoftext|>", "<pad>", "<|im_end|>")
"""ids 0-3: unk, BOS (id 1), pad, EOS; words follow as ``w4 ... w{V-1}``."""
BOS_ID, FIRST_WORD_ID = 1, 4
TL_MODEL_NAME = {"qwen3": "Qwen/Qwen3-0.6B"}
"""Official TransformerLens name whose hub-cache entry points at the benchmark model."""
MANIFEST = "bench_model.json"
_RIDGE = 1e-2
"""Ridge penalty, relative to the design's mean squared column norm."""


@dataclass(frozen=True)
class BuiltModel:
    """A built benchmark model: paths and the manifest."""

    root: Path
    manifest: JSONRecord
    """bench_model.json as written by the build (parsed JSON)"""

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def ct_cache(self) -> Path:
        return self.root / "ct_cache"

    @property
    def hf_home(self) -> Path:
        return self.root / "hf_home"

    @property
    def tl_model_name(self) -> str | None:
        return self.manifest.get("tl_model_name")

    def transcoder_ref(self, kind: str) -> str:
        """circuit-tracer's reference (``bench/<key>-<kind>``) under :attr:`ct_cache`."""
        return f"bench/{self.root.name}-{kind}"

    def transcoder_dir(self, kind: str) -> Path:
        return self.ct_cache / self.transcoder_ref(kind)


def ensure_built(spec: ModelSpec, work_dir: Path, *, verbose: bool | None = None) -> tuple[BuiltModel, bool]:
    """The cached build of `spec`, building it first if needed; returns (build, reused). ``verbose``: progress
    bars while building (default: when this module logs at INFO)."""
    root = Path(work_dir) / "models" / spec.key
    if (root / MANIFEST).is_file():
        logger.info("reusing benchmark model %s", root)
        return BuiltModel(root, json.loads((root / MANIFEST).read_text())), True
    tmp = root.parent / f".{spec.key}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        show = logger.isEnabledFor(logging.INFO) if verbose is None else verbose
        manifest = _build(spec, tmp, final_root=root, verbose=show)
        if root.exists():  # an unfinished build (no manifest): replace it
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return BuiltModel(root, manifest), False


def _build(spec: ModelSpec, root: Path, final_root: Path, *, verbose: bool) -> JSONRecord:
    t0 = time.perf_counter()
    logger.info("building benchmark model %s", spec.key)
    model_dir = root / "model"
    write_tokenizer(spec.vocab, model_dir, max_len=spec.max_positions)
    model = make_model(spec)
    with hf_progress_bars(verbose):  # no shard-writing bar under --quiet
        model.save_pretrained(model_dir, safe_serialization=True)
    portable_config(model_dir / "config.json")
    if spec.arch in TL_MODEL_NAME:  # relative links: they survive renaming the build folder
        make_hub_entry(model_dir, root / "hf_home", TL_MODEL_NAME[spec.arch])
    gen = torch.Generator().manual_seed(spec.seed + 1)
    mlp_in, mlp_out = calibration_io(model, spec, gen)
    refs = {kind: f"bench/{final_root.name}-{kind}" for kind in ("plt", "clt")}
    n_fits = spec.n_layers + spec.n_layers * (spec.n_layers + 1) // 2  # PLT layers, CLT (source, target) pairs
    with tqdm(total=n_fits, desc="fitting benchmark transcoders", disable=not verbose) as bar:
        plt_stats = write_plt(spec, mlp_in, mlp_out, root / "ct_cache" / refs["plt"], gen, scan=refs["plt"],
                              tick=bar.update)
        clt_stats = write_clt(spec, mlp_in, mlp_out, root / "ct_cache" / refs["clt"], gen, scan=refs["clt"],
                              tick=bar.update)
    manifest: JSONRecord = {
        "key": spec.key, "build_version": BUILD_VERSION, "spec": dataclasses.asdict(spec),
        "hf_architecture": type(model).__name__, "head_dim": spec.head_width,  # = config.architectures[0]
        "d_mlp": spec.mlp_width,
        "tl_model_name": TL_MODEL_NAME.get(spec.arch), "bos_id": BOS_ID,
        "transcoders": {
            "plt": {"ref": refs["plt"], "d_transcoder": spec.d_transcoder, "act": spec.act, "skip": spec.skip,
                    "calibration": plt_stats},
            "clt": {"ref": refs["clt"], "d_transcoder": spec.clt_width, "act": spec.act, "skip": False,
                    "calibration": clt_stats},
        },
        "calibration_tokens": int(mlp_in.shape[1]),
        "build_seconds": round(time.perf_counter() - t0, 2), "torch": torch.__version__,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


# ----------------------------------------------------------------------------- model and tokenizer
def write_tokenizer(vocab: int, out_dir: Path, *, max_len: int = 4096) -> None:
    """A whitespace word-level tokenizer over ``SPECIAL_TOKENS + w4 ... w{vocab-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS) + [f"w{i}" for i in range(len(SPECIAL_TOKENS), vocab)]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=SPECIAL_TOKENS[0]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    unk, bos, pad, eos = SPECIAL_TOKENS
    fast = PreTrainedTokenizerFast(tokenizer_object=core, unk_token=unk, bos_token=bos, pad_token=pad,
                                   eos_token=eos, model_max_length=max_len)
    fast.save_pretrained(str(out_dir))
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":  # transformers 5's name; 4.x (circuit-tracer's) lacks it
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(config, indent=2))


def portable_config(path: Path) -> None:
    """Also write transformers 4.x's RoPE keys (``rope_theta``, ``rope_scaling``) next to 5.x's
    ``rope_parameters``: 4.57 (circuit-tracer's pin) ignores the latter and would fall back to
    theta 10,000, a different model."""
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in config:
        config["rope_theta"] = rope.get("rope_theta", 10000.0)
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        config["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
        path.write_text(json.dumps(config, indent=2))


def make_model(spec: ModelSpec) -> "PreTrainedModel":
    """Random-weight HF causal LM; RMSNorm gains x (1 +- 10 %), final norm x final_norm_scale."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    cfg_cls, model_cls = {"qwen3": (Qwen3Config, Qwen3ForCausalLM),
                          "llama": (LlamaConfig, LlamaForCausalLM)}[spec.arch]
    cfg = cfg_cls(
        vocab_size=spec.vocab, hidden_size=spec.d_model, intermediate_size=spec.mlp_width,
        num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads,
        head_dim=spec.head_width, hidden_act="silu", max_position_embeddings=spec.max_positions,
        initializer_range=0.02, rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=False,
        attention_bias=False, attention_dropout=0.0, bos_token_id=BOS_ID, eos_token_id=3, pad_token_id=2,
    )
    cfg.architectures = [model_cls.__name__]
    torch.manual_seed(spec.seed)
    model = model_cls(cfg).eval()
    gen = torch.Generator().manual_seed(spec.seed + 7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):  # every RMSNorm: input, post-attention, q/k (Qwen3), final
                param.mul_(1 + 0.1 * (2 * torch.rand(param.shape, generator=gen) - 1))
        model.model.norm.weight.mul_(spec.final_norm_scale)
    return model


def random_prompt(n_tokens: int, vocab: int, seed: int) -> list[int]:
    """BOS + ``n_tokens - 1`` seeded random words (BOS counts towards n_tokens)."""
    gen = torch.Generator().manual_seed(seed)
    return [BOS_ID, *torch.randint(FIRST_WORD_ID, vocab, (n_tokens - 1,), generator=gen).tolist()]


@torch.no_grad()
def calibration_io(model: torch.nn.Module, spec: ModelSpec, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """MLP inputs and outputs on random sequences, BOS dropped: two (n_layers, n_tokens, d_model)."""
    seqs = torch.randint(FIRST_WORD_ID, spec.vocab, (spec.calib_seqs, spec.calib_len), generator=gen)
    seqs[:, 0] = BOS_ID
    return capture_transcoder_io(wrap_model(model), seqs, "mlp_input", "mlp_output", batch_size=16)


# ----------------------------------------------------------------------------- transcoder fits
def calibrated_encoder(x: Tensor, d_tc: int, target_l0: float, act: str, gen: torch.Generator) -> TranscoderLayer:
    """An encoder whose features each fire (strictly above their cut) on ~target_l0 / d_tc of the rows
    of x; its decoder is a placeholder until :func:`with_decoder` sets the fitted one."""
    n, d_model = x.shape
    W_enc = torch.randn(d_tc, d_model, generator=gen)
    W_enc /= W_enc.norm(dim=1, keepdim=True)
    k = min(n - 1, max(1, round(n * target_l0 / d_tc)))
    cut = torch.empty(d_tc)
    for f0 in range(0, d_tc, 4096):  # the (k+1)-th largest pre-activation of each feature
        pre = x @ W_enc[f0:f0 + 4096].T  # (n, chunk)
        cut[f0:f0 + 4096] = torch.topk(pre, k + 1, dim=0).values[k]
    W_dec, b_dec = torch.zeros(d_tc, d_model), torch.zeros(d_model)  # placeholders
    if act == "relu":
        return TranscoderLayer(W_enc=W_enc, b_enc=-cut, activation="relu", W_dec=W_dec, b_dec=b_dec)
    return TranscoderLayer(W_enc=W_enc, b_enc=torch.zeros(d_tc), activation="jumprelu", threshold=cut,
                           W_dec=W_dec, b_dec=b_dec)


def with_decoder(enc: TranscoderLayer, W_dec: Tensor, b_dec: Tensor, skip_T: Tensor | None = None) -> TranscoderLayer:
    return dataclasses.replace(enc, W_dec=W_dec.contiguous(), b_dec=b_dec, skip_T=skip_T)


def ridge(X: Tensor, Y: Tensor, lam: float = _RIDGE) -> Tensor:
    """argmin_W |X W - Y|^2 + lam' |W|^2 (lam' = lam * mean squared column norm), in float64."""
    return ridge_solve(X.double(), Y.double(), penalty=1e-8, relative=lam).float()


def _fvu(residual: Tensor, y: Tensor) -> float:
    return float(residual.pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-30))


def write_plt(spec: ModelSpec, mlp_in: Tensor, mlp_out: Tensor, out_dir: Path, gen: torch.Generator,
              *, scan: str, tick: Callable[[], object] = lambda: None) -> list[dict[str, float]]:
    """Per-layer transcoders (mwhanna/qwen3-4b-transcoders layout); returns calibration stats. ``tick`` is
    called after each layer's fit."""
    layers, stats = [], []
    for layer in range(spec.n_layers):
        x, y = mlp_in[layer], mlp_out[layer]
        enc = calibrated_encoder(x, spec.d_transcoder, spec.target_l0, spec.act, gen)
        acts = enc.encode(x)  # (n, d_transcoder)
        b_dec = y.mean(0)
        design = torch.cat([acts, x], dim=1) if spec.skip else acts  # (n, d_tc [+ d_model])
        W = ridge(design, y - b_dec)
        skip_T = W[spec.d_transcoder:] if spec.skip else None  # (d_model, d_model): x @ skip_T
        layers.append(with_decoder(enc, W[:spec.d_transcoder], b_dec, skip_T))
        stats.append({"layer": layer, "l0": float((acts > 0).sum(1).float().mean()),
                      "fvu": _fvu(design @ W + b_dec - y, y)})
        tick()
    write_transcoders(Transcoders(kind="plt", layers=tuple(layers), scan=scan), out_dir)
    return stats


def write_clt(spec: ModelSpec, mlp_in: Tensor, mlp_out: Tensor, out_dir: Path, gen: torch.Generator,
              *, scan: str, tick: Callable[[], object] = lambda: None) -> list[dict[str, float]]:
    """A cross-layer transcoder; the decoders of target layer l are fitted source by source
    (l, l-1, ..., 0), each to what the previous ones left, so no Gram matrix exceeds one layer's. ``tick`` is
    called after each (source, target) fit."""
    L, d_tc = spec.n_layers, spec.clt_width
    encoders = [calibrated_encoder(mlp_in[i], d_tc, spec.target_l0, spec.act, gen) for i in range(L)]
    W_dec = [torch.zeros(d_tc, L - i, spec.d_model) for i in range(L)]
    b_dec = mlp_out.mean(1)  # (n_layers, d_model)
    stats = []
    for target in range(L):
        y = mlp_out[target]
        residual = y - b_dec[target]  # (n, d_model)
        for source in range(target, -1, -1):
            acts = encoders[source].encode(mlp_in[source])  # (n, d_tc)
            W = ridge(acts, residual)
            W_dec[source][:, target - source] = W
            residual = residual - acts @ W
            tick()
        l0 = (encoders[target].encode(mlp_in[target]) > 0).sum(1).float().mean()
        stats.append({"layer": target, "l0": float(l0), "fvu": _fvu(residual, y)})
    layers = tuple(with_decoder(enc, W_dec[i], b_dec[i]) for i, enc in enumerate(encoders))
    write_transcoders(Transcoders(kind="clt", layers=layers, scan=scan), out_dir)
    return stats


# ----------------------------------------------------------------------------- hub-cache entry
def make_hub_entry(model_dir: Path, hf_home: Path, repo_id: str) -> Path:
    """``hf_home/hub/models--org--name/{refs/main, snapshots/<rev>/*}`` linking to model_dir's files."""
    entry = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    rev = hashlib.sha1((model_dir / "config.json").read_bytes()).hexdigest()
    snapshot = entry / "snapshots" / rev
    snapshot.mkdir(parents=True, exist_ok=True)
    (entry / "refs").mkdir(exist_ok=True)
    (entry / "refs" / "main").write_text(rev)
    for src in sorted(model_dir.iterdir()):
        if not src.is_file():
            continue
        link = snapshot / src.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(src.resolve(), snapshot.resolve()))
    return snapshot


def check_buildable(spec: ModelSpec) -> None:
    """Refuse specs the machine obviously cannot calibrate (before spending minutes)."""
    n = spec.calib_seqs * (spec.calib_len - 1)
    widest = max(spec.d_transcoder + (spec.d_model if spec.skip else 0), spec.clt_width)
    gram = min(n, widest) ** 2 * 8
    if gram > 64 * 2**30:
        raise WorkbenchError(f"calibration must fit in memory; got a {gram / 2**30:.0f} GiB ridge Gram "
                             f"matrix for {n} calibration tokens x {widest} features. Lower "
                             "--calib-seqs / --calib-len.")

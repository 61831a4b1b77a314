"""What `workbench bench` builds and runs: two frozen configs (the CLI parses into them).

* :class:`ModelSpec` -- the synthetic benchmark model and its transcoders. Its :attr:`ModelSpec.key`
  (readable dims + a hash of every field) names the cached build in the work dir, so a spec is
  built once and reused.
* :class:`BenchConfig` -- prompt lengths, the baseline to run, repeats, threads, outputs.

Validation raises :class:`tracer.errors.WorkbenchError` (one line; the CLI exits 2). This module
imports nothing heavy (``tracer`` pulls in torch), so ``workbench --help`` can read its docstrings.
"""

import dataclasses
import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

ARCHS = ("qwen3", "llama")
"""Architectures the builder makes (``Qwen3ForCausalLM``, ``LlamaForCausalLM``)."""
BACKENDS = ("transformerlens", "nnsight")
"""circuit-tracer back ends; TransformerLens only for Qwen3 (see :mod:`workbench.bench.build`)."""
BUILD_VERSION = 4
"""Bumped when the builder's output changes, so that old cached builds are not reused."""
SEED_LIMIT = 2**63
"""Seeds must be below this (torch seeds are 64-bit; the builder also seeds with ``seed + 7``)."""
FINAL_NORM_SCALE_MAX = 1e6
"""Largest ``final_norm_scale``: the final norm's weights must stay far below the loader's bound of
sqrt(float32 max) ~ 1.8e19 (``tracer.weights.MAX_ABS_WEIGHT``); 8 already peaks the distribution."""
GEMM_SECONDS_MAX = 3600.0
"""Longest GEMM peak measurement (a few seconds give a stable rate)."""


def WorkbenchError(message: str) -> Exception:  # noqa: N802 - stands in for the class, imported lazily
    """A :class:`tracer.errors.WorkbenchError` (imported only when raised: ``tracer`` imports torch)."""
    from tracer.errors import WorkbenchError as error_class

    return error_class(message)


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WorkbenchError(f"{name} must be a positive integer; got {value!r}.")


def _seed(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEED_LIMIT:
        raise WorkbenchError(f"{name} must be an integer in [0, 2**63); got {value!r}. "
                             "Torch seeds are 64-bit; pick another seed.")


def _finite_in(name: str, value: object, high: float, hint: str) -> None:
    """`value` must be a finite real number in (0, high]."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and 0 < value <= high)
    if not ok:
        raise WorkbenchError(f"{name} must be a finite number in (0, {high:g}]; got {value!r}. {hint}")


def _distinct(name: str, values: tuple[object, ...]) -> None:
    repeated = sorted({repr(v) for v in values if values.count(v) > 1})
    if repeated:
        raise WorkbenchError(f"{name} must not repeat a value; got {', '.join(repeated)} more than once in "
                             f"{list(values)!r}. List each value once (repeats measures a case again).")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A random-weight benchmark model and transcoders calibrated to a target L0."""

    arch: str = "qwen3"
    """Architecture: qwen3 (Qwen3ForCausalLM) or llama (LlamaForCausalLM)."""
    n_layers: int = 4
    """Transformer blocks."""
    d_model: int = 256
    """Residual stream width (hidden_size)."""
    n_heads: int = 8
    """Query heads."""
    n_kv_heads: int = 2
    """Key/value heads (GQA); must divide n_heads."""
    head_dim: int | None = None
    """Head width (default d_model // n_heads)."""
    d_mlp: int | None = None
    """MLP width (default 4 * d_model)."""
    vocab: int = 512
    """Vocabulary size (ids 0-3 are special, BOS is id 1)."""
    d_transcoder: int = 2048
    """Features per layer of the per-layer transcoder (PLT)."""
    clt_d_transcoder: int | None = None
    """Features per layer of the cross-layer transcoder (default d_transcoder // 2)."""
    target_l0: float = 48.0
    """Mean active features per token and layer the encoders are calibrated to."""
    act: str = "relu"
    """Activation: relu (threshold folded into b_enc) or jumprelu (stored threshold)."""
    skip: bool = False
    """Give the PLT a linear skip W_skip (circuit-tracer's CLT loader drops skips, so the CLT has none)."""
    seed: int = 0
    """Seed of the weights and the calibration batch (0 <= seed < 2**63)."""
    final_norm_scale: float = 8.0
    """Factor on the final RMSNorm weight, so that the next-token distribution is peaked (finite, in (0, 1e6])."""
    calib_seqs: int = 64
    """Calibration sequences (random words after a BOS)."""
    calib_len: int = 64
    """Tokens per calibration sequence."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise WorkbenchError(f"arch must be one of {list(ARCHS)}; got {self.arch!r}.")
        for name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "vocab", "d_transcoder", "calib_seqs",
                     "calib_len"):
            _positive_int(name, getattr(self, name))
        for name in ("head_dim", "d_mlp", "clt_d_transcoder"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.n_heads % self.n_kv_heads:
            raise WorkbenchError(f"n_kv_heads must divide n_heads ({self.n_heads}); got {self.n_kv_heads}.")
        if self.vocab < 8:
            raise WorkbenchError(f"vocab must be >= 8 (4 special ids + words); got {self.vocab}.")
        if self.calib_len < 2:
            raise WorkbenchError(f"calib_len must be >= 2 (BOS + a word); got {self.calib_len}.")
        if not 0 < self.target_l0 < min(self.d_transcoder, self.clt_width):
            raise WorkbenchError(f"target_l0 must be in (0, d_transcoder); got {self.target_l0!r} for "
                                 f"widths {self.d_transcoder} (PLT) and {self.clt_width} (CLT).")
        if self.act not in ("relu", "jumprelu"):
            raise WorkbenchError(f"act must be 'relu' or 'jumprelu'; got {self.act!r}.")
        _finite_in("final_norm_scale", self.final_norm_scale, FINAL_NORM_SCALE_MAX,
                   "It multiplies the final norm's weights (default 8).")
        _seed("seed", self.seed)

    @property
    def head_width(self) -> int:
        return self.head_dim or max(1, self.d_model // self.n_heads)

    @property
    def mlp_width(self) -> int:
        return self.d_mlp or 4 * self.d_model

    @property
    def clt_width(self) -> int:
        return self.clt_d_transcoder or max(1, self.d_transcoder // 2)

    @property
    def max_positions(self) -> int:
        """The model's context (max_position_embeddings): 4096, or the calibration length if longer."""
        return max(4096, self.calib_len)

    @property
    def key(self) -> str:
        """Readable dims + a hash of every field (and the builder version): the cache folder name."""
        fields = {k: float(v) if k in ("target_l0", "final_norm_scale") else v
                  for k, v in dataclasses.asdict(self).items()}  # 48 and 48.0 are one spec
        payload = json.dumps({**fields, "build_version": BUILD_VERSION}, sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
        return (f"{self.arch}-L{self.n_layers}-d{self.d_model}-h{self.n_heads}kv{self.n_kv_heads}"
                f"-V{self.vocab}-T{self.d_transcoder}-{self.act}{'-skip' if self.skip else ''}-{digest}")


def default_work_dir() -> Path:
    """``$XDG_CACHE_HOME/manifold-workbench/bench`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "manifold-workbench" / "bench"


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to run on the benchmark model, and where to write."""

    transcoders: tuple[str, ...] = ("plt", "clt")
    """Transcoder kinds to benchmark (plt, clt or both)."""
    n_tokens: tuple[int, ...] = (16, 64, 256)
    """Prompt lengths, BOS included (BOS + seeded random words); each length once."""
    max_feature_nodes: int | None = None
    """Cap on feature nodes (greedy by influence, as circuit-tracer); default all features."""
    run_baseline: bool = True
    """Run circuit-tracer when a baseline interpreter is given or this one imports circuit_tracer."""
    baseline_python: str | None = None
    """Python interpreter with circuit-tracer 0.5.0 installed (default: this one, if it imports
    circuit_tracer)."""
    baseline_backends: tuple[str, ...] = ()
    """circuit-tracer back ends to run (transformerlens, nnsight); empty: transformerlens for qwen3,
    nnsight for llama."""
    baseline_max_n_tokens: int | None = None
    """Run circuit-tracer only for prompts up to this length (its time grows about cubically); default
    all lengths."""
    baseline_timeout: float | None = None
    """Stop a circuit-tracer run after this many seconds (finite, > 0; default no limit); it is then
    reported as an error."""
    repeats: int = 1
    """Runs of every measurement; the report uses the median (all values are kept)."""
    threads: int | None = None
    """Torch threads for every run, ours and circuit-tracer's (default: all cores)."""
    device: str = "cpu"
    """cpu or cuda (peak GPU memory is then reported as well)."""
    prompt_seed: int = 1234
    """Seed of the prompt's random words (0 <= seed < 2**63)."""
    batch_size: int = 256
    """circuit-tracer's batch_size (and ours, which only uses it for greedy selection)."""
    gemm_seconds: float = 2.0
    """Seconds of the float32 GEMM peak measurement (finite, in (0, 3600])."""
    trace_format: str = "native"
    """File our `workbench trace` writes: native (safetensors) or npz (whose zip CRC-32 costs about
    1 s of CPU per GB with Python's zlib)."""
    keep_graphs: bool = False
    """Keep the graph files after comparing (they are N x N float32: 10 GB at N = 50k)."""
    work_dir: Path = field(default_factory=default_work_dir)
    """Cache of built models and the run folders."""

    def __post_init__(self) -> None:
        bad = [k for k in self.transcoders if k not in ("plt", "clt")]
        if bad or not self.transcoders:
            raise WorkbenchError(f"transcoders must be plt, clt or both; got {list(self.transcoders)!r}.")
        _distinct("transcoders", self.transcoders)
        if not self.n_tokens:
            raise WorkbenchError("n_tokens must list at least one prompt length; got none. Example: 16,64.")
        for n in self.n_tokens:
            if not isinstance(n, int) or isinstance(n, bool) or n < 2:
                raise WorkbenchError(f"n_tokens must be integers >= 2 (BOS + a word); got {n!r}.")
        _distinct("n_tokens", self.n_tokens)
        for name in ("max_feature_nodes", "baseline_max_n_tokens", "threads"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        from workbench.cli_threads import max_threads

        if self.threads is not None and self.threads > max_threads():  # thousands crash the thread pools
            raise WorkbenchError(f"threads must be at most {max_threads()} (the larger of 64 and 8 per core); got "
                                 f"{self.threads}.")
        bad = [b for b in self.baseline_backends if b not in BACKENDS]
        if bad:
            raise WorkbenchError(f"baseline backend must be one of {list(BACKENDS)}; got {bad[0]!r}.")
        _distinct("baseline_backends", self.baseline_backends)
        _positive_int("repeats", self.repeats)
        _positive_int("batch_size", self.batch_size)
        _seed("prompt_seed", self.prompt_seed)
        self._check_seconds()
        if self.trace_format not in ("native", "npz"):
            raise WorkbenchError(f"trace_format must be 'native' or 'npz'; got {self.trace_format!r}.")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise WorkbenchError(f"device must be 'cpu' or 'cuda[:N]'; got {self.device!r}.")

    def _check_seconds(self) -> None:
        if self.baseline_timeout is not None:
            _finite_in("baseline_timeout", self.baseline_timeout, threading.TIMEOUT_MAX,
                       "Give seconds, or leave it out for no timeout.")
        _finite_in("gemm_seconds", self.gemm_seconds, GEMM_SECONDS_MAX, "A few seconds give a stable rate.")

    @property
    def n_threads(self) -> int:
        """Torch threads of every run: `threads`, else the cores this process may use."""
        if self.threads:
            return self.threads
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1

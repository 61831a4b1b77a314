"""Frozen configuration objects (attribution, pruning). The CLI parses its flags into these same dataclasses."""

from dataclasses import dataclass
from typing import Literal, TypeGuard

from tracer.errors import WorkbenchError


def _is_int(value: object) -> TypeGuard[int]:
    """An integer, not a bool (True is an int to Python, never a count here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> TypeGuard[int | float]:
    """An int or float, not a bool (nor a string that looks like a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_count(name: str, value: object, *, optional: bool = False) -> None:
    """`value` must be an integer >= 1 (or None when `optional`)."""
    if optional and value is None:
        return
    if not _is_int(value) or value < 1:
        raise WorkbenchError(f"{name} must be an integer >= 1{' or None' if optional else ''}; got {value!r}.")


@dataclass(frozen=True, kw_only=True)
class AttributionConfig:
    """How to build an attribution graph (defaults are circuit-tracer 0.5.0's `attribute`)."""

    max_n_logits: int = 10
    """Most logit targets: the smallest top-k set reaching desired_logit_prob, k <= this."""
    desired_logit_prob: float = 0.95
    """Cumulative probability the logit targets should cover."""
    batch_size: int = 256
    """Target rows per backward sweep; also sets the greedy selection's chunk (x update_interval)."""
    max_feature_nodes: int | None = None
    """Keep at most this many features, chosen greedily by estimated influence (None: all)."""
    update_interval: int = 4
    """With max_feature_nodes: re-rank features every this many batches."""
    sweep_rows: int = 32
    """Rows per backward sweep inside a batch (cache-sized; does not change the graph)."""
    n_workers: int | None = None
    """Parallel single-threaded sweep workers (None: torch's thread count on CPU, 1 on GPU)."""
    engine: Literal["fast", "autograd"] = "fast"
    """'fast': the explicit backward; 'autograd': the reference (slow, for checking)."""
    adjacency_dtype: Literal["auto", "float32", "float64", "bfloat16", "float16"] = "auto"
    """Storage dtype of the adjacency ('auto': float64 for float64 models, else float32; bf16/fp16
    halve its memory, see README)."""
    verbose: bool = False
    """Show progress bars (the library is silent unless asked; the CLI shows them unless told to be quiet)."""

    def __post_init__(self) -> None:
        for name in ("max_n_logits", "batch_size", "update_interval", "sweep_rows"):
            _check_count(name, getattr(self, name))
        for name in ("max_feature_nodes", "n_workers"):
            _check_count(name, getattr(self, name), optional=True)
        p = self.desired_logit_prob
        if not _is_real(p) or not 0.0 < p <= 1.0:
            raise WorkbenchError(f"desired_logit_prob must be a number in (0, 1]; got {p!r}. It is the logit "
                                 "targets' cumulative probability (default 0.95).")
        if self.engine not in ("fast", "autograd"):
            raise WorkbenchError(f"engine must be 'fast' or 'autograd'; got {self.engine!r}.")
        if self.adjacency_dtype not in ("auto", "float32", "float64", "bfloat16", "float16"):
            raise WorkbenchError(f"adjacency_dtype must be auto, float32, float64, bfloat16 or float16; got "
                                 f"{self.adjacency_dtype!r}.")
        if not isinstance(self.verbose, bool):
            raise WorkbenchError(f"verbose must be True or False; got {self.verbose!r}.")


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """How to prune an attribution graph (defaults are circuit-tracer 0.5.0's)."""

    node_threshold: float = 0.8
    """Keep the most influential nodes that together hold this fraction of the total influence."""
    edge_threshold: float = 0.98
    """Keep the highest-scoring edges that together hold this fraction of the total edge score."""

    def __post_init__(self) -> None:
        for name in ("node_threshold", "edge_threshold"):
            value = getattr(self, name)
            ok = _is_real(value) and 0.0 <= value <= 1.0
            if not ok:
                raise WorkbenchError(f"{name} must be in [0, 1]; got {value!r}. It is a fraction of "
                                     "the total influence (defaults: node 0.8, edge 0.98).")


@dataclass(frozen=True, kw_only=True)
class ActivationConfig:
    """What to record when collecting transcoder activations over a corpus (tracer.activations)."""

    feature_layers: tuple[int, ...] | None = None
    """Transcoder layers whose sparse feature activations are stored (None: every layer)."""
    residual_layers: tuple[int, ...] = ()
    """Residual-stream layers (0 = embedding output, k = output of block k-1, n_layers = before the
    final norm) whose vectors are stored at the chosen positions."""
    mlp_input_layers: tuple[int, ...] = ()
    """Layers whose transcoder-input vectors (the MLP input location) are stored at the chosen positions."""
    positions: Literal["all", "last", "field"] = "last"
    """Positions of the stored vectors: every position, the last one, or each record's 'position'
    field (an integer; negative counts from the end)."""
    batch_size: int = 32
    """Prompts per forward pass."""
    shard_prompts: int = 1024
    """Prompts per shard file (a killed run resumes at the first unfinished shard)."""
    value_dtype: Literal["float16", "float32"] = "float32"
    """Storage dtype of activation values and vectors."""
    encode_rows: int = 4096
    """Token rows encoded at once (bounds memory for wide transcoders)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_prompts", "encode_rows"):
            _check_count(name, getattr(self, name))
        for name in ("feature_layers", "residual_layers", "mlp_input_layers"):
            value = getattr(self, name)
            if value is None and name == "feature_layers":
                continue
            if not isinstance(value, tuple) or not all(_is_int(v) and v >= 0 for v in value):
                raise WorkbenchError(f"{name} must be a tuple of layer indices >= 0; got {value!r}.")
            repeated = [x for k, x in enumerate(value or ()) if x in (value or ())[:k]]
            if repeated:  # a repeated layer was stored twice (every activation doubled in layer_matrix)
                err = WorkbenchError(f"{name} must name each layer once; got {list(value or ())}, which repeats layer "
                                     f"{repeated[0]}. Drop the repeat.")
                err.fields = (name,)
                raise err
        if self.feature_layers == () and not (self.residual_layers or self.mlp_input_layers):
            raise WorkbenchError("feature_layers must name at least one layer, or be None (every layer), when no "
                                 "vectors are stored; got (). Name the layers or leave feature_layers out.")
        if self.positions not in ("all", "last", "field"):
            raise WorkbenchError(f"positions must be 'all', 'last' or 'field'; got {self.positions!r}.")
        if self.value_dtype not in ("float16", "float32"):
            raise WorkbenchError(f"value_dtype must be 'float16' or 'float32'; got {self.value_dtype!r}.")

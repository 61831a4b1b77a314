"""Declarative architecture adapters: where an HF causal LM keeps its parts, and its config facts.

An adapter says *where things live* (module paths, relative to the model or to a decoder layer),
which norms wrap which sub-layer, and which config keys hold the model's dimensions; nothing else
in tracer names a module path or an architecture. Every supported block has the pre-norm shape::

    x1 = n1(r)              # attn_norm, frozen scale
    a  = Attn(x1)           # patterns frozen: linear through V and O only
    a  = n_pa(a)            # Gemma-2 only: post_attn_norm, frozen scale
    h  = r + a
    x2 = n2(h)              # mlp_norm, frozen scale
    m  = MLP(x2)            # replaced by transcoder output + error (constants) [+ linear skip]
    m  = n_pm(m)            # Gemma-2 only: post_mlp_norm, frozen scale
    r' = h + m

Dispatch is on ``config.architectures[0]`` (falling back to ``config.model_type``), never on a
model's name. An adapter refuses config features it cannot compute exactly.
"""

from dataclasses import dataclass
from typing import Any

from tracer.errors import ArchitectureError

# Transcoder hook names (circuit-tracer's TransformerLens names) -> our locations.
# Input locations: "mlp_input" = the MLP module's input (normed, gain applied);
#                  "normalized" = the MLP-input norm's h/rms(h) before the gain.
# Output locations: "mlp_output" = the MLP module's output;
#                   "block_mlp_out" = what the block adds to the residual (after a post-MLP norm).
INPUT_HOOKS = {"mlp.hook_in": "mlp_input", "ln2.hook_normalized": "normalized"}
OUTPUT_HOOKS = {"mlp.hook_out": "mlp_output", "hook_mlp_out": "block_mlp_out"}


@dataclass(frozen=True, kw_only=True)
class ModulePaths:
    """Dotted attribute paths: model-level ones from the causal LM, block-level ones from a layer."""

    layers: str = "model.layers"
    """the ModuleList of decoder layers"""
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    attn_norm: str = "input_layernorm"
    attn: str = "self_attn"
    v_proj: str = "self_attn.v_proj"
    o_proj: str = "self_attn.o_proj"
    mlp_norm: str = "post_attention_layernorm"
    """the MLP-input norm"""
    mlp: str = "mlp"
    post_attn_norm: str | None = None
    """norm applied to the attention output before the residual add (Gemma-2), or None"""
    post_mlp_norm: str | None = None
    """norm applied to the MLP output before the residual add (Gemma-2), or None"""


@dataclass(frozen=True, kw_only=True)
class ConfigKeys:
    """Which HF config keys hold the model's dimensions (the same for all supported archs)."""

    n_layers: str = "num_hidden_layers"
    d_model: str = "hidden_size"
    n_heads: str = "num_attention_heads"
    n_kv_heads: str = "num_key_value_heads"
    """may be absent or null: then n_kv_heads = n_heads"""
    d_head: str = "head_dim"
    """may be absent or null: then d_model // n_heads"""
    norm_eps: str = "rms_norm_eps"
    d_vocab: str = "vocab_size"
    max_positions: str = "max_position_embeddings"


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """A model's dimensions, read once from its config through :class:`ConfigKeys`."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    norm_eps: float
    d_vocab: int
    max_positions: int | None


def _get(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def _int(config: Any, key: str, where: str) -> int:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArchitectureError(f"config {key} must be a positive integer; got {value!r} in {where}. "
                                "The model's config.json is damaged.")
    return value


@dataclass(frozen=True, kw_only=True)
class Adapter:
    """Where an architecture keeps its parts, how its norms behave, and what it refuses."""

    name: str
    """Short name used in messages and provenance."""
    architectures: tuple[str, ...]
    """HF ``config.architectures[0]`` values this adapter serves."""
    model_types: tuple[str, ...]
    """HF ``config.model_type`` values this adapter serves."""
    paths: ModulePaths = ModulePaths()
    keys: ConfigKeys = ConfigKeys()
    norm_gain_offset: float = 0.0
    """The norm multiplies by ``weight + offset`` (Gemma: 1.0, Llama/Qwen: 0.0)."""
    embed_scale_sqrt_d: bool = False
    """Embeddings are multiplied by sqrt(d_model) (Gemma)."""
    qk_norm: bool = False
    """RMSNorms on queries and keys per head (Qwen3)."""
    query_scale_key: str | None = None
    """config key of the attention scale's denominator (Gemma-2: query_pre_attn_scalar), else head_dim"""
    attn_softcap_key: str | None = None
    """config key of the attention-logit softcap (Gemma-2)"""
    final_softcap_key: str | None = None
    """config key of the final-logit softcap (Gemma-2)"""
    refused_flags: tuple[tuple[str, str], ...] = ()
    """(config key, reason): configs where the key is truthy are refused"""
    window_key: str | None = None
    """config key of a sliding window: prompts longer than it are refused, so ``layer_types`` may list
    sliding layers; without one, a config whose ``layer_types`` lists any is refused"""
    default_input_hook: str = "mlp.hook_in"
    default_output_hook: str = "mlp.hook_out"

    def facts(self, config: Any, where: str = "config.json") -> ModelFacts:
        """The model's dimensions from an HF config (object or dict)."""
        k = self.keys
        n_heads = _int(config, k.n_heads, where)
        d_model = _int(config, k.d_model, where)
        n_kv = _int(config, k.n_kv_heads, where) if _get(config, k.n_kv_heads) is not None else n_heads
        d_head = _int(config, k.d_head, where) if _get(config, k.d_head) is not None else d_model // n_heads
        if n_heads % n_kv:
            raise ArchitectureError(f"config {k.n_heads} must be a multiple of {k.n_kv_heads}; got {n_heads} "
                                    f"and {n_kv} in {where}.")
        eps = _get(config, k.norm_eps)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
            raise ArchitectureError(f"config {k.norm_eps} must be a number in [0, 1); got {eps!r} in {where}.")
        max_pos = _get(config, k.max_positions)
        return ModelFacts(n_layers=_int(config, k.n_layers, where), d_model=d_model, n_heads=n_heads,
                          n_kv_heads=n_kv, d_head=d_head, norm_eps=float(eps), d_vocab=_int(config, k.d_vocab, where),
                          max_positions=max_pos if isinstance(max_pos, int) and not isinstance(max_pos, bool) else None)

    def check_config(self, config: Any, n_pos: int | None = None) -> None:
        """Refuse config features this adapter cannot compute exactly."""
        if _get(config, "is_encoder_decoder"):
            raise ArchitectureError(f"{self.name}: encoder-decoder models are not supported; use a causal LM.")
        for key, reason in self.refused_flags:
            if _get(config, key):
                raise ArchitectureError(f"{self.name} config must have {key}=False; got True. {reason}")
        self._check_layer_types(config)
        window = self.window(config)
        if window is not None and n_pos is not None and n_pos > window:
            raise ArchitectureError(
                f"prompt length must be <= {self.name}'s {self.window_key} ({window}); got {n_pos} tokens. "
                "Shorten the prompt: beyond the window, local and global layers differ."
            )

    def window(self, config: Any) -> int | None:
        """The sliding-window length this adapter models (``window_key``), or None."""
        window = _get(config, self.window_key) if self.window_key else None
        return window if isinstance(window, int) and not isinstance(window, bool) else None

    def _check_layer_types(self, config: Any) -> None:
        """Without a window this adapter models (``window_key``), every listed layer type must be full
        attention: transformers runs a ``sliding_attention`` entry with a window (or fails without one)."""
        types = _get(config, "layer_types")
        if self.window_key is not None or not isinstance(types, (list, tuple)):
            return
        sliding = [i for i, t in enumerate(types) if t != "full_attention"]
        if sliding:
            raise ArchitectureError(
                f"{self.name} config layer_types must list only 'full_attention'; got {types[sliding[0]]!r} at "
                f"layers {sliding}. tracer does not model sliding windows; if the model was trained without one, "
                "set use_sliding_window to false and every layer_types entry to 'full_attention' in config.json.")

    def input_location(self, hook: str) -> str:
        try:
            return INPUT_HOOKS[hook]
        except KeyError:
            raise ArchitectureError(f"feature_input_hook must be one of {sorted(INPUT_HOOKS)}; got {hook!r}. "
                                    "Fix config.yaml of the transcoders.") from None

    def output_location(self, hook: str) -> str:
        try:
            loc = OUTPUT_HOOKS[hook]
        except KeyError:
            raise ArchitectureError(f"feature_output_hook must be one of {sorted(OUTPUT_HOOKS)}; got {hook!r}. "
                                    "Fix config.yaml of the transcoders.") from None
        if loc == "block_mlp_out" and self.paths.post_mlp_norm is None:
            return "mlp_output"  # identical places when there is no post-MLP norm
        return loc


QWEN3 = Adapter(
    name="qwen3", architectures=("Qwen3ForCausalLM",), model_types=("qwen3",), qk_norm=True,
    refused_flags=(("use_sliding_window", "tracer freezes attention patterns per layer and does not model "
                    "Qwen3's mixed sliding/full layers; if the model was trained without a window, set it to "
                    "false and every layer_types entry to 'full_attention' in config.json."),),
)
LLAMA = Adapter(name="llama", architectures=("LlamaForCausalLM",), model_types=("llama",))
GEMMA2 = Adapter(
    name="gemma2", architectures=("Gemma2ForCausalLM",), model_types=("gemma2",),
    paths=ModulePaths(mlp_norm="pre_feedforward_layernorm", post_attn_norm="post_attention_layernorm",
                      post_mlp_norm="post_feedforward_layernorm"),
    norm_gain_offset=1.0, embed_scale_sqrt_d=True, query_scale_key="query_pre_attn_scalar",
    attn_softcap_key="attn_logit_softcapping", final_softcap_key="final_logit_softcapping",
    window_key="sliding_window", default_input_hook="ln2.hook_normalized", default_output_hook="hook_mlp_out",
)

ADAPTERS: tuple[Adapter, ...] = (QWEN3, LLAMA, GEMMA2)


def adapter_for(config: Any) -> Adapter:
    """The adapter for an HF config (object or dict), by ``architectures[0]`` then ``model_type``."""
    archs = _get(config, "architectures")
    archs = list(archs) if isinstance(archs, (list, tuple)) else []
    model_type = _get(config, "model_type")
    for adapter in ADAPTERS:
        if archs and archs[0] in adapter.architectures:
            return adapter
    if not archs:
        for adapter in ADAPTERS:
            if model_type in adapter.model_types:
                return adapter
    supported = sorted(a for ad in ADAPTERS for a in ad.architectures)
    got = archs[0] if archs else model_type
    raise ArchitectureError(f"model architecture must be one of {supported}; got {got!r}. "
                            "Other architectures need an adapter in tracer/models/adapters.py.")

"""Architecture adapters: one small declarative spec per supported HF architecture."""

from tracer.adapters.base import Adapter
from tracer.errors import ArchitectureError

QWEN3 = Adapter(
    name="qwen3",
    architectures=("Qwen3ForCausalLM",),
    model_types=("qwen3",),
    mlp_norm="post_attention_layernorm",
)
LLAMA = Adapter(
    name="llama",
    architectures=("LlamaForCausalLM",),
    model_types=("llama",),
    mlp_norm="post_attention_layernorm",
)
GEMMA2 = Adapter(
    name="gemma2",
    architectures=("Gemma2ForCausalLM",),
    model_types=("gemma2",),
    mlp_norm="pre_feedforward_layernorm",
    post_attn_norm="post_attention_layernorm",
    post_mlp_norm="post_feedforward_layernorm",
    norm_gain_offset=1.0,
    norm_eps_attr="eps",
    embed_scale_sqrt_d=True,
    default_input_hook="ln2.hook_normalized",
    default_output_hook="hook_mlp_out",
)

ADAPTERS: tuple[Adapter, ...] = (QWEN3, LLAMA, GEMMA2)


def adapter_for(config: object) -> Adapter:
    """The adapter for an HF config, by ``architectures[0]`` then ``model_type``."""
    archs = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if archs and archs[0] in adapter.architectures:
            return adapter
    if not archs:
        for adapter in ADAPTERS:
            if model_type in adapter.model_types:
                return adapter
    supported = sorted(a for ad in ADAPTERS for a in ad.architectures)
    got = archs[0] if archs else model_type
    raise ArchitectureError(
        f"model architecture must be one of {supported}; got {got!r}. "
        "Other architectures need an adapter in tracer/adapters."
    )


__all__ = ["ADAPTERS", "GEMMA2", "LLAMA", "QWEN3", "Adapter", "adapter_for"]

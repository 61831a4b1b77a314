"""Declarative architecture adapters.

An adapter says *where things live* in a Hugging Face causal LM and which norms wrap which
sub-layer; the attribution algorithm itself is written once (``tracer.attribution``) and reads
only this description. Every supported block has the pre-norm shape::

    x1 = n1(r)              # input_layernorm, frozen scale
    a  = Attn(x1)           # patterns frozen: linear through V and O only
    a  = n_pa(a)            # Gemma-2 only: post_attention_layernorm, frozen scale
    h  = r + a
    x2 = n2(h)              # the MLP input norm, frozen scale
    m  = MLP(x2)            # replaced by transcoder output + error (constants) [+ linear skip]
    m  = n_pm(m)            # Gemma-2 only: post_feedforward_layernorm, frozen scale
    r' = h + m

Dispatch is on ``config.architectures[0]`` (falling back to ``config.model_type``), never on a
model's name.
"""

from dataclasses import dataclass

from tracer.errors import ArchitectureError

# Transcoder hook names (circuit-tracer's TransformerLens names) -> our locations.
# Input locations: "mlp_input" = the MLP module's input (normed, gain applied);
#                  "normalized" = the MLP-input norm's h/rms(h) before the gain.
# Output locations: "mlp_output" = the MLP module's output;
#                   "block_mlp_out" = what the block adds to the residual (after a post-MLP norm).
INPUT_HOOKS = {"mlp.hook_in": "mlp_input", "ln2.hook_normalized": "normalized"}
OUTPUT_HOOKS = {"mlp.hook_out": "mlp_output", "hook_mlp_out": "block_mlp_out"}


@dataclass(frozen=True, kw_only=True)
class Adapter:
    """Where an architecture keeps its parts, and how its norms behave."""

    name: str
    """Short name used in messages and provenance."""
    architectures: tuple[str, ...]
    """HF ``config.architectures[0]`` values this adapter serves."""
    model_types: tuple[str, ...]
    """HF ``config.model_type`` values this adapter serves."""
    mlp_norm: str
    """Attribute of a decoder layer holding the MLP-input norm."""
    post_attn_norm: str | None = None
    """Attribute of the post-attention norm (Gemma-2), or None."""
    post_mlp_norm: str | None = None
    """Attribute of the post-MLP norm (Gemma-2), or None."""
    norm_gain_offset: float = 0.0
    """The norm multiplies by ``weight + offset`` (Gemma: 1.0, Llama/Qwen: 0.0)."""
    norm_eps_attr: str = "variance_epsilon"
    """Attribute of the norm module holding epsilon."""
    embed_scale_sqrt_d: bool = False
    """Embeddings are multiplied by sqrt(d_model) (Gemma)."""
    default_input_hook: str = "mlp.hook_in"
    default_output_hook: str = "mlp.hook_out"

    def check_config(self, config: object, n_pos: int | None = None) -> None:
        """Refuse config features this adapter cannot compute exactly."""
        if getattr(config, "is_encoder_decoder", False):
            raise ArchitectureError(f"{self.name}: encoder-decoder models are not supported; use a causal LM.")
        if self.name == "qwen3" and getattr(config, "use_sliding_window", False):
            raise ArchitectureError(
                "qwen3 config must have use_sliding_window=False; got True. tracer freezes attention "
                "patterns per layer and does not model Qwen3's mixed sliding/full layers; set it to "
                "False in config.json if the model was trained without a window."
            )
        window = getattr(config, "sliding_window", None)
        if self.name == "gemma2" and window is not None and n_pos is not None and n_pos > window:
            raise ArchitectureError(
                f"prompt length must be <= Gemma-2's sliding_window ({window}); got {n_pos} tokens. "
                "Shorten the prompt: beyond the window, local and global layers differ."
            )

    def input_location(self, hook: str) -> str:
        try:
            loc = INPUT_HOOKS[hook]
        except KeyError:
            raise ArchitectureError(
                f"feature_input_hook must be one of {sorted(INPUT_HOOKS)}; got {hook!r}. "
                "Fix config.yaml of the transcoders."
            ) from None
        return loc

    def output_location(self, hook: str) -> str:
        try:
            loc = OUTPUT_HOOKS[hook]
        except KeyError:
            raise ArchitectureError(
                f"feature_output_hook must be one of {sorted(OUTPUT_HOOKS)}; got {hook!r}. "
                "Fix config.yaml of the transcoders."
            ) from None
        if loc == "block_mlp_out" and self.post_mlp_norm is None:
            return "mlp_output"  # identical places when there is no post-MLP norm
        return loc

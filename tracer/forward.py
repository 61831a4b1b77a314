"""One ordinary forward pass that caches what the explicit backward needs.

Everything the local replacement model freezes is read from the real model here: attention
patterns (from the eager attention), the 1/rms scales of every norm, the MLP inputs and outputs
at the transcoder's read/write locations, and the last-position logits.
"""

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from tracer.model import LoadedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, eq=False)
class ForwardCache:
    """Activations of one prompt (batch size 1). Shapes in the field docstrings."""

    tokens: Tensor
    """(n_pos,)"""
    resid_pre: Tensor
    """(n_layers, n_pos, d_model) residual entering each layer"""
    resid_mid: Tensor
    """(n_layers, n_pos, d_model) residual after attention (read by the MLP-input norm)"""
    patterns: Tensor
    """(n_layers, n_heads, n_pos, n_pos) attention probabilities [query, key]"""
    mlp_input: Tensor
    """(n_layers, n_pos, d_model) what the MLP module receives"""
    mlp_output: Tensor
    """(n_layers, n_pos, d_model) what the MLP module returns"""
    block_mlp_out: Tensor
    """(n_layers, n_pos, d_model) what the block adds to the residual (after a post-MLP norm)"""
    scale_attn_in: Tensor
    """(n_layers, n_pos) 1/rms of the attention-input norm"""
    scale_mlp_in: Tensor
    """(n_layers, n_pos) 1/rms of the MLP-input norm"""
    scale_post_attn: Tensor | None
    """(n_layers, n_pos) Gemma-2 post-attention norm, else None"""
    scale_post_mlp: Tensor | None
    """(n_layers, n_pos) Gemma-2 post-MLP norm, else None"""
    scale_final: Tensor
    """(n_pos,) 1/rms of the final norm"""
    logits: Tensor
    """(n_pos, d_vocab) the model's logits (after any final softcap)"""

    def feature_input(self, location: str) -> Tensor:
        """(n_layers, n_pos, d_model) at a transcoder input location."""
        if location == "mlp_input":
            return self.mlp_input
        return self.resid_mid * self.scale_mlp_in[..., None]  # "normalized": h / rms(h)

    def feature_output(self, location: str) -> Tensor:
        """(n_layers, n_pos, d_model) at a transcoder output location."""
        return self.mlp_output if location == "mlp_output" else self.block_mlp_out


def rms_scale(x: Tensor, eps: float) -> Tensor:
    """(..., d) -> (...,): 1/sqrt(mean(x^2) + eps), computed in float32 as HF does."""
    return torch.rsqrt(x.float().pow(2).mean(-1) + eps)


def layers_of(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.model.layers  # type: ignore[no-any-return,union-attr]


def _norm_eps(norm: torch.nn.Module, attr: str) -> float:
    return float(getattr(norm, attr, getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6))))


@torch.no_grad()
def run_with_cache(loaded: LoadedModel, tokens: Tensor) -> ForwardCache:
    """Run the model once on ``tokens`` (n_pos,) and cache the attribution inputs."""
    model, ad = loaded.model, loaded.adapter
    store: dict[str, list[Tensor | None]] = {}
    L = loaded.n_layers
    for key in ("pre", "mid", "pat", "mlp_in", "mlp_out", "block_out", "attn_raw"):
        store[key] = [None] * L
    handles = []

    def save_input(key: str, i: int):
        return lambda mod, args: store[key].__setitem__(i, args[0][0].detach())

    def save_output(key: str, i: int, index: int | None = None):
        def hook(mod, args, out):
            val = out[index] if index is not None else out
            store[key][i] = val[0].detach()
        return hook

    def save_mlp(i: int):
        def hook(mod, args, out):
            store["mlp_in"][i] = args[0][0].detach()
            store["mlp_out"][i] = out[0].detach()
        return hook

    for i, layer in enumerate(layers_of(model)):
        handles.append(layer.input_layernorm.register_forward_pre_hook(save_input("pre", i)))
        handles.append(getattr(layer, ad.mlp_norm).register_forward_pre_hook(save_input("mid", i)))
        handles.append(layer.self_attn.register_forward_hook(save_output("pat", i, 1)))
        handles.append(layer.mlp.register_forward_hook(save_mlp(i)))
        if ad.post_attn_norm:
            handles.append(getattr(layer, ad.post_attn_norm).register_forward_pre_hook(save_input("attn_raw", i)))
        if ad.post_mlp_norm:
            handles.append(getattr(layer, ad.post_mlp_norm).register_forward_hook(save_output("block_out", i)))
    final: dict[str, Tensor] = {}
    handles.append(model.model.norm.register_forward_pre_hook(  # type: ignore[union-attr]
        lambda mod, args: final.__setitem__("resid", args[0][0].detach())))
    try:
        out = model(tokens[None].to(loaded.device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    if any(p is None for p in store["pat"]):
        raise RuntimeError("attention patterns were not captured; the model must use eager attention")
    return _assemble(loaded, tokens, store, final["resid"], out.logits[0].detach())


def _assemble(loaded: LoadedModel, tokens: Tensor, store: dict[str, list[Tensor | None]],
              final_resid: Tensor, logits: Tensor) -> ForwardCache:
    ad, layers = loaded.adapter, layers_of(loaded.model)

    def stack(key: str) -> Tensor:
        return torch.stack(store[key])  # type: ignore[arg-type]  # (n_layers, n_pos, ...)

    def scales(attr: str, key: str) -> Tensor:
        return torch.stack([
            rms_scale(x, _norm_eps(getattr(layer, attr), ad.norm_eps_attr))  # type: ignore[arg-type]
            for layer, x in zip(layers, store[key])
        ])  # (n_layers, n_pos)

    mlp_out = stack("mlp_out")
    return ForwardCache(
        tokens=tokens.cpu(),
        resid_pre=stack("pre"),
        resid_mid=stack("mid"),
        patterns=stack("pat"),
        mlp_input=stack("mlp_in"),
        mlp_output=mlp_out,
        block_mlp_out=stack("block_out") if ad.post_mlp_norm else mlp_out,
        scale_attn_in=scales("input_layernorm", "pre"),
        scale_mlp_in=scales(ad.mlp_norm, "mid"),
        scale_post_attn=scales(ad.post_attn_norm, "attn_raw") if ad.post_attn_norm else None,
        scale_post_mlp=scales(ad.post_mlp_norm, "mlp_out") if ad.post_mlp_norm else None,
        scale_final=rms_scale(final_resid, _norm_eps(loaded.model.model.norm, ad.norm_eps_attr)),  # type: ignore[union-attr]
        logits=logits,
    )

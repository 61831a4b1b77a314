"""One ordinary forward pass that caches what the explicit backward needs.

Everything the local replacement model freezes is read from the real model here: attention
patterns (from the eager attention), the 1/rms scales of every norm, the MLP inputs and outputs
at the transcoder's read/write locations, and the last-position logits.
"""

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tracer.models.loaded import LoadedModel

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


@torch.no_grad()
def run_with_cache(loaded: LoadedModel, tokens: Tensor) -> ForwardCache:
    """Run the model once on ``tokens`` (n_pos,) and cache the attribution inputs."""
    L = loaded.n_layers
    store: dict[str, list[Tensor | None]] = {
        key: [None] * L for key in ("pre", "mid", "pat", "mlp_in", "mlp_out", "block_out", "attn_raw")}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def save_input(key: str, i: int) -> Callable[..., None]:
        return lambda mod, args: store[key].__setitem__(i, args[0][0].detach())

    def save_output(key: str, i: int, index: int | None = None) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            val = out[index] if index is not None else out
            store[key][i] = val[0].detach()
        return hook

    def save_mlp(i: int) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
            store["mlp_in"][i] = args[0][0].detach()
            store["mlp_out"][i] = out[0].detach()
        return hook

    for i, block in enumerate(loaded.blocks):
        handles.append(block.attn_norm.register_forward_pre_hook(save_input("pre", i)))
        handles.append(block.mlp_norm.register_forward_pre_hook(save_input("mid", i)))
        handles.append(block.attn.register_forward_hook(save_output("pat", i, 1)))
        handles.append(block.mlp.register_forward_hook(save_mlp(i)))
        if block.post_attn_norm is not None:
            handles.append(block.post_attn_norm.register_forward_pre_hook(save_input("attn_raw", i)))
        if block.post_mlp_norm is not None:
            handles.append(block.post_mlp_norm.register_forward_hook(save_output("block_out", i)))
    final: dict[str, Tensor] = {}
    handles.append(loaded.final_norm.register_forward_pre_hook(
        lambda mod, args: final.__setitem__("resid", args[0][0].detach())))
    try:
        logits = loaded.logits(tokens[None])
    finally:
        for h in handles:
            h.remove()
    if any(p is None for p in store["pat"]):
        raise RuntimeError("attention patterns were not captured; the model must use eager attention")
    return _assemble(loaded, tokens, store, final["resid"], logits[0].detach())


def _stack(values: list[Tensor | None]) -> Tensor:
    """Per-layer captures -> (n_layers, n_pos, ...)."""
    return torch.stack([v for v in values if v is not None])


def _assemble(loaded: LoadedModel, tokens: Tensor, store: dict[str, list[Tensor | None]],
              final_resid: Tensor, logits: Tensor) -> ForwardCache:
    eps = loaded.norm_eps

    def scales(key: str) -> Tensor:
        return torch.stack([rms_scale(x, eps) for x in store[key] if x is not None])  # (n_layers, n_pos)

    has_post_attn = loaded.adapter.paths.post_attn_norm is not None
    has_post_mlp = loaded.adapter.paths.post_mlp_norm is not None
    mlp_out = _stack(store["mlp_out"])
    return ForwardCache(
        tokens=tokens.cpu(),
        resid_pre=_stack(store["pre"]),
        resid_mid=_stack(store["mid"]),
        patterns=_stack(store["pat"]),
        mlp_input=_stack(store["mlp_in"]),
        mlp_output=mlp_out,
        block_mlp_out=_stack(store["block_out"]) if has_post_mlp else mlp_out,
        scale_attn_in=scales("pre"),
        scale_mlp_in=scales("mid"),
        scale_post_attn=scales("attn_raw") if has_post_attn else None,
        scale_post_mlp=scales("mlp_out") if has_post_mlp else None,
        scale_final=rms_scale(final_resid, eps),
        logits=logits,
    )


@dataclass(eq=False)
class Capture:
    """What :func:`capture` saw during one forward pass (batch-first tensors)."""

    inputs: dict[int, Tensor]
    """layer -> (batch, n_pos, d_model) at the transcoder input location"""
    outputs: dict[int, Tensor]
    """layer -> (batch, n_pos, d_model) at the transcoder output location"""
    residual: dict[int, Tensor]
    """residual layer L (0..n_layers) -> (batch, n_pos, d_model); L = n_layers is before the final norm"""


@contextlib.contextmanager
def capture(loaded: LoadedModel, *, input_location: str | None = None, output_location: str | None = None,
            residual_layers: Sequence[int] = ()) -> Iterator[Capture]:
    """Hooks that record transcoder inputs/outputs and residual-stream vectors of the forward passes
    run inside the block (the last pass wins). Locations as in :class:`ForwardCache`."""
    got = Capture(inputs={}, outputs={}, residual={})
    handles: list[torch.utils.hooks.RemovableHandle] = []
    eps = loaded.norm_eps

    def keep(store: dict[int, Tensor], i: int, normalize: bool = False) -> Callable[..., None]:
        def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            store[i] = x * rms_scale(x, eps)[..., None] if normalize else x
        return pre

    def keep_out(i: int) -> Callable[..., None]:
        return lambda mod, args, out: got.outputs.__setitem__(i, out.detach())

    try:
        for i, block in enumerate(loaded.blocks):
            if input_location == "mlp_input":
                handles.append(block.mlp.register_forward_pre_hook(keep(got.inputs, i)))
            elif input_location == "normalized":
                handles.append(block.mlp_norm.register_forward_pre_hook(keep(got.inputs, i, normalize=True)))
            if output_location is not None:
                post = output_location == "block_mlp_out" and block.post_mlp_norm is not None
                mod = block.post_mlp_norm if post and block.post_mlp_norm is not None else block.mlp
                handles.append(mod.register_forward_hook(keep_out(i)))
        for L in residual_layers:
            site = loaded.blocks[L].attn_norm if L < loaded.n_layers else loaded.final_norm
            handles.append(site.register_forward_pre_hook(keep(got.residual, L)))
        yield got
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def capture_transcoder_io(loaded: LoadedModel, tokens: Tensor, input_location: str, output_location: str, *,
                          keep: Tensor | None = None, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Transcoder inputs and outputs ``(n_layers, n_kept, d_model)`` on sequences ``tokens`` (batch, n_pos).

    ``keep`` (batch, n_pos) bool selects the positions (default: every position but 0, the BOS).
    Sequences run in batches; trailing columns no kept position needs are cut from each batch.
    """
    if keep is None:
        keep = torch.ones_like(tokens, dtype=torch.bool)
        keep[:, 0] = False
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for b0 in range(0, tokens.shape[0], batch_size):
        batch, mask = tokens[b0:b0 + batch_size], keep[b0:b0 + batch_size]
        cols = torch.nonzero(mask.any(0))
        width = int(cols.max()) + 1 if cols.numel() else 1
        batch, mask = batch[:, :width], mask[:, :width].to(loaded.device)  # (batch, width)
        with capture(loaded, input_location=input_location, output_location=output_location) as got:
            loaded.logits(batch)
        xs.append(torch.stack([got.inputs[i][mask] for i in range(loaded.n_layers)]))  # (L, n, d)
        ys.append(torch.stack([got.outputs[i][mask] for i in range(loaded.n_layers)]))  # (L, n, d)
    return torch.cat(xs, 1), torch.cat(ys, 1)

"""PyTorch hook primitives for the patched forward pass (always removed, also on error).

* :class:`HookSpec` / :func:`installed` -- register hooks for the duration of a block;
* :func:`frozen_norm` -- an RMSNorm with its clean 1/rms (``x * s * (weight + offset)``);
* :func:`frozen_attention` -- replay a clean attention pattern through V and O (GQA value heads
  repeated as HF's ``repeat_kv``);
* :func:`edit_output`, :func:`watch_input`, :func:`watch_output`, :func:`edit_layer_input`.

Everything frozen is frozen only at the first ``P`` positions (the clean prompt); later positions
(generated tokens) run live. Batch size 1; ``T`` is the current sequence length.
"""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tracer.models.loaded import weight

OutputEdit = Callable[[Tensor], Tensor]
"""(1, T, d) module output -> (1, T, d) edited output"""


@dataclass(frozen=True)
class HookSpec:
    """One hook to register: ``kind`` is 'forward', 'forward_kw', 'pre' or 'pre_kw'."""

    module: torch.nn.Module
    kind: str
    fn: Callable[..., Any]


@contextlib.contextmanager
def installed(specs: list[HookSpec]) -> Iterator[None]:
    """Register ``specs`` for the duration of the block; always removed, in reverse order."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for spec in specs:
            if spec.kind == "forward":
                handles.append(spec.module.register_forward_hook(spec.fn))
            elif spec.kind == "forward_kw":
                handles.append(spec.module.register_forward_hook(spec.fn, with_kwargs=True))
            elif spec.kind == "pre":
                handles.append(spec.module.register_forward_pre_hook(spec.fn))
            elif spec.kind == "pre_kw":
                handles.append(spec.module.register_forward_pre_hook(spec.fn, with_kwargs=True))
            else:
                raise ValueError(f"hook kind must be forward, forward_kw, pre or pre_kw; got {spec.kind!r}.")
        yield
    finally:
        for h in reversed(handles):
            h.remove()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """HF RMSNorms compute in float32; keep float64 models in float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def frozen_norm(scale: Tensor, offset: float) -> Callable[..., Tensor]:
    """Forward hook for an RMSNorm: ``x * scale * (weight + offset)`` at the first P positions.

    Gemma's ``1 + weight`` is formed in float32 as HF (and the attribution engine) form it.

    scale: (P,) cached 1/rms of the clean run.
    """
    n_frozen = int(scale.shape[0])

    def hook(mod: torch.nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        x = args[0]
        cd = _compute_dtype(x.dtype)
        w = weight(mod)
        gain = (w.float() + offset).to(cd) if offset else w.to(cd)  # (d,) rounded as HF's norms round it
        n = min(n_frozen, x.shape[1])
        frozen = x[:, :n].to(cd) * scale[:n, None].to(device=x.device, dtype=cd) * gain  # (1, n, d)
        out = out.clone()
        out[:, :n] = frozen.to(out.dtype)
        return out

    return hook


def _repeat_kv(v: Tensor, n_rep: int) -> Tensor:
    """(B, n_kv, T, hd) -> (B, n_kv * n_rep, T, hd), as HF's repeat_kv."""
    B, n_kv, T, hd = v.shape
    return v[:, :, None].expand(B, n_kv, n_rep, T, hd).reshape(B, n_kv * n_rep, T, hd)  # (B, H, T, hd)


def frozen_attention(pattern: Tensor, head_dim: int, v_proj: torch.nn.Module,
                     o_proj: torch.nn.Module) -> Callable[..., tuple[Any, ...]]:
    """Forward hook (with kwargs) for the attention module: replay ``pattern`` (H, P, P) through V and O.

    Query rows ``< P`` use the frozen pattern (causal: they only see keys ``< P``); later rows keep
    the module's live output.
    """
    H, P, _ = pattern.shape

    def hook(mod: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
             out: tuple[Any, ...]) -> tuple[Any, ...]:
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (1, T, d)
        B, T, _ = x.shape
        n = min(P, T)
        hd = head_dim
        v = v_proj(x[:, :n]).view(B, n, -1, hd).transpose(1, 2)  # (B, n_kv, n, hd)
        v = _repeat_kv(v, H // v.shape[1])  # (B, H, n, hd)
        heads = torch.matmul(pattern[None, :, :n, :n].to(device=v.device, dtype=v.dtype), v)  # (B, H, n, hd)
        heads = heads.transpose(1, 2).reshape(B, n, H * hd)  # (B, n, H*hd)
        attn_out = out[0].clone()
        attn_out[:, :n] = o_proj(heads)  # (B, n, d)
        return (attn_out, *out[1:])

    return hook


def edit_output(edit: OutputEdit) -> Callable[..., Tensor]:
    """Forward hook that passes the module output through ``edit``."""

    def hook(mod: torch.nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
        return edit(out)

    return hook


def watch_input(sink: Callable[[Tensor], None]) -> Callable[..., None]:
    """Forward pre-hook that hands the module's first input (1, T, d) to ``sink``."""

    def hook(mod: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
        sink(args[0])

    return hook


def watch_output(sink: Callable[[Tensor], None]) -> Callable[..., None]:
    """Forward hook that hands the module's output (1, T, d) to ``sink``."""

    def hook(mod: torch.nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        sink(out)

    return hook


def edit_layer_input(edit: OutputEdit) -> Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]:
    """Forward pre-hook (with kwargs) for a decoder layer: edit the residual it receives."""

    def hook(mod: torch.nn.Module, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}
            return args, kwargs
        return (edit(args[0]), *args[1:]), kwargs

    return hook

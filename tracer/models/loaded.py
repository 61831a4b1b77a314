"""A loaded causal LM with typed access to the parts tracer reads (through its adapter's paths)."""

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from tracer.errors import ArchitectureError
from tracer.models.adapters import Adapter, ModelFacts


class Tokenizer(Protocol):
    """The tokenizer methods tracer uses (HF tokenizers and :class:`tracer.models.loading.FastTokenizer`)."""

    def __call__(self, text: str, add_special_tokens: bool = ...) -> Any: ...

    def decode(self, ids: list[int]) -> str: ...


def submodule(root: nn.Module, path: str) -> nn.Module:
    """``root``'s submodule at a dotted ``path`` (an adapter path), with an error naming it."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise ArchitectureError(f"model must have a module at {path!r}; got none in {type(root).__name__}. "
                                "The adapter's module paths do not match this model.") from None


def weight(module: nn.Module) -> Tensor:
    """``module.weight`` as a tensor (norms, projections, embeddings)."""
    w = getattr(module, "weight", None)
    if not isinstance(w, Tensor):
        raise ArchitectureError(f"module {type(module).__name__} must have a weight tensor; got {type(w).__name__}.")
    return w


@dataclass(frozen=True, kw_only=True, eq=False)
class Block:
    """One decoder layer's parts (see :mod:`tracer.models.adapters` for the block shape)."""

    module: nn.Module
    attn_norm: nn.Module
    attn: nn.Module
    v_proj: nn.Module
    o_proj: nn.Module
    mlp_norm: nn.Module
    mlp: nn.Module
    post_attn_norm: nn.Module | None
    post_mlp_norm: nn.Module | None


def _blocks(model: nn.Module, adapter: Adapter) -> tuple[Block, ...]:
    p = adapter.paths
    layers = submodule(model, p.layers)
    if not isinstance(layers, nn.ModuleList):
        raise ArchitectureError(f"model's {p.layers!r} must be a ModuleList; got {type(layers).__name__}.")
    return tuple(
        Block(module=layer, attn_norm=submodule(layer, p.attn_norm), attn=submodule(layer, p.attn),
              v_proj=submodule(layer, p.v_proj), o_proj=submodule(layer, p.o_proj),
              mlp_norm=submodule(layer, p.mlp_norm), mlp=submodule(layer, p.mlp),
              post_attn_norm=submodule(layer, p.post_attn_norm) if p.post_attn_norm else None,
              post_mlp_norm=submodule(layer, p.post_mlp_norm) if p.post_mlp_norm else None)
        for layer in layers
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class LoadedModel:
    """An HF-layout causal LM in eval mode with its adapter, dimensions and (optional) tokenizer."""

    model: nn.Module
    adapter: Adapter
    facts: ModelFacts
    tokenizer: Tokenizer | None
    model_id: str
    blocks: tuple[Block, ...]
    embed: nn.Module
    final_norm: nn.Module
    unembed: nn.Module

    @classmethod
    def wrap(cls, model: nn.Module, adapter: Adapter, tokenizer: Tokenizer | None, model_id: str) -> "LoadedModel":
        config = getattr(model, "config", None)
        facts = adapter.facts(config, where=model_id or type(model).__name__)
        p = adapter.paths
        loaded = cls(model=model, adapter=adapter, facts=facts, tokenizer=tokenizer, model_id=model_id,
                     blocks=_blocks(model, adapter), embed=submodule(model, p.embed),
                     final_norm=submodule(model, p.final_norm), unembed=submodule(model, p.unembed))
        if len(loaded.blocks) != facts.n_layers:
            raise ArchitectureError(f"model must have {facts.n_layers} layers (config); got {len(loaded.blocks)}.")
        return loaded

    @property
    def config(self) -> Any:
        """The HF config (or the native loader's namespace of config.json)."""
        return getattr(self.model, "config", None)

    @property
    def n_layers(self) -> int:
        return self.facts.n_layers

    @property
    def d_model(self) -> int:
        return self.facts.d_model

    @property
    def n_heads(self) -> int:
        return self.facts.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.facts.n_kv_heads

    @property
    def d_head(self) -> int:
        return self.facts.d_head

    @property
    def norm_eps(self) -> float:
        """epsilon of every RMSNorm of the residual stream"""
        return self.facts.norm_eps

    @property
    def W_E(self) -> Tensor:
        """(d_vocab_in, d_model) token embeddings (before any embedding scale)"""
        return weight(self.embed)

    @property
    def W_U(self) -> Tensor:
        """(d_vocab, d_model) unembedding rows"""
        return weight(self.unembed)

    @property
    def d_vocab(self) -> int:
        return int(self.W_U.shape[0])

    @property
    def embed_scale(self) -> float | None:
        """Factor the embeddings are multiplied by (Gemma: sqrt(d_model)), or None."""
        return math.sqrt(self.d_model) if self.adapter.embed_scale_sqrt_d else None

    @property
    def max_positions(self) -> int | None:
        return self.facts.max_positions

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_E.dtype

    def gain(self, norm: nn.Module, dtype: torch.dtype) -> Tensor:
        """(d,) effective gain of an RMSNorm, ``weight + offset`` formed in float32 (as HF does)."""
        return (weight(norm).detach().float() + self.adapter.norm_gain_offset).to(dtype)

    def logits(self, tokens: Tensor) -> Tensor:
        """(batch, n_pos, d_vocab) logits of the real model for ``tokens`` (batch, n_pos)."""
        out = self.model(tokens.to(self.device), use_cache=False)
        logits = getattr(out, "logits", None)
        if not isinstance(logits, Tensor):
            raise ArchitectureError(f"model output must have logits; got {type(out).__name__}.")
        return logits

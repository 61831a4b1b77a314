"""A light loader for tracing: HF's module layout and maths, without importing `transformers`.

Importing `transformers` and building a model through its Auto classes costs seconds, which
dominates tracing a small model. For the three supported architectures this module builds an
``nn.Module`` tree with exactly Hugging Face's attribute names and call structure
(``model.model.layers[i].self_attn.o_proj`` ...; attention returns ``(output, weights)``), from
``config.json`` + safetensors, computing what HF's eager path computes (float32 norms and
softmax, RoPE incl. Llama-3 scaling, q/k norms, Gemma-2 softcaps and embedding scale). The hook
based capture in :mod:`tracer.models.forward` therefore works on either. ``tests/tracer/test_native.py``
checks logits and every cached activation against the HF model.

Configs with anything this module does not reproduce (:func:`unsupported_reason`) are loaded
through `transformers` instead. Interventions always use the real HF model.
"""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracer.errors import ArchitectureError, WorkbenchError
from tracer.models.adapters import Adapter, adapter_for
from tracer.safetensors_header import read_safetensors_header
from tracer.weights import FileRegion, check_file, check_weight

_ACTS = {"silu": F.silu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
         "gelu": F.gelu}


def unsupported_reason(cfg: dict[str, Any]) -> str | None:
    """Why the native path cannot reproduce this config exactly (None: it can)."""
    try:
        adapter_for(cfg)
    except ArchitectureError:
        return f"architecture {(cfg.get('architectures') or [cfg.get('model_type')])[0]!r}"
    for key in ("rope_scaling", "rope_parameters"):  # refuse if either layout names another type
        rope = cfg.get(key)
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        if rope_type not in ("default", "llama3"):
            return f"rope type {rope_type!r}"
    act = cfg.get("hidden_activation") or cfg.get("hidden_act")
    if act not in _ACTS:
        return f"activation {act!r}"
    if cfg.get("pretraining_tp", 1) not in (1, None) or cfg.get("partial_rotary_factor", 1.0) != 1.0:
        return "pretraining_tp / partial rotary"
    return None


def _placeholder(*shape: int) -> nn.Parameter:
    """An empty parameter that records the shape the loaded tensor must have."""
    p = nn.Parameter(torch.empty(0), requires_grad=False)
    setattr(p, "expected_shape", tuple(shape))  # noqa: B010 - a plain attribute on the parameter
    return p


class Linear(nn.Module):
    """nn.Linear without initialisation (weights are assigned from the checkpoint)."""

    def __init__(self, d_in: int, d_out: int, bias: bool) -> None:
        super().__init__()
        self.weight = _placeholder(d_out, d_in)
        self.bias = _placeholder(d_out) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = _placeholder(n, d)

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float, offset: float) -> None:
        super().__init__()
        self.weight = _placeholder(d)
        self.eps, self.offset = eps, offset
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:  # Gemma: (1 + w) in float32, then cast
            return (h * (self.offset + self.weight.float())).type_as(x)
        return self.weight * h.to(x.dtype)


def _rope_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings from either layout: transformers 4.x (top-level ``rope_theta`` +
    ``rope_scaling``) or 5.x (``rope_parameters`` holding theta and the scaling)."""
    params: dict[str, Any] = {"rope_theta": cfg.get("rope_theta", 10000.0)}
    for key in ("rope_scaling", "rope_parameters"):
        val = cfg.get(key)
        if isinstance(val, dict):
            params.update(val)
    return params


def rope_inv_freq(cfg: dict[str, Any], head_dim: int) -> Tensor:
    """HF's inverse frequencies, including Llama-3 scaling."""
    rope = _rope_params(cfg)
    base = float(rope["rope_theta"])
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope.get("rope_type", rope.get("type")) == "llama3":
        factor, lo, hi = float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
        old = float(rope["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) * ~(wavelen > old / lo)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any], adapter: Adapter, d: int, n_heads: int, n_kv: int, hd: int) -> None:
        super().__init__()
        bias = bool(cfg.get("attention_bias", False))
        self.q_proj, self.k_proj = Linear(d, n_heads * hd, bias), Linear(d, n_kv * hd, bias)
        self.v_proj, self.o_proj = Linear(d, n_kv * hd, bias), Linear(n_heads * hd, d, bias)
        eps = float(cfg.get("rms_norm_eps", 1e-6))
        if adapter.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(hd, eps, 0.0), RMSNorm(hd, eps, 0.0)
        self.qk_norm, self.n_heads, self.n_kv, self.hd = adapter.qk_norm, n_heads, n_kv, hd
        scale_key = adapter.query_scale_key
        self.scaling = float(cfg[scale_key]) ** -0.5 if scale_key else hd ** -0.5
        self.softcap = cfg.get(adapter.attn_softcap_key) if adapter.attn_softcap_key else None

    def forward(self, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        B, P, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, P, -1, self.hd)
        k = self.k_proj(hidden_states).view(B, P, -1, self.hd)
        v = self.v_proj(hidden_states).view(B, P, -1, self.hd).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, heads, P, hd)
        cos, sin = position_embeddings
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        rep = self.n_heads // self.n_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        w = (q @ k.transpose(2, 3)) * self.scaling  # (B, H, P, P)
        if self.softcap:
            w = torch.tanh(w / self.softcap) * self.softcap
        mask = torch.ones(P, P, dtype=torch.bool, device=w.device).tril()
        w = w.masked_fill(~mask, torch.finfo(w.dtype).min)
        w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        out = (w @ v).transpose(1, 2).reshape(B, P, -1)
        return self.o_proj(out), w


class MLP(nn.Module):
    def __init__(self, cfg: dict[str, Any], d: int) -> None:
        super().__init__()
        d_mlp, bias = int(cfg["intermediate_size"]), bool(cfg.get("mlp_bias", False))
        self.gate_proj, self.up_proj = Linear(d, d_mlp, bias), Linear(d, d_mlp, bias)
        self.down_proj = Linear(d_mlp, d, bias)
        self.act = _ACTS[str(cfg.get("hidden_activation") or cfg.get("hidden_act"))]

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """A pre-norm block whose norms are named and placed as the adapter's paths say."""

    def __init__(self, cfg: dict[str, Any], adapter: Adapter) -> None:
        super().__init__()
        f, p = adapter.facts(cfg), adapter.paths
        d, off = f.d_model, adapter.norm_gain_offset
        self.names = (p.attn_norm, p.mlp_norm, p.post_attn_norm, p.post_mlp_norm)
        for name in self.names:
            if name is not None:
                self.add_module(name, RMSNorm(d, f.norm_eps, off))
        self.self_attn = Attention(cfg, adapter, d, f.n_heads, f.n_kv_heads, f.d_head)
        self.mlp = MLP(cfg, d)

    def _norm(self, index: int, x: Tensor) -> Tensor:
        name = self.names[index]
        return x if name is None else self.get_submodule(name)(x)

    def forward(self, x: Tensor, pos_emb: tuple[Tensor, Tensor]) -> Tensor:
        a, _ = self.self_attn(hidden_states=self._norm(0, x), position_embeddings=pos_emb)
        h = x + self._norm(2, a)
        return h + self._norm(3, self.mlp(self._norm(1, h)))


class _Inner(nn.Module):
    def __init__(self, cfg: dict[str, Any], adapter: Adapter) -> None:
        super().__init__()
        f = adapter.facts(cfg)
        self.embed_tokens = Embedding(f.d_vocab, f.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg, adapter) for _ in range(f.n_layers))
        self.norm = RMSNorm(f.d_model, f.norm_eps, adapter.norm_gain_offset)


class NativeCausalLM(nn.Module):
    """HF-layout causal LM (Qwen3 / Llama / Gemma-2) for tracing."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.adapter = adapter_for(cfg)
        self.raw_config = cfg
        self.config = SimpleNamespace(**cfg)
        self.model = _Inner(cfg, self.adapter)
        f = self.adapter.facts(cfg)
        self.head_dim = f.d_head
        self.lm_head = Linear(f.d_model, f.d_vocab, False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg, self.head_dim), persistent=False)

    def get_input_embeddings(self) -> Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> Linear:
        return self.lm_head

    def forward(self, input_ids: Tensor, use_cache: bool = False) -> SimpleNamespace:
        x = self.model.embed_tokens(input_ids)
        if self.adapter.embed_scale_sqrt_d:
            x = x * torch.tensor(self.config.hidden_size ** 0.5, dtype=x.dtype)
        P = input_ids.shape[1]
        inv_freq = self.get_buffer("inv_freq")
        freqs = inv_freq.float()[:, None] * torch.arange(P, device=x.device).float()[None, :]  # (hd/2, P)
        emb = torch.cat([freqs.T, freqs.T], dim=-1)  # (P, hd)
        pos_emb = (emb.cos().to(x.dtype)[None, None], emb.sin().to(x.dtype)[None, None])
        for layer in self.model.layers:
            x = layer(x, pos_emb)
        logits = self.lm_head(self.model.norm(x))
        key = self.adapter.final_softcap_key
        cap = self.raw_config.get(key) if key else None
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return SimpleNamespace(logits=logits)


_BENIGN_EXTRA = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
"""Checkpoint entries that carry nothing (HF recomputes them): never an unexpected weight."""
TIE_DEFAULT = {"qwen3": False, "llama": False, "gemma2": True}
"""transformers' default of ``tie_word_embeddings`` per architecture (used when config.json omits it)."""


def ties_embeddings(cfg: dict[str, Any], adapter: Adapter) -> bool:
    """Whether lm_head shares the embedding: only where the config (or the class default) says so."""
    return bool(cfg.get("tie_word_embeddings", TIE_DEFAULT.get(adapter.name, False)))


def read_state(directory: Path) -> tuple[dict[str, Tensor], dict[str, FileRegion]]:
    """Every tensor of the folder's *.safetensors files, and where each lies (its file, offset and dtype).

    Headers are validated first (one-line errors naming the file); a tensor in two files is an error.
    Every file's values get the load-time check (:func:`tracer.weights.check_file`).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    origin: dict[str, FileRegion] = {}
    for f in sorted(directory.glob("*.safetensors")):
        infos, offset = read_safetensors_header(f, "model weights file", WorkbenchError)
        try:
            tensors = load_file(str(f))
        except (SafetensorError, OSError) as err:
            raise WorkbenchError(f"model weights file must be valid safetensors; got {str(f)!r} "
                                 f"({str(err).splitlines()[0][:100]}).") from None
        for name, t in tensors.items():
            if name in state:
                raise WorkbenchError(f"model weights must hold each tensor once; {name!r} is in both "
                                     f"{origin[name].path!r} and {str(f)!r}.")
            info = infos[name]
            state[name] = t
            origin[name] = FileRegion(str(f), offset + info.begin, info.end - info.begin, info.dtype, info.shape)
        check_file({name: origin[name] for name in tensors}, "model weight ")
    return state, origin


def read_state_origin(directory: Path) -> dict[str, str]:
    """{tensor name: file} of the folder's *.safetensors files, from their validated headers."""
    origin: dict[str, str] = {}
    for f in sorted(directory.glob("*.safetensors")):
        infos, _ = read_safetensors_header(f, "model weights file", WorkbenchError)
        origin.update(dict.fromkeys(infos, str(f)))
    return origin


def _assign(model: nn.Module, name: str, t: Tensor, want: tuple[int, ...] | None, region: FileRegion,
            dtype: torch.dtype) -> None:
    where = region.path
    if tuple(t.shape) != want:
        raise WorkbenchError(f"model weight {name} in {where!r} must have shape {want} (from config.json); "
                             f"got {tuple(t.shape)}. The weights do not match config.json.")
    if not t.is_floating_point():
        raise WorkbenchError(f"model weight {name} in {where!r} must be a float tensor; got {t.dtype}.")
    value = t.to(dtype)
    if not region.holds(value):  # cast: checked again, as overflow shows only now (uncast ones: read_state)
        check_weight(value, f"model weight {name}", where, sample=True)
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner), leaf, nn.Parameter(value, requires_grad=False))


def load_native(directory: Path, dtype: torch.dtype, device: torch.device) -> NativeCausalLM | None:
    """The native model, or None when the config needs `transformers` (see unsupported_reason).

    Every parameter must be in the weight files, with the shape config.json implies; lm_head is
    tied to the embedding only where the config declares it. A missing, extra, misshapen or
    non-finite tensor is a one-line error naming the tensor and the file.
    """
    cfg = json.loads((directory / "config.json").read_text())
    if unsupported_reason(cfg) is not None:
        return None
    model = NativeCausalLM(cfg)  # placeholder parameters: no initialisation, no allocation
    state, regions = read_state(directory)
    origin = {name: region.path for name, region in regions.items()}
    tied = ties_embeddings(cfg, model.adapter)
    if tied and "model.embed_tokens.weight" in state:  # as transformers: the embedding wins
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
        origin["lm_head.weight"] = origin["model.embed_tokens.weight"] + " (tied embedding)"
    params = dict(model.named_parameters())
    files = ", ".join(sorted({Path(f).name for f in origin.values()})) or "no tensors"
    missing = sorted(set(params) - set(state))
    if missing:
        hint = " (config.json has tie_word_embeddings false)" if missing == ["lm_head.weight"] else ""
        raise WorkbenchError(f"model weights must hold every tensor the config needs; {missing[0]!r} is missing "
                             f"from {str(directory)!r} ({files}){hint}, with {len(missing)} missing in all.")
    extra = sorted(k for k in set(state) - set(params) if not _BENIGN_EXTRA.search(k))
    if extra:
        raise WorkbenchError(f"model weights must match config.json; {extra[0]!r} in {origin[extra[0]]!r} is not a "
                             f"weight of this {model.adapter.name} model ({len(extra)} unexpected in all).")
    for name, param in params.items():
        if tied and name == "lm_head.weight":
            continue  # the embedding, assigned and checked once
        _assign(model, name, state[name], getattr(param, "expected_shape", None), regions[name], dtype)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.register_buffer("inv_freq", rope_inv_freq(cfg, model.head_dim), persistent=False)
    return model.to(device).eval()

"""Tiny random models and transcoders for tests (no downloads, CPU, deterministic).

* :func:`tiny_model` -- a ``LoadedModel`` around a random Qwen3 / Llama / Gemma-2 built from the
  HF config class (eager attention, GQA 4 query / 2 KV heads, head_dim 16, RMSNorm gains
  perturbed by +-10% so a dropped norm shows; Gemma-2 with attention and final softcaps,
  ``query_pre_attn_scalar`` != head_dim and a sliding window longer than any test prompt).
* :func:`tiny_transcoders` -- a random ``Transcoders`` set (PLT relu / jumprelu / topk with
  optional skip, CLT relu / jumprelu with optional skip) whose encoder biases make ~10-30% of
  features active and whose decoder (and skip, and b_dec) is a ridge fit of the real MLP output,
  so error vectors are a minority of the output.
* :func:`save_transcoders` / :func:`save_model` -- circuit-tracer's on-disk formats, and an HF
  folder with a word-level tokenizer (BOS id 1) that ``tracer.models.load_model`` reads.

Built objects are cached and handed out as deep copies, so tests may mutate what they get.
"""

import copy
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from tracer.models import LoadedModel, Tokenizer, wrap_model
from tracer.models.forward import capture_transcoder_io
from tracer.transcoders.base import Activation, Kind, TranscoderLayer, Transcoders
from tracer.transcoders.fit import ridge_solve
from tracer.transcoders.writer import write_transcoders

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

ARCHS = ("qwen3", "llama", "gemma2")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
WORDS = (
    "the a cat dog bird fish tree house river stone red blue green small big old new one two three "
    "four five six seven eight nine ten and or not is was on in at to of from with by up down left "
    "right north south east west sun moon star rain snow wind fire water earth sky day night"
).split()

_MODEL_CACHE: dict[tuple[object, ...], LoadedModel] = {}
_TC_CACHE: dict[tuple[object, ...], Transcoders] = {}


# ----------------------------------------------------------------------------- models
def _common(vocab_size: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        initializer_range=0.2, attn_implementation="eager", bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )


def model_config(arch: str, **overrides: Any) -> "PretrainedConfig":
    """The HF config of a tiny model: defaults per architecture, then ``overrides``."""
    from transformers import Gemma2Config, LlamaConfig, PretrainedConfig, Qwen3Config

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}; got {arch!r}.")
    kw = _common(int(overrides.pop("vocab_size", 64)))
    cls: type[PretrainedConfig]
    if arch == "qwen3":
        kw.update(tie_word_embeddings=False, use_sliding_window=False, rms_norm_eps=1e-6,
                  architectures=["Qwen3ForCausalLM"])
        cls = Qwen3Config
    elif arch == "llama":
        kw.update(tie_word_embeddings=False, rms_norm_eps=1e-5, architectures=["LlamaForCausalLM"])
        cls = LlamaConfig
    else:
        kw.update(tie_word_embeddings=True, rms_norm_eps=1e-6, query_pre_attn_scalar=24,
                  sliding_window=128, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                  hidden_activation="gelu_pytorch_tanh", architectures=["Gemma2ForCausalLM"])
        cls = Gemma2Config
    kw.update(overrides)
    return cls(**kw)


def _perturb_norms(model: torch.nn.Module, offset: float, gen: torch.Generator) -> None:
    """Every RMSNorm gain (q/k norms included) becomes (1 +- 10%) in effect."""
    for mod in model.modules():
        if type(mod).__name__.endswith("RMSNorm"):
            w = mod.weight
            assert isinstance(w, Tensor)
            noise = (torch.rand(w.shape, generator=gen) * 0.2 - 0.1).to(w.dtype)
            w.data.copy_(noise + (1.0 - offset))


def tiny_tokenizer(vocab_size: int = 64) -> "PreTrainedTokenizerFast":
    """A word-level fast tokenizer: <pad>=0, <bos>=1, <eos>=2, <unk>=3, then words / w{i}."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = ["<pad>", "<bos>", "<eos>", "<unk>"]
    words = list(WORDS) + [f"w{i}" for i in range(vocab_size)]
    names += words[: vocab_size - len(names)]
    tok = Tokenizer(models.WordLevel({n: i for i, n in enumerate(names)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def _build_model(arch: str, seed: int, overrides: dict[str, Any]) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    cfg = model_config(arch, **dict(overrides))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    gen = torch.Generator().manual_seed(seed + 1)
    _perturb_norms(model, 1.0 if arch == "gemma2" else 0.0, gen)
    # cast: HF's decode (token_ids=..., -> str | list[str]) does not match tracer's Tokenizer protocol
    tok = cast(Tokenizer, tiny_tokenizer(int(cfg.vocab_size)))
    loaded = wrap_model(model, tok, model_id=f"tiny-{arch}")
    assert loaded.config._attn_implementation == "eager"
    return loaded


def tiny_model(arch: str, *, seed: int = 0, **overrides: Any) -> LoadedModel:
    """A tiny random model (float32, CPU, eval, no grad). ``overrides`` go to the HF config."""
    key = (arch, seed, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = _build_model(arch, seed, overrides)
    return copy.deepcopy(_MODEL_CACHE[key])


def random_tokens(n: int, vocab: int = 64, seed: int = 0, bos: int = BOS_ID) -> Tensor:
    """(n,) BOS followed by n-1 random non-special ids."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.tensor([bos]), torch.randint(4, vocab, (n - 1,), generator=g)])


# ----------------------------------------------------------------------------- transcoders
def _fingerprint(loaded: LoadedModel) -> str:
    """Identifies a model's weights (dtype-independent to ~1e-6) for the transcoder cache."""
    h = hashlib.sha1(loaded.config.to_json_string().encode())
    for p in list(loaded.model.parameters())[:8]:
        h.update(f"{float(p.detach().double().sum()):.5e}".encode())
    return h.hexdigest()


def _fit_data(loaded: LoadedModel, tc_in: str, tc_out: str, n_seqs: int, seq_len: int,
              seed: int) -> tuple[Tensor, Tensor]:
    """(n_layers, N, d) transcoder inputs and outputs of the real model on random prompts.

    One batched forward with hooks (``run_with_cache`` is batch-1); BOS positions left out.
    """
    ad = loaded.adapter
    g = torch.Generator().manual_seed(10_000 + seed)
    tokens = torch.randint(4, loaded.d_vocab, (n_seqs, seq_len), generator=g)
    tokens[:, 0] = BOS_ID
    x, y = capture_transcoder_io(loaded, tokens, ad.input_location(tc_in), ad.output_location(tc_out),
                                 batch_size=n_seqs)
    return x.double(), y.double()  # (L, N, d)


def _encoder(x: Tensor, act: Activation, d_tc: int, gen: torch.Generator,
             topk: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """(W_enc, b_enc, threshold): random unit-norm encoder rows; biases put each feature's firing
    rate in [10%, 30%]."""
    _, d = x.shape
    W_enc = torch.randn(d_tc, d, generator=gen, dtype=torch.float64)
    W_enc = W_enc / W_enc.norm(dim=1, keepdim=True)  # (d_tc, d)
    proj = x @ W_enc.T  # (N, d_tc)
    rate = torch.rand(d_tc, generator=gen, dtype=torch.float64) * 0.2 + 0.1
    srt = proj.sort(0).values  # (N, d_tc)
    q = srt[((1 - rate) * (proj.shape[0] - 1)).round().long(), torch.arange(d_tc)]  # (d_tc,)
    threshold = None
    if act == "jumprelu":
        threshold = proj.std(0) * (torch.rand(d_tc, generator=gen, dtype=torch.float64) * 0.4 + 0.1)
        b_enc = threshold - q
    elif act == "topk":
        b_enc = -proj.median(0).values
    else:
        b_enc = -q
    return W_enc, b_enc, threshold


def _fit_decoders(xs: Tensor, ys: Tensor, acts: list[Tensor], kind: Kind,
                  skip: bool) -> list[dict[str, Tensor]]:
    """Per source layer: W_dec, b_dec and skip_T fitted to the MLP output (ridge, BOS left out)."""
    L, N, d = xs.shape
    d_tc = acts[0].shape[1]
    out: list[dict[str, Tensor]] = [{} for _ in range(L)]
    for t in range(L):  # target layer
        srcs = [acts[t]] if kind == "plt" else acts[: t + 1]
        parts = [*srcs, *([xs[t]] if skip else []), torch.ones(N, 1, dtype=xs.dtype)]
        W = ridge_solve(torch.cat(parts, 1), ys[t], penalty=1e-2 * N)  # (n_src*d_tc [+ d] + 1, d)
        for j in range(len(srcs)):
            rows = W[j * d_tc:(j + 1) * d_tc]  # (d_tc, d)
            src = t if kind == "plt" else j
            if kind == "plt":
                out[src]["W_dec"] = rows
            else:
                out[src].setdefault("W_dec", torch.zeros(d_tc, L - src, d, dtype=xs.dtype))[:, t - src] = rows
        if skip:
            out[t]["skip_T"] = W[len(srcs) * d_tc: len(srcs) * d_tc + d]  # (d, d)
        out[t]["b_dec"] = W[-1]
    return out


def _build_transcoders(loaded: LoadedModel, kind: Kind, act: Activation, skip: bool, d_tc: int, seed: int,
                       topk: int, input_hook: str, output_hook: str) -> Transcoders:
    xs, ys = _fit_data(loaded, input_hook, output_hook, n_seqs=16, seq_len=24, seed=seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    encs, acts = [], []
    for i in range(loaded.n_layers):
        W_enc, b_enc, threshold = _encoder(xs[i], act, d_tc, gen, topk)
        layer = TranscoderLayer(W_enc=W_enc, b_enc=b_enc,
                                W_dec=torch.zeros(d_tc, 1), b_dec=torch.zeros(1), activation=act,
                                threshold=threshold, topk=topk if act == "topk" else None)
        encs.append(layer)
        acts.append(layer.encode(xs[i]))  # (N, d_tc)
    decs = _fit_decoders(xs, ys, acts, kind, skip)
    f32 = torch.float32
    layers = tuple(
        TranscoderLayer(
            W_enc=e.W_enc.to(f32), b_enc=e.b_enc.to(f32), W_dec=dec["W_dec"].to(f32).contiguous(),
            b_dec=dec["b_dec"].to(f32), activation=e.activation,
            threshold=None if e.threshold is None else e.threshold.to(f32), topk=e.topk,
            skip_T=dec["skip_T"].to(f32).contiguous() if skip else None,
        )
        for e, dec in zip(encs, decs, strict=True)
    )
    name = f"tiny-{kind}-{act}{'-skip' if skip else ''}"
    return Transcoders(kind=kind, layers=layers, input_hook=input_hook, output_hook=output_hook,
                       scan=name, source=name)


def tiny_transcoders(loaded: LoadedModel, kind: Kind = "plt", act: Activation = "relu", skip: bool = False,
                     d_transcoder: int = 64, seed: int = 0, *, topk: int | None = None,
                     input_hook: str | None = None, output_hook: str | None = None) -> Transcoders:
    """Random transcoders fitted to ``loaded``'s MLPs (float32, CPU, dense decoders).

    kind: "plt" | "clt"; act: "relu" | "jumprelu" | "topk" (PLT); skip adds a fitted linear skip.
    Hooks default to the adapter's (Gemma-2: ``ln2.hook_normalized`` -> ``hook_mlp_out``).
    """
    if kind not in ("plt", "clt"):
        raise ValueError(f"kind must be 'plt' or 'clt'; got {kind!r}.")
    if act not in ("relu", "jumprelu", "topk"):
        raise ValueError(f"act must be 'relu', 'jumprelu' or 'topk'; got {act!r}.")
    k = topk if topk is not None else max(1, d_transcoder // 8)
    in_hook = input_hook or loaded.adapter.default_input_hook
    out_hook = output_hook or loaded.adapter.default_output_hook
    key = (_fingerprint(loaded), kind, act, skip, d_transcoder, seed, k, in_hook, out_hook)
    if key not in _TC_CACHE:
        _TC_CACHE[key] = _build_transcoders(loaded, kind, act, skip, d_transcoder, seed, k, in_hook, out_hook)
    return copy.deepcopy(_TC_CACHE[key])


# ----------------------------------------------------------------------------- writers
def save_transcoders(tc: Transcoders, directory: str | Path) -> Path:
    """Write ``tc`` in circuit-tracer's format (PLT: layer_{i}; CLT: W_enc_{i} + W_dec_{i})."""
    return write_transcoders(tc, directory)


def save_model(loaded: LoadedModel, directory: str | Path) -> Path:
    """save_pretrained (safetensors) + the word-level tokenizer, so ``load_model(directory)`` works."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cast("PreTrainedModel", loaded.model).save_pretrained(out, safe_serialization=True)
    # an HF tokenizer: tiny_model's, or AutoTokenizer's when ``loaded`` came from load_model
    tok = cast("PreTrainedTokenizerFast", loaded.tokenizer or tiny_tokenizer(loaded.d_vocab))
    tok.save_pretrained(out)
    return out


__all__ = ["ARCHS", "BOS_ID", "model_config", "random_tokens", "save_model", "save_transcoders",
           "tiny_model", "tiny_tokenizer", "tiny_transcoders"]

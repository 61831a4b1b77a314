"""The native loader (no `transformers` import) computes what the HF model computes."""

import json
import subprocess
import sys

import pytest
import torch

from tests.helpers_models import save_model, tiny_model
from tracer.models import load_model
from tracer.models.forward import run_with_cache

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
CASES = [
    ("qwen3", {}),
    ("qwen3", {"attention_bias": True}),
    ("llama", {"rope_scaling": LLAMA3_ROPE}),
    ("llama", {"tie_word_embeddings": True, "mlp_bias": True}),
    ("gemma2", {}),
]


@pytest.mark.parametrize("arch,overrides", CASES)
def test_native_forward_cache_equals_hf(tmp_path, arch, overrides):
    save_model(tiny_model(arch, **overrides), tmp_path / "m")
    hf = load_model(tmp_path / "m", backend="hf")
    native = load_model(tmp_path / "m", backend="native")
    assert type(native.model).__name__ == "NativeCausalLM"
    tokens = torch.tensor([1, 5, 9, 33, 7, 12, 40, 41, 8, 20, 3, 60, 61, 2, 19, 30, 31, 44])
    a, b = run_with_cache(hf, tokens), run_with_cache(native, tokens)
    for name in ("resid_pre", "resid_mid", "patterns", "mlp_input", "mlp_output", "block_mlp_out", "scale_attn_in",
                 "scale_mlp_in", "scale_final", "logits"):
        x, y = getattr(a, name), getattr(b, name)
        assert torch.allclose(x, y, atol=2e-5, rtol=1e-4), f"{name}: max diff {(x - y).abs().max():.2e}"


def test_unsupported_config_falls_back_to_hf(tmp_path):
    save_model(tiny_model("llama"), tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    assert type(load_model(tmp_path / "m", backend="auto").model).__name__ == "LlamaForCausalLM"
    with pytest.raises(ValueError, match="yarn"):
        load_model(tmp_path / "m", backend="native")


def test_native_trace_does_not_import_transformers(tmp_path):
    loaded = tiny_model("qwen3")
    save_model(loaded, tmp_path / "m")
    code = ("import sys; from tracer.models import load_model, tokenize; "
            f"m = load_model({str(tmp_path / 'm')!r}, backend='auto'); tokenize(m, 'the cat'); "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("tokenizer_class", ["GemmaTokenizer", "no key", "no file"])
def test_native_backend_tokenizes_as_autotokenizer_for_a_model_specific_tokenizer_class(tmp_path, tokenizer_class):
    """A folder whose tokenizer_config names a model-specific class (GemmaTokenizer), or names none (then
    AutoTokenizer picks one from the model type): transformers 5 rebuilds that class's pre-tokenizer
    instead of reading tokenizer.json's, so the native backend, which read tokenizer.json alone, traced
    other token ids than --model-backend hf and circuit-tracer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    save_model(tiny_model("gemma2"), tmp_path / "m")
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(["Today is Monday . Tomorrow is Tuesday ."] * 20,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if tokenizer_class == "no file":
        config_path.unlink()
    else:
        config.pop("tokenizer_class")
        config.update({"tokenizer_class": tokenizer_class} if tokenizer_class != "no key" else {})
        config_path.write_text(json.dumps(config))
    prompt = "Today is Monday . Tomorrow is"
    want = AutoTokenizer.from_pretrained(tmp_path / "m")(prompt, add_special_tokens=False)["input_ids"]
    native = load_model(tmp_path / "m", backend="auto")
    assert type(native.model).__name__ != "Gemma2ForCausalLM"  # the native model, with the HF tokenizer
    assert native.tokenizer is not None
    assert native.tokenizer(prompt, add_special_tokens=False)["input_ids"] == want

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

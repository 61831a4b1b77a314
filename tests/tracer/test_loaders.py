"""Transcoder loaders: every on-disk format, lazy == eager, and clear errors on bad files."""

from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tracer.errors import TranscoderFormatError
from tracer.transcoders.loaders import load_transcoders
from tracer.transcoders.mmap import open_safetensors

D, DTC, L = 8, 12, 3


def _plt_layer(seed: int, skip: bool = False, threshold: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {"W_enc": torch.randn(DTC, D, generator=g), "b_enc": torch.randn(DTC, generator=g),
          "W_dec": torch.randn(DTC, D, generator=g), "b_dec": torch.randn(D, generator=g)}
    if skip:
        sd["W_skip"] = torch.randn(D, D, generator=g)
    if threshold:
        sd["activation_function.threshold"] = torch.rand(DTC, generator=g)
    return sd


def write_plt(path, skip=False, threshold=False, n_layers=L, extra_cfg=""):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(
        "model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n" + extra_cfg)
    layers = [_plt_layer(i, skip, threshold) for i in range(n_layers)]
    for i, sd in enumerate(layers):
        save_file(sd, str(path / f"layer_{i}.safetensors"))
    return layers


def test_plt_roundtrip_lazy_equals_eager(tmp_path):
    layers = write_plt(tmp_path / "plt", skip=True, threshold=True)
    lazy = load_transcoders(tmp_path / "plt", lazy_decoder=True, n_layers=L, d_model=D)
    eager = load_transcoders(tmp_path / "plt", lazy_decoder=False)
    idx = torch.tensor([0, 5, 11, 5])
    for i in range(L):
        assert torch.equal(lazy.layers[i].decoder_rows(idx, torch.float32), layers[i]["W_dec"][idx])
        assert torch.equal(eager.layers[i].decoder_rows(idx, torch.float32), layers[i]["W_dec"][idx])
        assert lazy.layers[i].activation == "jumprelu"
        # circuit-tracer's PLT skip is x @ W_skip.T
        skip_T = lazy.layers[i].skip_T
        assert skip_T is not None and torch.equal(skip_T, layers[i]["W_skip"].T)
    x = torch.randn(4, D)
    pre = x @ layers[0]["W_enc"].T + layers[0]["b_enc"]
    thr = layers[0]["activation_function.threshold"]
    assert torch.allclose(lazy.layers[0].encode(x), pre * (pre > thr))


def test_topk_extension(tmp_path):
    write_plt(tmp_path / "plt", extra_cfg="activation_function: topk\ntopk_k: 3\n")
    tc = load_transcoders(tmp_path / "plt")
    acts = tc.layers[0].encode(torch.randn(5, D))
    assert ((acts != 0).sum(-1) == 3).all()


def test_clt_format(tmp_path):
    path = tmp_path / "clt"
    path.mkdir()
    (path / "config.yaml").write_text("model_kind: cross_layer_transcoder\n")
    decs = []
    for i in range(L):
        save_file({f"W_enc_{i}": torch.randn(DTC, D), f"b_enc_{i}": torch.randn(DTC), f"b_dec_{i}": torch.randn(D),
                   f"threshold_{i}": torch.rand(DTC)}, str(path / f"W_enc_{i}.safetensors"))
        decs.append(torch.randn(DTC, L - i, D))
        save_file({f"W_dec_{i}": decs[-1]}, str(path / f"W_dec_{i}.safetensors"))
    tc = load_transcoders(path, n_layers=L, d_model=D)
    assert tc.kind == "clt" and tc.layers[1].activation == "jumprelu"
    assert torch.equal(tc.layers[1].decoder_rows(torch.tensor([2, 3]), torch.float32), decs[1][[2, 3]])


def test_gemma_scope_npz_and_gemma_scope_2(tmp_path):
    path = tmp_path / "gs"
    path.mkdir()
    entries = []
    ref = []
    for i in range(L):
        W_enc = np.random.randn(D, DTC).astype(np.float32)  # Gemma Scope stores (d_model, d_tc)
        sd: dict[str, Any] = {"W_enc": W_enc, "W_dec": np.random.randn(DTC, D).astype(np.float32),
              "b_enc": np.zeros(DTC, np.float32), "b_dec": np.zeros(D, np.float32),
              "threshold": np.full(DTC, 0.1, np.float32)}
        (path / f"layer_{i}").mkdir()
        np.savez(path / f"layer_{i}" / "params.npz", **sd)
        entries.append(f"hf://google/gemma-scope-2b-pt-transcoders/layer_{i}/params.npz")
        ref.append(sd)
    (path / "config.yaml").write_text("model_kind: transcoder_set\nfeature_input_hook: ln2.hook_normalized\n"
                                      "feature_output_hook: hook_mlp_out\ntranscoders:\n"
                                      + "".join(f"  - {e}\n" for e in entries))
    tc = load_transcoders(path, n_layers=L, d_model=D)
    assert torch.equal(tc.layers[2].W_enc, torch.from_numpy(ref[2]["W_enc"]).T)
    assert tc.layers[0].activation == "jumprelu" and tc.input_hook == "ln2.hook_normalized"
    # Gemma Scope 2: lowercase keys and an affine skip
    p2 = tmp_path / "gs2"
    p2.mkdir()
    for i in range(L):
        save_file({"w_enc": torch.randn(D, DTC), "w_dec": torch.randn(DTC, D), "b_enc": torch.zeros(DTC),
                   "b_dec": torch.zeros(D), "threshold": torch.zeros(DTC),
                   "affine_skip_connection": torch.eye(D) * (i + 1)}, str(p2 / f"l{i}.safetensors"))
    (p2 / "config.yaml").write_text("transcoders: [l0.safetensors, l1.safetensors, l2.safetensors]\n")
    tc2 = load_transcoders(p2)
    skip_T = tc2.layers[2].skip_T
    assert skip_T is not None and torch.equal(skip_T, torch.eye(D) * 3)


@pytest.mark.parametrize("n_layers,d_model,match", [(L + 1, D, "layer count"), (L, D + 1, "d_model")])
def test_mismatch_with_model_names_dimension(tmp_path, n_layers, d_model, match):
    write_plt(tmp_path / "plt")
    with pytest.raises(TranscoderFormatError, match=match):
        load_transcoders(tmp_path / "plt", n_layers=n_layers, d_model=d_model)


def test_corrupt_and_missing_files(tmp_path):
    write_plt(tmp_path / "plt")
    bad = tmp_path / "plt" / "layer_1.safetensors"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(TranscoderFormatError, match="layer_1.safetensors"):
        load_transcoders(tmp_path / "plt")
    with pytest.raises(TranscoderFormatError, match="must be a directory"):
        load_transcoders(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TranscoderFormatError, match="config.yaml"):
        load_transcoders(tmp_path / "empty")
    (tmp_path / "plt" / "layer_1.safetensors").unlink()
    with pytest.raises(TranscoderFormatError, match="without gaps"):
        load_transcoders(tmp_path / "plt")
    (tmp_path / "plt" / "config.yaml").write_bytes(b"\xa8\x01 binary")  # its error named no file
    with pytest.raises(TranscoderFormatError, match=r"config.yaml must be UTF-8 text; got '.*plt/config.yaml' \(byte"):
        load_transcoders(tmp_path / "plt")


def test_mmap_reads_bf16(tmp_path):
    t = torch.randn(6, 4).to(torch.bfloat16)
    save_file({"x": t}, str(tmp_path / "x.safetensors"))
    m = open_safetensors(tmp_path / "x.safetensors")["x"]
    assert torch.equal(m.rows(torch.tensor([4, 1])), t[[4, 1]])

"""Against circuit-tracer 0.5.0 itself, when it is importable (install us next to it to run this).

    pip install circuit-tracer==0.5.0 nnsight==0.7.0 && pip install --no-deps -e . && pytest -m circuit_tracer
"""

import os

import pytest
import torch

from tests.helpers_models import save_model, save_transcoders, tiny_model, tiny_transcoders
from tracer.attribution import attribute
from tracer.config import AttributionConfig
from tracer.models import load_model
from tracer.transcoders.loaders import load_transcoders


@pytest.mark.circuit_tracer
@pytest.mark.parametrize("kind,act,skip", [("plt", "relu", False), ("plt", "jumprelu", True), ("clt", "relu", False)])
@pytest.mark.parametrize("cap", [None, 12])
def test_same_graph_as_circuit_tracer(tmp_path, monkeypatch, kind, act, skip, cap):
    loaded = tiny_model("qwen3")
    save_model(loaded, tmp_path / "model")
    ref = f"synthetic/tiny-{kind}"
    save_transcoders(tiny_transcoders(loaded, kind=kind, act=act, skip=skip), tmp_path / "cache" / ref)
    monkeypatch.setenv("CIRCUIT_TRACER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from circuit_tracer import ReplacementModel
    from circuit_tracer import attribute as ct_attribute

    ct_model = ReplacementModel.from_pretrained(str(tmp_path / "model"), ref, backend="nnsight",
                                                device=torch.device("cpu"), dtype=torch.float32)
    tokens = [1, 5, 9, 33, 7, 12, 40, 41, 8, 20, 44, 60, 61, 19]
    ct = ct_attribute(tokens, ct_model, batch_size=8, max_feature_nodes=cap, verbose=False)
    ours = attribute(load_model(tmp_path / "model"), load_transcoders(tmp_path / "cache" / ref), tokens,
                     AttributionConfig(verbose=False, batch_size=8, max_feature_nodes=cap))
    assert torch.equal(ours.active_features, ct.active_features.cpu().long())
    assert torch.equal(ours.selected_features, ct.selected_features.cpu().long())
    assert ours.logit_token_ids.tolist() == [int(t.vocab_idx) for t in ct.logit_targets]
    a, b = ours.adjacency.double(), ct.adjacency_matrix.double().cpu()
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    streamed = attribute(load_model(tmp_path / "model"), load_transcoders(tmp_path / "cache" / ref), tokens,
                         AttributionConfig(verbose=False, batch_size=8, max_feature_nodes=cap),
                         out=tmp_path / "graph.npz")  # rows streamed into the file: the same graph
    assert torch.equal(streamed.adjacency, ours.adjacency)
    del ct_model
    assert os.environ["CIRCUIT_TRACER_CACHE_DIR"]

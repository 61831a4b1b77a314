"""tracer.graph.ct_import: circuit-tracer .pt graphs, read without circuit-tracer, only with consent."""

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from tests.reference.dense_prune import random_graph
from tracer.errors import WorkbenchError
from tracer.graph import Graph
from tracer.graph.ct_import import load_circuit_tracer_pt


class LogitTarget(NamedTuple):
    token_str: str
    vocab_idx: int


@dataclass
class UnifiedConfig:
    n_layers: int
    d_model: int
    d_vocab: int
    tokenizer_name: str
    model_name: str
    dtype: Any = None


@dataclass
class HookedTransformerConfig:
    n_layers: int
    d_vocab: int
    model_name: str
    dtype: Any = torch.float32
    device: Any = None


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **classes: type) -> None:
    """Register `classes` under module `name` (and its parents), as if that package were installed."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__ = name, cls_name
        setattr(sys.modules[name], cls_name, cls)


def _save_ct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graph: Graph, *, legacy: bool = False,
             scan: Any = "demo-scan", cfg: str = "unified") -> Path:
    """Write `graph` the way circuit-tracer 0.5.0's Graph.to_pt does, with its class paths."""
    before = sys.modules.get("circuit_tracer")  # the real package where it is installed, else None
    with monkeypatch.context() as m:
        _fake_module(m, "circuit_tracer.attribution.targets", LogitTarget=LogitTarget)
        _fake_module(m, "circuit_tracer.utils.tl_nnsight_mapping", UnifiedConfig=UnifiedConfig)
        _fake_module(m, "transformer_lens.HookedTransformerConfig",
                     HookedTransformerConfig=HookedTransformerConfig)
        if cfg == "unified":
            config: Any = UnifiedConfig(graph.n_layers, 8, graph.d_vocab, "org/model", "model", torch.float32)
        else:
            config = HookedTransformerConfig(graph.n_layers, graph.d_vocab, "legacy-model",
                                             device=torch.device("cpu"))
        pairs = zip(graph.logit_tokens, graph.logit_token_ids.tolist(), strict=True)
        targets: Any = graph.logit_token_ids.clone() if legacy else [LogitTarget(s, v) for s, v in pairs]
        data = {
            "input_string": graph.input_string, "adjacency_matrix": graph.adjacency, "cfg": config,
            "active_features": graph.active_features, "logit_targets": targets,
            "logit_probabilities": graph.logit_probabilities, "vocab_size": graph.d_vocab,
            "input_tokens": graph.input_tokens, "selected_features": graph.selected_features,
            "activation_values": graph.activation_values, "scan": scan,
        }
        path = tmp_path / "graph.pt"
        torch.save(data, path)
    assert sys.modules.get("circuit_tracer") is before  # the fakes are gone again
    return path


_FIELDS = ("adjacency", "input_tokens", "active_features", "activation_values", "selected_features",
           "logit_token_ids", "logit_probabilities")


def test_import_matches_the_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = random_graph(4, n_selected=10)
    got = load_circuit_tracer_pt(_save_ct(tmp_path, monkeypatch, graph), trust_pickle=True)
    for name in _FIELDS:
        assert torch.equal(getattr(got, name), getattr(graph, name)), name
    want = (graph.n_layers, 100, "demo-scan", "org/model")
    assert (got.n_layers, got.d_vocab, got.scan, got.model_id) == want
    assert got.logit_tokens == graph.logit_tokens and got.input_string == graph.input_string
    assert got.logit_vectors.shape == (graph.n_logits, 0)
    assert "unavailable" in str(got.extra["logit_vectors"])
    ct_cfg = got.extra["circuit_tracer_cfg"]
    assert isinstance(ct_cfg, dict) and ct_cfg["dtype"] == "torch.float32"
    native = got.save(tmp_path / "g.safetensors")
    back = Graph.load(native)
    for name in _FIELDS:
        assert torch.equal(getattr(back, name), getattr(graph, name)), name


def test_legacy_tensor_targets_and_transformer_lens_cfg(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    graph = random_graph(5)
    path = _save_ct(tmp_path, monkeypatch, graph, legacy=True, scan=["tc/a", "tc/b"], cfg="tl")
    got = load_circuit_tracer_pt(path, trust_pickle=True)
    assert torch.equal(got.logit_token_ids, graph.logit_token_ids)
    assert got.logit_tokens == ("",) * graph.n_logits
    assert got.scan == "" and got.extra["transcoder_list"] == ["tc/a", "tc/b"]
    assert got.model_id == "legacy-model"


def test_refuses_without_consent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save_ct(tmp_path, monkeypatch, random_graph(1))
    with pytest.raises(WorkbenchError, match=r"is a pickle; allow it \(trust_pickle=True\) only if you trust"):
        load_circuit_tracer_pt(path, trust_pickle=False)


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.target),))

    target = ""


def test_refuses_foreign_globals_even_when_trusted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil()
    _Evil.target = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"adjacency_matrix": torch.zeros(2, 2), "x": evil}, path)
    with pytest.raises(WorkbenchError, match="refusing to load global"):
        load_circuit_tracer_pt(path, trust_pickle=True)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04broken"])
def test_corrupt_or_missing_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(WorkbenchError, match="must be a torch.save file"):
        load_circuit_tracer_pt(path, trust_pickle=True)
    with pytest.raises(WorkbenchError, match="must exist"):
        load_circuit_tracer_pt(tmp_path / "missing.pt", trust_pickle=True)


def test_wrong_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(WorkbenchError, match="Graph.to_pt dict"):
        load_circuit_tracer_pt(path, trust_pickle=True)
    graph = random_graph(2)
    bad = Graph(**{**graph.__dict__, "adjacency": graph.adjacency[1:, 1:]})
    with pytest.raises(WorkbenchError, match="adjacency must be"):
        load_circuit_tracer_pt(_save_ct(tmp_path, monkeypatch, bad), trust_pickle=True)

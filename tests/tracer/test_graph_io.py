"""Graph formats: native (safetensors + JSON header) and npz round trips, node metadata, errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.errors import WorkbenchError
from tracer.graph import Graph, load_npz


def random_graph(n_layers: int, n_pos: int, n_active: int, n_logits: int, seed: int) -> Graph:
    g = torch.Generator().manual_seed(seed)
    layers = torch.randint(0, n_layers, (n_active,), generator=g)
    pos = torch.randint(1, max(2, n_pos), (n_active,), generator=g).clamp(max=n_pos - 1)
    feats = torch.randint(0, 1000, (n_active,), generator=g)
    active = torch.stack([layers, pos, feats], 1)
    active = torch.unique(active, dim=0)  # sorted by (layer, pos, feature), as attribution yields
    F = active.shape[0]
    N = F + (n_layers + 1) * n_pos + n_logits
    return Graph(
        adjacency=torch.randn(N, N, generator=g), input_tokens=torch.randint(0, 50, (n_pos,), generator=g),
        active_features=active, activation_values=torch.rand(F, generator=g), selected_features=torch.arange(F),
        logit_token_ids=torch.arange(n_logits), logit_probabilities=torch.rand(n_logits, generator=g),
        logit_vectors=torch.randn(n_logits, 4, generator=g), n_layers=n_layers, d_vocab=50,
        model_id="m", transcoder_id="t", scan="s", input_string="a b c", logit_tokens=tuple("xyz"[:n_logits]),
        extra={"note": [1, 2]},
    )


@settings(deadline=None, max_examples=12)
@given(n_layers=st.integers(1, 3), n_pos=st.integers(1, 6), n_active=st.integers(0, 12),
       n_logits=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_native_and_npz_round_trips_are_exact(tmp_path_factory, n_layers, n_pos, n_active, n_logits, seed):
    graph = random_graph(n_layers, n_pos, n_active, n_logits, seed)
    d = tmp_path_factory.mktemp("g")
    back = Graph.load(graph.save(d / "g.safetensors"))
    for name in ("adjacency", "input_tokens", "active_features", "activation_values", "selected_features",
                 "logit_token_ids", "logit_probabilities", "logit_vectors"):
        assert torch.equal(getattr(back, name), getattr(graph, name)), name
    assert (back.n_layers, back.d_vocab, back.scan, back.logit_tokens, back.extra) == (
        graph.n_layers, graph.d_vocab, graph.scan, graph.logit_tokens, graph.extra)
    npz = Graph.load(graph.save(d / "g.npz"))
    assert torch.equal(npz.adjacency, graph.adjacency)
    z = np.load(d / "g.npz")
    assert sorted(z.files) == sorted([
        "adjacency", "node_type", "node_layer", "node_pos", "node_index", "active_features", "activation_values",
        "selected_features", "input_tokens", "logit_token_ids", "logit_probabilities", "logit_vectors",
        "n_layers", "n_pos"])
    assert len(z["node_type"]) == graph.n_nodes == len(z["node_index"])
    assert z["n_layers"].shape == () and int(z["n_layers"]) == n_layers
    assert np.array_equal(z["active_features"], graph.active_features.numpy())


def test_node_metadata_follows_circuit_tracer_order():
    graph = random_graph(2, 3, 5, 2, 0)
    F, L, P = graph.n_selected, 2, 3
    t, lay, pos, idx = graph.node_type(), graph.node_layer(), graph.node_pos(), graph.node_index()
    assert list(t) == [0] * F + [1] * (L * P) + [2] * P + [3] * 2
    assert list(lay[F:F + L * P]) == [0, 0, 0, 1, 1, 1] and list(pos[F:F + L * P]) == [0, 1, 2] * 2
    assert list(idx[F + L * P:F + L * P + P]) == graph.input_tokens.tolist()
    assert list(lay[-2:]) == [L, L] and list(pos[-2:]) == [P - 1, P - 1]


def test_bad_graph_files(tmp_path):
    with pytest.raises(WorkbenchError, match="must exist"):
        Graph.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a graph")
    with pytest.raises(WorkbenchError, match="valid safetensors"):
        Graph.load(tmp_path / "junk.safetensors")
    np.savez(tmp_path / "partial.npz", adjacency=np.zeros((2, 2)))
    with pytest.raises(WorkbenchError, match="lacks"):
        load_npz(tmp_path / "partial.npz")


@pytest.mark.parametrize("name", ["g.npz", "g.safetensors"])
def test_save_is_atomic(tmp_path, monkeypatch, name):
    graph = random_graph(1, 2, 2, 1, 0)
    target = tmp_path / name

    def boom(*a, **k):
        raise RuntimeError("disk full")

    import tracer.graph.stream

    monkeypatch.setattr(tracer.graph.stream.GraphFileWriter, "finish", boom)
    with pytest.raises(RuntimeError):
        graph.save(target)
    assert list(tmp_path.iterdir()) == []

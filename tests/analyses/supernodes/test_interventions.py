"""analyses.supernodes.interventions: predicted effects by hand, random matches, the shipped world."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from analyses.supernodes import interventions
from analyses.supernodes.circuit import ReadableCircuit
from analyses.supernodes.config import InterventionConfig
from analyses.supernodes.interventions import InterventionCheck, _random_matches, check_supernodes, predicted_effects
from tracer.graph import Graph
from workbench.paths import world_dir

WORLD = world_dir()
needs_world = pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="the demo world is not built")


def _two_feature_chain() -> Graph:
    """f0 (layer 0) -> f1 (layer 1) -> logit, and f0 -> logit directly."""
    n = 2 + 2 * 2 + 2 + 1
    A = torch.zeros(n, n)
    A[1, 0] = 2.0  # f1's pre-activation reads f0
    A[n - 1, 1], A[n - 1, 0] = 3.0, 1.0
    return Graph(adjacency=A, input_tokens=torch.tensor([1, 5]), active_features=torch.tensor([[0, 1, 3], [1, 1, 4]]),
                 activation_values=torch.tensor([1.0, 4.0]), selected_features=torch.tensor([0, 1]),
                 logit_token_ids=torch.tensor([7]), logit_probabilities=torch.tensor([1.0]),
                 logit_vectors=torch.zeros(1, 4), n_layers=2, d_vocab=10)


def test_predicted_effects_propagate_through_later_features() -> None:
    pred = predicted_effects(_two_feature_chain(), [np.array([0]), np.array([1]), np.array([0, 1])])
    # removing f0 moves f1 by -2 / 4 = -50% of its activation: 1 * -1 + 3 * -0.5
    np.testing.assert_allclose(pred, [[-2.5, -3.0, -4.0]])


class _RowCountingAdjacency:
    """A dense matrix that records how many rows each read takes (the check must never read them all)."""

    def __init__(self, A: torch.Tensor) -> None:
        self.A, self.shape, self.device = A, A.shape, A.device
        self.reads: list[int] = []

    def __getitem__(self, key: Any) -> torch.Tensor:
        rows = self.A[key]
        self.reads.append(rows.shape[0])
        return rows


def test_predicted_effects_read_the_adjacency_in_small_blocks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A large unpruned graph's memory-mapped adjacency is read a few rows at a time, with the same result as
    the whole-matrix product."""
    gen = torch.Generator().manual_seed(0)
    n_layers, per_layer, n_pos = 3, 12, 2
    F = n_layers * per_layer
    n = F + n_layers * n_pos + n_pos + 2
    layer_of = torch.arange(F) // per_layer  # (F,)
    A = torch.randn(n, n, generator=gen)  # (n, n)
    A[:F, :F] *= layer_of[None, :] < layer_of[:, None]  # features read only earlier layers
    graph = Graph(adjacency=A, input_tokens=torch.tensor([1, 5]),
                  active_features=torch.stack([layer_of, torch.arange(F) % n_pos, torch.arange(F)], 1),
                  activation_values=torch.rand(F, generator=gen) + 0.5, selected_features=torch.arange(F),
                  logit_token_ids=torch.tensor([7, 8]), logit_probabilities=torch.tensor([0.6, 0.4]),
                  logit_vectors=torch.zeros(2, 4), n_layers=n_layers, d_vocab=10)
    groups = [np.array([0, 3]), np.array([13]), np.array([1, 14, 30])]
    whole = predicted_effects(graph, groups)  # (2, 3)
    counting = _RowCountingAdjacency(A)
    released: list[tuple[int, int]] = []
    monkeypatch.setattr(interventions, "_BLOCK_BYTES", 8 * F * 5)  # five rows per read
    monkeypatch.setattr(interventions, "release_rows", lambda m, r0, r1: released.append((r0, r1)))
    blocked = predicted_effects(dataclasses.replace(graph, adjacency=counting), groups)  # type: ignore[arg-type]
    np.testing.assert_allclose(blocked, whole, rtol=1e-12)
    assert counting.reads and max(counting.reads) == 5
    # a memory-mapped file's pages are dropped after each block (they took 22 GB of RSS at 88,890 nodes)
    assert len(released) == len(counting.reads) and all(r1 - r0 == 5 for r0, r1 in released[:2])
    monkeypatch.undo()
    mapped = Graph.load(graph.save(tmp_path / "g.safetensors"), mmap=True)
    np.testing.assert_array_equal(predicted_effects(mapped, groups), whole)  # pages dropped and read again
    assert np.abs(whole).min() > 0


def test_columns_are_read_a_block_of_rows_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph check's adjacency columns touched a page of every row of a memory-mapped file at once."""
    A = torch.randn(23, 7, generator=torch.Generator().manual_seed(1))
    released: list[tuple[int, int]] = []
    monkeypatch.setattr(interventions, "_BLOCK_BYTES", 7 * 4 * 5)  # five rows per block
    monkeypatch.setattr(interventions, "release_rows", lambda m, r0, r1: released.append((r0, r1)))
    assert torch.equal(interventions._columns(A, [4, 1]), A[:, [4, 1]])
    assert released == [(r, min(r + 5, 23)) for r in range(0, 23, 5)]


def test_an_inconsistent_check_is_refused() -> None:
    g = np.zeros(3)
    fields: dict[str, Any] = {
        "group_sizes": np.ones(3, dtype=np.int64), "predicted_margin": g, "predicted_logit": g,
        "measured_margin": {"frozen": g}, "measured_logit": {"frozen": g}, "win_rate": {"frozen": g},
        "random_margin": {"frozen": np.zeros((3, 4))}, "summary": {}, "target_token": 1, "runner_up_token": 2,
        "runner_up_in_graph": True, "clean_margin": 0.5, "n_unmatched": 0}
    InterventionCheck(**fields)
    with pytest.raises(ValueError, match=r"InterventionCheck measured_margin\['frozen'\] must have shape \(3,\)"):
        InterventionCheck(**{**fields, "measured_margin": {"frozen": np.zeros(2)}})
    with pytest.raises(ValueError, match=r"InterventionCheck random_margin\['frozen'\] must have shape \(3, n\)"):
        InterventionCheck(**{**fields, "random_margin": {"frozen": np.zeros(3)}})


def test_random_matches_sit_in_the_members_cells_and_avoid_them() -> None:
    active = torch.tensor([[0, 1, f] for f in range(6)] + [[1, 2, f] for f in range(2)])
    graph = Graph(adjacency=torch.zeros(8 + 6 + 3 + 1, 8 + 6 + 3 + 1), input_tokens=torch.tensor([1, 5, 6]),
                  active_features=active, activation_values=torch.ones(8), selected_features=torch.arange(8),
                  logit_token_ids=torch.tensor([7]), logit_probabilities=torch.tensor([1.0]),
                  logit_vectors=torch.zeros(1, 4), n_layers=2, d_vocab=10)
    groups = [np.array([0, 1]), np.array([6, 7])]
    matches, unmatched = _random_matches(graph, groups, 10, np.random.default_rng(0))
    for draw in matches[0]:
        assert len(draw) == 2 and all((layer, pos) == (0, 1) and f not in (0, 1) for layer, pos, f in draw)
    assert all(draw == [] for draw in matches[1]) and unmatched == 2 * 10  # cell (1, 2) has no other feature


@needs_world
@pytest.mark.slow
def test_shipped_world_supernode_ablations_follow_the_graph_and_beat_random_groups() -> None:
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.models import load_model, tokenize
    from tracer.transcoders.loaders import load_transcoders

    loaded = load_model(WORLD / "model")
    tcs = load_transcoders(WORLD / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    graph = attribute(loaded, tcs, tokenize(loaded, "The capital of the region containing Kolt is"),
                      AttributionConfig(verbose=False))
    rc = ReadableCircuit().fit(graph, transcoders=tcs)
    groups = [rc.clustering_.groups_[k] for k in rc.chosen_]
    check = check_supernodes(loaded, tcs, graph, groups, config=InterventionConfig(n_random=5, modes=("frozen",)))
    summary = check.summary["frozen"]
    assert check.random_margin["frozen"].shape == (len(groups), 5) and check.clean_margin > 5
    assert summary["spearman_logit"] > 0.3 and summary["mean_win_rate"] > 0.55, summary
    clt = load_transcoders(WORLD / "clt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    with pytest.raises(ValueError, match="must reproduce the graph's activations"):
        check_supernodes(loaded, clt, graph, groups[:1], config=InterventionConfig(n_random=1))
    with pytest.raises(ValueError, match="groups must be non-empty lists of feature node indices"):
        check_supernodes(loaded, tcs, graph, [[graph.n_selected]])

"""Graphs streamed to a file as they are computed: identical to the in-memory path, atomic, bounded
in memory, checked for disk space; memory-mapped graphs prune and score exactly as in memory."""

import json
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers_models import tiny_model, tiny_transcoders
from tracer.attribution import attribute
from tracer.config import AttributionConfig, PruneConfig
from tracer.errors import WorkbenchError
from tracer.graph import Graph, graph_scores, prune_graph, subgraph_scores
from tracer.graph.stream import crc32_zeros, open_graph_file
from tracer.mapped import is_mapped, release_all
from tracer.transcoders.base import Kind

TOKENS = [1, 5, 9, 12, 7, 3, 8, 40, 22]
TIMING = ("attribution_seconds", "finish_seconds")


def _setup(kind: Kind):
    loaded = tiny_model("qwen3")
    return loaded, tiny_transcoders(loaded, kind=kind, act="jumprelu" if kind == "plt" else "relu",
                                    skip=kind == "plt")


def _same_graph(a: Graph, b: Graph) -> None:
    for name in ("adjacency", "input_tokens", "active_features", "activation_values", "selected_features",
                 "logit_token_ids", "logit_probabilities", "logit_vectors"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


@pytest.mark.parametrize("kind", ["plt", "clt"])
@pytest.mark.parametrize("cap", [None, 9])
@pytest.mark.parametrize("adjacency_dtype", ["auto", "bfloat16"])
def test_streamed_file_equals_the_in_memory_graph(tmp_path, kind, cap, adjacency_dtype):
    loaded, tc = _setup(kind)
    cfg = AttributionConfig(verbose=False, max_feature_nodes=cap, batch_size=4, n_workers=2,
                            adjacency_dtype=adjacency_dtype)
    memory = attribute(loaded, tc, TOKENS, cfg)
    assert cap is None or memory.n_selected == cap
    for suffix in ("npz", "safetensors"):
        streamed = attribute(loaded, tc, TOKENS, cfg, out=tmp_path / f"s.{suffix}")
        saved = memory.save(tmp_path / f"m.{suffix}")
        assert is_mapped(streamed.adjacency)
        if suffix == "npz":  # one writer, one layout: the very same bytes
            assert (tmp_path / "s.npz").read_bytes() == saved.read_bytes()
            assert streamed.adjacency.dtype == torch.float32
            assert torch.equal(streamed.adjacency, memory.adjacency.float())
        else:
            _same_graph(streamed, memory)
            _same_graph(Graph.load(tmp_path / "s.safetensors"), memory)
            meta = {k: v for k, v in Graph.load(tmp_path / "s.safetensors").extra.items() if k not in TIMING}
            assert meta == {k: v for k, v in memory.extra.items() if k not in TIMING}
        assert list(tmp_path.glob(".*tmp*")) == []


def test_streamed_files_open_with_the_usual_tools(tmp_path):
    loaded, tc = _setup("clt")
    cfg = AttributionConfig(verbose=False)
    graph = attribute(loaded, tc, TOKENS, cfg, out=tmp_path / "g.npz")
    assert zipfile.ZipFile(tmp_path / "g.npz").testzip() is None  # every member's CRC-32 checks out
    with np.load(tmp_path / "g.npz") as z:
        assert np.array_equal(z["adjacency"], graph.adjacency.numpy())
        assert z["n_layers"].shape == () and int(z["n_pos"]) == len(TOKENS)
    attribute(loaded, tc, TOKENS, cfg, out=tmp_path / "g.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "g.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("adjacency"), graph.adjacency)
        assert json.loads(f.metadata()["manifold_workbench_graph"])["schema_version"] == 1


def test_a_failure_mid_sweep_leaves_no_file(tmp_path, monkeypatch):
    loaded, tc = _setup("plt")
    import tracer.attribution.engine as engine

    calls = {"n": 0}
    real = engine.sweep

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "sweep", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        attribute(loaded, tc, TOKENS, AttributionConfig(verbose=False, sweep_rows=2, n_workers=1),
                  out=tmp_path / "g.npz")
    assert list(tmp_path.iterdir()) == []


_KILLED = """
import os, signal, sys
sys.path.insert(0, {root!r})
import torch
from tracer.graph.stream import open_graph_file
with open_graph_file({out!r}, 512, torch.float32) as writer:
    writer.adjacency[:256] = 1.0
    writer.rows_done(256)
    os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of the sweep
"""


def test_a_killed_run_leaves_nothing_at_the_final_path(tmp_path):
    out = tmp_path / "g.safetensors"
    code = _KILLED.format(root=str(Path(__file__).resolve().parents[2]), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    assert not out.exists()
    assert [p.name.startswith(".mwtmp-") for p in tmp_path.iterdir()] == [True]  # only the temp file


def test_not_enough_disk_is_refused_up_front(tmp_path, monkeypatch):
    import shutil

    loaded, tc = _setup("plt")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10 << 20))
    with pytest.raises(WorkbenchError, match="free disk space must hold the graph file") as err:
        attribute(loaded, tc, TOKENS, AttributionConfig(verbose=False), out=tmp_path / "g.npz")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


@settings(deadline=None, max_examples=25)
@given(n=st.integers(0, 300_000), seed=st.integers(0, 2**32 - 1))
def test_crc32_of_zero_runs_equals_zlib(n, seed):
    assert crc32_zeros(seed, n) == zlib.crc32(bytes(n), seed)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_writer_keeps_resident_memory_bounded_and_mapped_reads_release(tmp_path):
    n = 4096  # a 64 MiB float32 adjacency, written and read back one block of rows at a time
    rows = torch.arange(64.0)[:, None] + torch.arange(n, dtype=torch.float32)[None, :]  # row i: i + column
    before = _rss_mb()
    peak = before
    with open_graph_file(tmp_path / "g.safetensors", n, torch.float32, fmt="native") as writer:
        for r0 in range(0, n, 64):
            writer.adjacency[r0:r0 + 64] = rows + r0
            writer.rows_done(r0 + 64)
            peak = max(peak, _rss_mb())
        with pytest.raises(ValueError, match="nodes"):
            writer.finish(_graph(n + 1))
        writer.finish(_graph(n))
    assert peak - before < 40  # the writer releases every 16 MiB; the file is 64 MiB
    graph = Graph.load(tmp_path / "g.safetensors", mmap=True)
    assert torch.equal(graph.adjacency[70], torch.arange(n, dtype=torch.float32) + 70)
    base = _rss_mb()
    assert float(graph.adjacency.sum()) > 0 and _rss_mb() - base > 48  # read: resident
    release_all(graph.adjacency)
    assert _rss_mb() - base < 8  # released: only the data stays, in the file


def _graph(n: int) -> Graph:
    return Graph(adjacency=torch.zeros(()).expand(n, n), input_tokens=torch.tensor([1]),
                 active_features=torch.zeros(n - 3, 3, dtype=torch.long), activation_values=torch.ones(n - 3),
                 selected_features=torch.arange(n - 3), logit_token_ids=torch.tensor([0]),
                 logit_probabilities=torch.tensor([1.0]), logit_vectors=torch.zeros(1, 4), n_layers=1, d_vocab=4)


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_mapped_graphs_prune_and_score_bit_for_bit(tmp_path, monkeypatch, kind):
    import tracer.graph.influence as influence

    monkeypatch.setattr(influence, "_SINGLE_BLOCK_ELEMENTS", 64)  # many row blocks, each released
    monkeypatch.setattr(influence, "_BLOCK_ROWS", 16)
    loaded, tc = _setup(kind)
    memory = attribute(loaded, tc, TOKENS * 3, AttributionConfig(verbose=False))
    for suffix in ("npz", "safetensors"):
        mapped = Graph.load(memory.save(tmp_path / f"g.{suffix}"), mmap=True)
        assert is_mapped(mapped.adjacency) and torch.equal(mapped.adjacency, memory.adjacency)
        config = PruneConfig(node_threshold=0.7, edge_threshold=0.95)
        a, b = prune_graph(memory, config), prune_graph(mapped, config)
        assert torch.equal(a.node_mask, b.node_mask) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.cumulative_scores, b.cumulative_scores)
        assert graph_scores(memory) == graph_scores(mapped)
        assert subgraph_scores(memory, prune_result=a) == subgraph_scores(mapped, prune_result=b)
        assert torch.equal(mapped.adjacency, memory.adjacency)  # released pages read back unchanged


def test_load_maps_only_when_asked_and_only_aligned_npz_members(tmp_path):
    A = torch.arange(36, dtype=torch.float32).reshape(6, 6)
    np.savez(tmp_path / "numpy.npz", adjacency=A.numpy(), input_tokens=np.arange(2),
             active_features=np.zeros((0, 3), np.int64),
             activation_values=np.zeros(0), selected_features=np.zeros(0, np.int64), logit_token_ids=np.arange(2),
             logit_probabilities=np.ones(2), logit_vectors=np.zeros((2, 3)), n_layers=np.int64(1))
    for mmap in (False, True):
        graph = Graph.load(tmp_path / "numpy.npz", mmap=mmap)
        assert torch.equal(graph.adjacency, A)
    assert not is_mapped(Graph.load(tmp_path / "numpy.npz").adjacency)
    assert os.path.getsize(tmp_path / "numpy.npz") > 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_lazy_zeros_cost_no_memory_and_pad_sums_exactly():
    from tracer.graph.prune import _torch_sum_of_prefix
    from tracer.mapped import lazy_zeros

    before = _rss_mb()
    zeros = lazy_zeros(1 << 28, torch.float32)  # 1 GiB of zeros
    assert float(zeros[::4096].abs().sum()) == 0.0 and _rss_mb() - before < 64  # read: the zero page
    values = torch.rand(100_000, generator=torch.Generator().manual_seed(0))
    total = 3 * (1 << 22) + 17  # above the size where the padding is mapped rather than allocated
    expected = torch.cat([values, torch.zeros(total - values.numel())]).sum()
    assert torch.equal(_torch_sum_of_prefix(values, total), expected)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs /proc (Linux)")
def test_a_graph_file_larger_than_memory_and_swap_maps(tmp_path):
    """A copy-on-write mapping is charged in full against the commit limit (ENOMEM past memory
    plus swap under the kernel's default heuristic); the read-only mapping is not."""
    from tracer.mapped import map_tensor, release_all

    kb = {line.split(":")[0]: int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
          if line.split(":")[0] in ("MemTotal", "SwapTotal")}
    n = int(((2 * (kb["MemTotal"] + kb["SwapTotal"]) * 1024) // 4) ** 0.5) + 1  # (n, n) float32 > 2x memory
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as fh:
        fh.truncate(4096 + n * n * 4)  # sparse: no disk blocks
    A = map_tensor(path, 4096, torch.float32, (n, n))
    assert float(A[0, 0]) == 0.0 and float(A[-1, -1]) == 0.0 and float(A[n // 2, : 1024].abs().sum()) == 0.0
    release_all(A)

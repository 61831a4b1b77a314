"""`workbench bench`: the synthetic model builder, the comparison, the report and the CLI.

Benchmarks are not timed tests: nothing here asserts a duration. The end-to-end test runs the
real subprocesses on a tiny model; the circuit-tracer test runs only where circuit_tracer imports.
"""

import ast
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers_cli import with_flags
from tracer.errors import WorkbenchError
from workbench.bench import compare, report
from workbench.bench.build import BOS_ID, TL_MODEL_NAME, ensure_built, random_prompt
from workbench.bench.config import BenchConfig, ModelSpec
from workbench.bench.procs import peak_rss_mb, reset_peak_rss, run_measured

TINY: dict[str, Any] = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab=64, d_transcoder=128,
                            target_l0=8.0, calib_seqs=16, calib_len=16)
TINY_FLAGS = ["--n-layers", "2", "--d-model", "32", "--n-heads", "4", "--n-kv-heads", "2", "--vocab", "64",
              "--d-transcoder", "128", "--target-l0", "8", "--calib-seqs", "16", "--calib-len", "16"]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-work")


@pytest.fixture(scope="module")
def built(work_dir: Path):
    return ensure_built(ModelSpec(**TINY), work_dir)[0]


# ----------------------------------------------------------------------------- builder
def _mlp_inputs(loaded, ids: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    def keep(_module, args, _out) -> None:
        seen.append(args[0][:, 1:].reshape(-1, args[0].shape[-1]))  # BOS dropped

    hooks = [blk.mlp.register_forward_hook(keep) for blk in loaded.blocks]
    try:
        with torch.no_grad():
            loaded.model(ids)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_builder_output_loads_with_calibrated_l0(built, kind: str) -> None:
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    loaded = load_model(built.model_dir, backend="hf")
    assert (loaded.n_layers, loaded.d_model, loaded.d_vocab) == (2, 32, 64)
    # bos_token_id: an HF tokenizer's attribute, not part of tracer's Tokenizer protocol
    assert loaded.tokenizer is not None and getattr(loaded.tokenizer, "bos_token_id", None) == BOS_ID
    tc = load_transcoders(built.transcoder_dir(kind), n_layers=2, d_model=32)
    assert tc.kind == kind and tc.d_transcoder == (128 if kind == "plt" else 64) and not tc.has_skip
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(4, 64, (8, 24), generator=gen)
    ids[:, 0] = BOS_ID
    for layer, x in enumerate(_mlp_inputs(loaded, ids)):  # fresh prompts, not the calibration batch
        l0 = float((tc.layers[layer].encode(x) > 0).sum(-1).float().mean())
        assert 8.0 / 2 <= l0 <= 8.0 * 2, f"layer {layer}: L0 {l0} vs target 8"
    calib = built.manifest["transcoders"][kind]["calibration"]
    assert all(4.0 <= c["l0"] <= 16.0 and 0.0 <= c["fvu"] < 1.0 for c in calib)


def test_builder_circuit_tracer_layout(built) -> None:
    import yaml
    from safetensors import safe_open

    plt_cfg = yaml.safe_load((built.transcoder_dir("plt") / "config.yaml").read_text())
    assert plt_cfg == {"model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in",
                       "feature_output_hook": "mlp.hook_out", "scan": built.transcoder_ref("plt")}
    clt_cfg = yaml.safe_load((built.transcoder_dir("clt") / "config.yaml").read_text())
    assert clt_cfg["model_kind"] == "cross_layer_transcoder"
    with safe_open(str(built.transcoder_dir("clt") / "W_dec_0.safetensors"), "pt") as f:
        assert tuple(f.get_slice("W_dec_0").get_shape()) == (64, 2, 32)
    with safe_open(str(built.transcoder_dir("clt") / "W_enc_1.safetensors"), "pt") as f:
        assert set(f.keys()) == {"W_enc_1", "b_enc_1", "b_dec_1"}
    snapshot_root = built.hf_home / "hub" / ("models--" + TL_MODEL_NAME["qwen3"].replace("/", "--"))
    rev = (snapshot_root / "refs" / "main").read_text()
    linked = snapshot_root / "snapshots" / rev / "config.json"
    assert linked.is_symlink() and json.loads(linked.read_text())["architectures"] == ["Qwen3ForCausalLM"]


def test_builder_jumprelu_skip_llama(work_dir: Path) -> None:
    from safetensors import safe_open

    from tracer.transcoders.loaders import load_transcoders

    spec = ModelSpec(**{**TINY, "arch": "llama", "act": "jumprelu", "skip": True})
    built, reused = ensure_built(spec, work_dir)
    assert not reused and built.tl_model_name is None and not built.hf_home.exists()
    assert json.loads((built.model_dir / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    with safe_open(str(built.transcoder_dir("plt") / "layer_0.safetensors"), "pt") as f:
        assert {"activation_function.threshold", "W_skip"} <= set(f.keys())
    with safe_open(str(built.transcoder_dir("clt") / "W_enc_0.safetensors"), "pt") as f:
        assert "threshold_0" in f.keys()
    assert load_transcoders(built.transcoder_dir("plt"), n_layers=2, d_model=32).has_skip
    assert not load_transcoders(built.transcoder_dir("clt"), n_layers=2, d_model=32).has_skip


def test_builder_shows_its_fits(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """Building a large benchmark model fitted transcoders for minutes in silence: a bar counts the fits
    (PLT layers, then CLT (source, target) pairs); under --quiet (no INFO logs) there is none."""
    with caplog.at_level("INFO", logger="workbench.bench.build"):
        ensure_built(ModelSpec(**{**TINY, "seed": 5}), tmp_path / "a")
    err = capsys.readouterr().err
    assert "fitting benchmark transcoders: 100%" in err and "5/5" in err, err  # 2 PLT layers + 3 CLT pairs
    with caplog.at_level("WARNING", logger="workbench.bench.build"):
        ensure_built(ModelSpec(**{**TINY, "seed": 5}), tmp_path / "b")
    assert "fitting" not in capsys.readouterr().err
    with caplog.at_level("INFO", logger="workbench.bench.build"):  # run_benchmark(verbose=False) says so
        ensure_built(ModelSpec(**{**TINY, "seed": 5}), tmp_path / "c", verbose=False)
    assert "fitting" not in capsys.readouterr().err


def test_builder_cache_key(work_dir: Path, built) -> None:
    again, reused = ensure_built(ModelSpec(**{**TINY, "target_l0": 8}), work_dir)  # 8 == 8.0: same spec
    assert reused and again.root == built.root
    assert ModelSpec(**TINY).key != ModelSpec(**{**TINY, "seed": 1}).key
    assert random_prompt(6, 64, 3) == random_prompt(6, 64, 3)
    assert random_prompt(6, 64, 3)[0] == BOS_ID and all(4 <= t < 64 for t in random_prompt(6, 64, 3)[1:])


@pytest.mark.parametrize("bad", [dict(arch="gpt2"), dict(n_layers=0), dict(d_model=-4), dict(n_kv_heads=3),
                                 dict(target_l0=0.0), dict(target_l0=500.0), dict(act="gelu"), dict(vocab=4)])
def test_model_spec_rejects_bad_input(bad: dict[str, object]) -> None:
    with pytest.raises(WorkbenchError, match="must"):
        ModelSpec(**{**TINY, **bad})


@pytest.mark.parametrize("bad", [dict(n_tokens=()), dict(n_tokens=(1,)), dict(transcoders=("sae",)),
                                 dict(repeats=0), dict(baseline_backends=("jax",)), dict(threads=0),
                                 dict(threads=100_000), dict(baseline_max_n_tokens=0), dict(baseline_timeout=-1.0)])
def test_bench_config_rejects_bad_input(bad: dict[str, object]) -> None:
    with pytest.raises(WorkbenchError, match="must"):
        BenchConfig(**bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- comparison
def _graph_npz(path: Path, keys: list[tuple[int, int, int, int]], A: np.ndarray, *,
               compressed: bool = False) -> Path:
    t, layer, pos, index = (np.array(c) for c in zip(*keys, strict=True))
    arrays = dict(adjacency=A.astype(np.float32), node_type=t.astype(np.int8),
                  node_layer=layer.astype(np.int32), node_pos=pos.astype(np.int32),
                  node_index=index.astype(np.int64), active_features=np.array([[0, 1, 7], [0, 1, 9]]),
                  activation_values=np.array([1.0, 2.0], "f4"), selected_features=np.arange(2),
                  input_tokens=np.array([1, 5]), logit_token_ids=np.array([3]),
                  logit_probabilities=np.array([0.9], "f4"), logit_vectors=np.zeros((1, 4), "f4"),
                  n_layers=np.int64(1), n_pos=np.int64(2))
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


# features (0,1,7), (0,1,9); errors; tokens; one logit
_KEYS = [(0, 0, 1, 7), (0, 0, 1, 9), (1, 0, 0, -1), (1, 0, 1, -1), (2, -1, 0, 1), (2, -1, 1, 5), (3, 1, 1, 3)]


def test_compare_flags_a_mismatched_node_set(tmp_path: Path) -> None:
    A = np.random.default_rng(0).normal(size=(7, 7))
    ours = _graph_npz(tmp_path / "a.npz", _KEYS, A)
    other = list(_KEYS)
    other[1] = (0, 0, 1, 8)  # a different feature
    theirs = _graph_npz(tmp_path / "b.npz", other, A)
    out = compare.compare_graphs(ours, theirs)
    assert out["same_node_set"] is False and out["equal"] is False
    assert out["only_in_ours"] == 1 and out["only_in_ct"] == 1 and out["max_rel_diff"] is None


def test_compare_aligns_a_permuted_graph(tmp_path: Path) -> None:
    A = np.random.default_rng(1).normal(size=(7, 7))
    perm = np.array([1, 0, 2, 3, 4, 6, 5])  # theirs[i] = ours[perm[i]]
    ours = _graph_npz(tmp_path / "a.npz", _KEYS, A)
    theirs = _graph_npz(tmp_path / "b.npz", [_KEYS[i] for i in perm], A[np.ix_(perm, perm)], compressed=True)
    out = compare.compare_graphs(ours, theirs)
    assert out["same_node_set"] and not out["same_node_order"] and out["max_abs_diff"] == 0.0
    assert not out["equal"]  # equality requires circuit-tracer's node order too
    B = A.copy()
    B[6, 0] += 1e-3 * np.abs(A).max()
    out = compare.compare_graphs(ours, _graph_npz(tmp_path / "c.npz", _KEYS, B))
    assert out["same_node_order"] and out["max_rel_diff"] == pytest.approx(1e-3, rel=1e-3)
    blocks = out["block_max_rel_diff"]
    assert blocks["logit<-feature"] > 0 and blocks["feature<-feature"] == 0


def test_compare_prune_with_permutation(tmp_path: Path) -> None:
    perm = np.array([1, 0, 2])  # theirs[i] = ours[perm[i]]
    np.savez(tmp_path / "a.npz", node_mask=np.array([True, False, True]), edge_target=np.array([0, 2]),
             edge_source=np.array([1, 0]), cumulative_scores=np.array([0.5, 0.9, 1.0], "f4"))
    np.savez(tmp_path / "b.npz", node_mask=np.array([False, True, True]), edge_target=np.array([1, 2]),
             edge_source=np.array([0, 1]), cumulative_scores=np.array([0.9, 0.5, 1.0], "f4"))
    out = compare.compare_prune(tmp_path / "a.npz", tmp_path / "b.npz", perm)
    assert out is not None and out["node_mask_equal"] and out["edges_equal"]
    assert out["cumulative_scores_max_abs_diff"] == 0.0
    assert compare.compare_prune(tmp_path / "a.npz", tmp_path / "b.npz", None) is None


def test_npz_member_is_memory_mapped(tmp_path: Path) -> None:
    A = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "u.npz", adjacency=A)
    np.savez_compressed(tmp_path / "c.npz", adjacency=A)
    mapped = compare.npz_array(tmp_path / "u.npz", "adjacency")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, A)
    assert np.array_equal(compare.npz_array(tmp_path / "c.npz", "adjacency"), A)


# ----------------------------------------------------------------------------- report and measuring
def _row(n_tokens: int, n_nodes: int, ours: float, ct: float | None,
         backend: str | None) -> dict[str, object]:
    return {"transcoder": "plt", "n_tokens": n_tokens, "n_nodes": n_nodes, "ours_attribute_s": ours,
            "ours_whole_process_s": ours + 1, "ours_peak_rss_mb": 100.0, "ours_trace_max_rss_mb": 200.0,
            "backend": backend, "ct_attribute_s": ct, "ct_peak_rss_mb": 300.0}


def test_scaling_fits_exponents_and_table_prints_nulls() -> None:
    rows = [_row(16, 100, 1.0, 8.0, "nnsight"), _row(64, 1600, 16.0, 512.0, "nnsight")]
    fit = report.scaling(rows)["plt"]
    ours, ct = fit["ours_attribute"], fit["ct_nnsight"]
    assert isinstance(ours, dict) and isinstance(ct, dict)
    assert ours["exponent_seconds_vs_n_tokens"] == pytest.approx(2.0)
    assert ours["exponent_seconds_vs_n_nodes"] == pytest.approx(1.0)
    assert ct["exponent_seconds_vs_n_tokens"] == pytest.approx(3.0)
    single = report.scaling([_row(16, 100, 1.0, None, None)])["plt"]
    single_ours = single["ours_attribute"]
    assert isinstance(single_ours, dict)
    assert single_ours["exponent_seconds_vs_n_tokens"] is None and "ct_nnsight" not in single
    table = report.format_table([{k: None for k in report.SUMMARY_KEYS}])
    assert len(table.splitlines()) == 2 and "-" in table.splitlines()[1]


def test_analytic_flops_grows_with_prompt_length() -> None:
    dims = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8)
    nodes = dict(n_selected_features=100, n_logits=5)
    short, long = (report.analytic_flops(dims, "plt", nodes, p) for p in (8, 32))
    assert 0 < short < long
    assert report.analytic_flops(dims, "clt", nodes, 8) > short


def test_run_measured_reports_the_childs_peak_rss(tmp_path: Path) -> None:
    touch = "x = bytearray(150 * 2**20); x[::4096] = b'1' * len(x[::4096])"  # resident, not just mapped
    got = run_measured([sys.executable, "-c", touch], log=tmp_path / "child.log")
    assert got.returncode == 0 and got.max_rss_mb is not None and got.max_rss_mb >= 150
    failed = run_measured([sys.executable, "-c", "raise SystemExit(3)"], log=tmp_path / "fail.log")
    assert failed.returncode == 3 and not failed.timed_out
    killed = run_measured([sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "slow.log",
                          timeout=0.5)
    assert killed.timed_out and killed.returncode < 0
    was_reset = reset_peak_rss()
    assert (peak_rss_mb(was_reset) is None) == (not was_reset)


def test_ct_runner_imports_nothing_of_ours() -> None:
    path = Path(compare.__file__).with_name("ct_runner.py")
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"tracer", "analyses", "workbench", "tests"}


# ----------------------------------------------------------------------------- CLI
def test_cli_bad_input_is_one_line_exit_2(bench_cli, tmp_path: Path) -> None:
    status, _, err = bench_cli(*with_flags(TINY_FLAGS, ["--n-layers", "0"]), "--work-dir", str(tmp_path),
                               "--out", str(tmp_path / "o.json"))
    assert status == 2 and "--n-layers must be a positive integer" in err and len(err.strip().splitlines()) == 1
    status, _, err = bench_cli(*TINY_FLAGS, "--n-tokens", "8,x", "--work-dir", str(tmp_path), "--out",
                               str(tmp_path / "o.json"))
    assert status == 2 and "--n-tokens must be" in err
    bare = tmp_path / "bare-python"  # a Python without site-packages: no circuit-tracer, whatever this venv holds
    bare.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S \"$@\"\n")
    bare.chmod(0o755)
    status, _, err = bench_cli(*TINY_FLAGS, "--baseline-python", str(bare), "--work-dir", str(tmp_path),
                               "--out", str(tmp_path / "o.json"))
    assert status == 2 and "must import circuit_tracer" in err, err
    status, _, err = bench_cli(*TINY_FLAGS, "--arch", "llama", "--baseline-backend", "transformerlens",
                               "--work-dir", str(tmp_path), "--out", str(tmp_path / "o.json"))
    assert status == 2 and "must be nnsight" in err
    with pytest.raises(SystemExit) as exc:  # argparse choices
        bench_cli("--arch", "gpt2")
    assert exc.value.code == 2
    assert not (tmp_path / "o.json").exists()


def test_cli_without_baseline_writes_the_report(bench_cli, work_dir: Path, built, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    status, stdout, _ = bench_cli(*TINY_FLAGS, "--transcoder", "clt", "--n-tokens", "6", "--no-baseline",
                            "--gemm-seconds", "0.05", "--threads", "1", "--work-dir", str(work_dir),
                            "--out", str(out))
    assert status == 0 and "report:" in stdout
    rep = json.loads(out.read_text())
    assert rep["schema_version"] == 1 and rep["errors"] == [] and rep["baseline"] is None
    assert {"machine", "gemm_peak", "model", "config", "summary", "scaling", "cases"} <= set(rep)
    assert rep["model"]["reused"] and rep["gemm_peak"]["gflops"] > 0 and rep["config"]["n_threads"] == 1
    assert [(r["transcoder"], r["n_tokens"]) for r in rep["summary"]] == [("clt", 6)]
    for row in rep["summary"]:
        assert set(row) == set(report.SUMMARY_KEYS)
        for key in ("backend", "ct_attribute_s", "speedup_whole_process", "memory_ratio", "graph_equal",
                    "max_rel_diff", "prune_edges_equal", "replacement_delta"):
            assert row[key] is None, key
        n_logits = row["n_nodes"] - row["n_selected_features"] - (2 * 6 + 6)  # errors L*P, tokens P
        assert 1 <= n_logits <= 10
        assert row["ours_attribute_s"] > 0 and row["ours_whole_process_s"] > 0
        assert row["flops"] > 0 and row["flops_source"] == "engine"
        assert row["ours_peak_rss_mb"] is None or row["ours_peak_rss_mb"] > 0
    case = rep["cases"][0]
    assert case["token_ids"][0] == BOS_ID and case["comparison"] == {}
    assert case["ours"]["trace"][0]["max_rss_mb"] > 0
    trace = case["ours"]["trace"][0]
    phases = trace["phases"]  # the whole process, split: they add up to its wall time
    assert sum(phases[k] for k in ("import", "load", "attribute", "save", "exit")) == pytest.approx(trace["wall_s"],
                                                                                                  abs=0.05)
    assert 0 < phases["startup"] < phases["import"] and row["ours_exit_s"] == phases["exit"]
    assert not list(Path(case["dir"]).glob("*/graph.npz"))  # graphs are removed unless --keep-graphs


@pytest.mark.circuit_tracer
def test_against_circuit_tracer(work_dir: Path, built) -> None:
    from workbench.bench.run import run_benchmark

    cfg = BenchConfig(n_tokens=(6,), work_dir=work_dir, gemm_seconds=0.05, threads=1,
                      baseline_backends=("transformerlens", "nnsight"))
    rep = run_benchmark(ModelSpec(**TINY), cfg, verbose=False)
    assert rep["errors"] == [] and len(rep["summary"]) == 4
    for row in rep["summary"]:
        assert row["graph_equal"] and row["prune_node_mask_equal"] and row["prune_edges_equal"], row
        assert abs(row["replacement_delta"]) < 1e-5 and row["speedup_attribute"] is not None
    assert dataclasses.asdict(cfg)["baseline_backends"] == ("transformerlens", "nnsight")


def test_compare_reads_our_native_graph_like_its_npz(tmp_path: Path) -> None:
    from tests.tracer.test_graph_io import random_graph

    graph = random_graph(2, 4, 7, 2, 1)
    graph.save(tmp_path / "g.npz")
    graph.save(tmp_path / "g.safetensors")
    for key in ("adjacency", "node_type", "node_layer", "node_pos", "node_index", "active_features",
                "input_tokens", "logit_probabilities"):
        assert np.array_equal(compare.graph_array(tmp_path / "g.safetensors", key),
                              compare.graph_array(tmp_path / "g.npz", key)), key
    out = compare.compare_graphs(tmp_path / "g.safetensors", tmp_path / "g.npz")
    assert out["equal"] and out["max_abs_diff"] == 0.0

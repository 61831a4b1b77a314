"""The CUDA path (marker ``gpu``; skipped where CUDA is not available): on a GPU the tracer computes the
same graphs, measured columns, prunes and activations as on the CPU, and the analyses' model checks give
the same answers with the model there.

Tolerances (relative to the largest |A|): a float64 graph on the GPU equals the autograd reference on the
GPU to 1e-5, as in tests/tracer/test_engine.py, and the CPU's graph to 1e-5 as well: the Hugging Face models'
RMSNorms compute in float32 even in a float64 model, and float32 reductions round differently on the GPU
(measured on an H200: 2.5e-7); float32 graphs equal the float64 reference to 1e-4; attribution =
intervention as in tests/tracer/test_attribution_vs_intervention.py. ``MW_GPU_TEST_DEVICE=cpu`` runs these
tests' logic on the CPU (a dry run of the test code: each comparison is then of the CPU with itself).
"""

import json
import os

import numpy as np
import pytest
import torch

from tests.helpers_models import random_tokens, tiny_model, tiny_transcoders
from tests.tracer.test_attribution_vs_intervention import TOL32, TOL64, assert_columns_match, sample_sources
from tests.tracer.test_engine import ARCHS, VARIANTS, _pair, assert_same_graph
from tracer.attribution import attribute, reference_attribute
from tracer.config import AttributionConfig
from tracer.graph import Graph
from tracer.interventions import measured_columns
from workbench.paths import world_dir

pytestmark = pytest.mark.gpu
DEVICE = torch.device(os.environ.get("MW_GPU_TEST_DEVICE", "cuda"))
WORLD = world_dir()
CROSS_DEVICE = 1e-5  # float64 graphs, GPU against CPU (see the module docstring)
needs_world = pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")


def _to_device(loaded, tc, dtype: torch.dtype):
    """The same model and transcoders, moved to DEVICE (the model in place)."""
    loaded.model.to(DEVICE)
    return tc.to(DEVICE, dtype)


def _check_on_device(graph: Graph) -> Graph:
    """The graph's tensors live on DEVICE (an in-memory graph stays where it was computed); a CPU copy."""
    assert graph.adjacency.device.type == DEVICE.type, graph.adjacency.device
    return graph.to("cpu")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind,act,skip", VARIANTS)
def test_float64_graph_on_the_gpu_equals_the_cpu_graph_and_the_reference(arch, kind, act, skip):
    loaded, tc, tokens, cfg = _pair(arch, kind, act, skip, 17, torch.float64)
    cpu = attribute(loaded, tc, tokens, cfg)
    ref = reference_attribute(loaded, tc, tokens, cfg)
    tc_dev = _to_device(loaded, tc, torch.float64)
    gpu = _check_on_device(attribute(loaded, tc_dev, tokens, cfg))
    assert gpu.n_selected > 0
    ref_dev = _check_on_device(reference_attribute(loaded, tc_dev, tokens, cfg))  # autograd on the GPU too
    assert_same_graph(gpu, ref_dev, 1e-5)
    assert_same_graph(gpu, cpu, CROSS_DEVICE)
    assert_same_graph(ref_dev, ref, CROSS_DEVICE)


@pytest.mark.parametrize("arch,kind,act,skip", [
    ("qwen3", "clt", "relu", False), ("llama", "plt", "jumprelu", True), ("gemma2", "plt", "topk", False)])
def test_float32_graph_on_the_gpu_equals_the_float64_reference(arch, kind, act, skip):
    loaded, tc, tokens, cfg = _pair(arch, kind, act, skip, 64, torch.float32)
    gpu = _check_on_device(attribute(loaded, _to_device(loaded, tc, torch.float32), tokens, cfg))
    loaded.model.to("cpu").double()
    ref = reference_attribute(loaded, tc.to("cpu", torch.float64), tokens, cfg)
    assert_same_graph(gpu, ref, 1e-4)


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_capped_selection_and_a_streamed_file_on_the_gpu(tmp_path, kind):
    """The greedy feature selection (its buffer on the GPU) picks the CPU's features; a graph streamed to
    its file from the GPU is the in-memory one."""
    loaded, tc, tokens, _ = _pair("gemma2", kind, "relu", False, 17, torch.float64)
    cfg = AttributionConfig(verbose=False, max_feature_nodes=20, batch_size=4, update_interval=2)
    cpu = attribute(loaded, tc, tokens, cfg)
    tc_dev = _to_device(loaded, tc, torch.float64)
    gpu = _check_on_device(attribute(loaded, tc_dev, tokens, cfg))
    assert gpu.n_selected == 20
    assert_same_graph(gpu, cpu, CROSS_DEVICE)
    streamed = attribute(loaded, tc_dev, tokens, cfg, out=tmp_path / "g.safetensors")
    assert streamed.adjacency.device.type == "cpu"
    assert_same_graph(streamed, gpu, 1e-12)
    assert_same_graph(Graph.load(tmp_path / "g.safetensors"), gpu, 1e-12)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind,act,skip", VARIANTS)
def test_columns_equal_frozen_interventions_on_the_gpu_float64(arch, kind, act, skip):
    loaded = tiny_model(arch)
    loaded.model.double()
    tc = _to_device(loaded, tiny_transcoders(loaded, kind=kind, act=act, skip=skip), torch.float64)
    graph = attribute(loaded, tc, random_tokens(8, loaded.d_vocab, seed=7),
                      AttributionConfig(verbose=False, adjacency_dtype="float64"))
    cpu_graph = _check_on_device(graph)
    nodes = sample_sources(cpu_graph)
    measured = measured_columns(loaded, tc, graph, nodes)
    assert measured.device.type == DEVICE.type
    assert_columns_match(cpu_graph, nodes, measured.cpu(), *TOL64, f"{arch} {kind} {act} skip={skip} on {DEVICE}")


@pytest.mark.parametrize("arch,kind,act,skip", [
    ("qwen3", "plt", "relu", False), ("llama", "clt", "jumprelu", False), ("gemma2", "plt", "jumprelu", True)])
def test_columns_equal_frozen_interventions_on_the_gpu_float32(arch, kind, act, skip):
    loaded = tiny_model(arch)
    tc = _to_device(loaded, tiny_transcoders(loaded, kind=kind, act=act, skip=skip), torch.float32)
    graph = attribute(loaded, tc, random_tokens(8, loaded.d_vocab, seed=7), AttributionConfig(verbose=False))
    cpu_graph = _check_on_device(graph)
    nodes = sample_sources(cpu_graph, seed=1)
    measured = measured_columns(loaded, tc, graph, nodes)
    assert_columns_match(cpu_graph, nodes, measured.cpu(), *TOL32, f"{arch} {kind} {act} float32 on {DEVICE}")


def test_pruning_and_scores_of_a_gpu_graph_equal_the_cpu_graphs():
    from tracer.graph.prune import prune_graph
    from tracer.graph.scores import graph_scores

    loaded, tc, tokens, cfg = _pair("qwen3", "plt", "jumprelu", True, 17, torch.float64)
    cpu = attribute(loaded, tc, tokens, cfg)
    gpu = attribute(loaded, _to_device(loaded, tc, torch.float64), tokens, cfg)
    a, b = prune_graph(cpu), prune_graph(gpu)
    assert torch.equal(a.node_mask, b.node_mask.cpu())
    assert torch.equal(a.edge_index, b.edge_index.cpu())
    torch.testing.assert_close(a.cumulative_scores, b.cumulative_scores.cpu(), rtol=1e-6, atol=1e-7)
    sa, sb = graph_scores(cpu), graph_scores(gpu)
    assert sa.replacement == pytest.approx(sb.replacement, rel=1e-6)
    assert sa.completeness == pytest.approx(sb.completeness, rel=1e-6)


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_activations_collected_on_the_gpu_equal_the_cpus(tmp_path, kind):
    from tracer.activations import ActivationConfig, collect_activations

    loaded = tiny_model("llama")
    tc = tiny_transcoders(loaded, kind=kind)
    words = ["the cat is red", "a dog and a bird fish", "one", "north south east west sun moon star rain"]
    cfg = ActivationConfig(residual_layers=(0, 2), mlp_input_layers=(1,), positions="all", batch_size=3)
    cpu = collect_activations(loaded, tc, words, tmp_path / "cpu", cfg)
    gpu = collect_activations(loaded, _to_device(loaded, tc, torch.float32), words, tmp_path / "gpu", cfg)
    for layer in range(loaded.n_layers):
        a, b = cpu.layer_matrix(layer), gpu.layer_matrix(layer)
        np.testing.assert_allclose(b.toarray(), a.toarray(), rtol=1e-4, atol=1e-5)
    for where, layer in (("residual", 0), ("residual", 2), ("input", 1)):
        np.testing.assert_allclose(gpu.vectors(where, layer)[1], cpu.vectors(where, layer)[1], atol=1e-5)


@needs_world
def test_the_worlds_supernode_check_and_day_steering_on_the_gpu(tmp_path):
    """The analyses' model checks with the model on the GPU: the same supernode ablation margins and the same
    steered answers as on the CPU."""
    from analyses.manifolds.causal import steer_prompt
    from analyses.manifolds.fit import ManifoldFit
    from analyses.supernodes.circuit import ReadableCircuit
    from analyses.supernodes.config import InterventionConfig
    from analyses.supernodes.interventions import check_supernodes
    from tracer.models import load_model, tokenize
    from tracer.transcoders.loaders import load_transcoders
    from workbench.manifold_points import collect_points
    from workbench.manifold_world import world_inputs

    loaded = load_model(WORLD / "model")
    tcs = load_transcoders(WORLD / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    tokens = tokenize(loaded, "The capital of the region containing Kolt is")
    graph = attribute(loaded, tcs, tokens, AttributionConfig(verbose=False))
    rc = ReadableCircuit().fit(graph, transcoders=tcs)
    groups = [rc.clustering_.groups_[k] for k in rc.chosen_]
    icfg = InterventionConfig(n_random=3, modes=("frozen",))
    cpu_check = check_supernodes(loaded, tcs, graph, groups, config=icfg)

    inputs = world_inputs(loaded, WORLD, "day", "value", loaded.n_layers)
    pts = collect_points(loaded, tcs, inputs.records, tmp_path / "acts", residual_layers=(0,), positions="field")
    positions = np.array([int(r.meta["position"]) for r in inputs.records])
    X = pts.residual(0, positions)  # (n, d_model)
    fit = ManifoldFit(period=7).fit(X[~inputs.heldout], inputs.values[~inputs.heldout], layer=0,
                                    position="value").result_
    i = next(k for k, r in enumerate(inputs.records) if r.prompt == "Two days after Friday is")
    day_tokens = list(pts.records[i]["tokens"])
    cpu_steer = steer_prompt(loaded, tcs, fit, day_tokens, int(positions[i]), X[i])

    loaded = load_model(WORLD / "model", device=DEVICE)
    tcs = tcs.to(DEVICE, loaded.dtype)
    gpu_graph = attribute(loaded, tcs, tokens, AttributionConfig(verbose=False))
    assert_same_graph(_check_on_device(gpu_graph), graph, 1e-4)
    gpu_check = check_supernodes(loaded, tcs, gpu_graph, groups, config=icfg)
    np.testing.assert_allclose(gpu_check.measured_margin["frozen"], cpu_check.measured_margin["frozen"],
                               rtol=1e-3, atol=1e-3)
    assert gpu_check.clean_margin == pytest.approx(cpu_check.clean_margin, rel=1e-4)
    # the estimators take a graph traced on the GPU (and its prune result) and work on a CPU copy
    from tracer.graph.prune import prune_graph

    pruned = prune_graph(gpu_graph)  # on the GPU; the same masks, copied, for the CPU copy
    on_gpu = ReadableCircuit().fit(gpu_graph, prune_result=pruned, transcoders=tcs)
    copied = ReadableCircuit().fit(gpu_graph.to("cpu"), prune_result=type(pruned)(*(t.cpu() for t in pruned)),
                                   transcoders=tcs)
    assert on_gpu.chosen_.tolist() == copied.chosen_.tolist()
    assert [g.tolist() for g in on_gpu.clustering_.groups_] == [g.tolist() for g in copied.clustering_.groups_]
    gpu_steer = steer_prompt(loaded, tcs, fit, day_tokens, int(positions[i]), X[i])
    assert gpu_steer.top_token.tolist() == cpu_steer.top_token.tolist()
    np.testing.assert_allclose(gpu_steer.top_prob, cpu_steer.top_prob, atol=1e-4)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from workbench.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@needs_world
def test_the_cli_on_the_gpu_writes_what_it_writes_on_the_cpu(tmp_path, capsys):
    """``--device`` of trace, intervene and activations: the same graph, distribution, continuation and shards as
    on the CPU; a GPU that is not there is one line and exit 2."""
    from tracer.activations import ActivationStore

    model, plt = str(WORLD / "model"), str(WORLD / "plt")
    base = ["--model", model, "--transcoders", plt, "--prompt", "Two days after Friday is", "--quiet"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Two days after Friday is\nThe capital of the region containing Kolt is\n")
    devices = ("cpu", str(DEVICE))
    for dev in devices:
        assert _cli(capsys, "trace", *base, "--device", dev, "--out", str(tmp_path / f"{dev}.safetensors"))[0] == 0
        code = _cli(capsys, "activations", "--model", model, "--transcoders", plt, "--prompts", str(prompts),
                    "--out", str(tmp_path / f"acts-{dev}"), "--device", dev, "--quiet")[0]
        assert code == 0
    cpu, gpu = (Graph.load(tmp_path / f"{dev}.safetensors") for dev in devices)
    assert_same_graph(gpu, cpu, 1e-4)
    layer, pos, feat = cpu.active_features[cpu.selected_features[0]].tolist()  # the most influential feature
    for dev in devices:
        code = _cli(capsys, "intervene", *base, "--device", dev, f"--set={layer}:{pos}:{feat}=0", "--generate", "3",
                    "--out", str(tmp_path / f"{dev}.json"))[0]
        assert code == 0
    a, b = (json.loads((tmp_path / f"{dev}.json").read_text()) for dev in devices)
    assert [c["token_id"] for c in a["top_changes"]] == [c["token_id"] for c in b["top_changes"]]
    np.testing.assert_allclose([c["intervened_prob"] for c in b["top_changes"]],
                               [c["intervened_prob"] for c in a["top_changes"]], atol=1e-4)
    assert a["generation"] == b["generation"]
    sa, sb = (ActivationStore(tmp_path / f"acts-{dev}") for dev in devices)
    for layer in sa.feature_layers:
        np.testing.assert_allclose(sb.layer_matrix(layer).toarray(), sa.layer_matrix(layer).toarray(),
                                   rtol=1e-3, atol=1e-4)
    if DEVICE.type == "cuda":
        bad = f"cuda:{torch.cuda.device_count()}"
        code, out, err = _cli(capsys, "trace", *base, "--device", bad, "--out", str(tmp_path / "bad.safetensors"))
        assert code == 2 and "device must be" in err and bad in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad.safetensors").exists()


def test_memory_guard_reads_the_gpus_free_memory():
    from tracer.memory import available_bytes

    free = available_bytes(DEVICE)
    assert free is not None and free > 0
    if DEVICE.type == "cuda":
        assert free <= torch.cuda.get_device_properties(DEVICE).total_memory



_RUN_KEYS = {"run", "argv", "seconds", "timestamps", "device"}


def _assert_close(a: object, b: object, where: str = "", paths: tuple[str, str] = ("", "")) -> None:
    """Two JSON reports agree: the same keys, strings and flags; numbers to 1e-3 (absolute and relative); what
    says how the run went (its command line, seconds) left out; ``paths``: b's output folder and a's, the same in
    strings (the files each run names)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(set(a) - _RUN_KEYS) == sorted(set(b) - _RUN_KEYS), where
        for key in set(a) - _RUN_KEYS:
            _assert_close(a[key], b[key], f"{where}.{key}", paths)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]", paths)
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert a == pytest.approx(b, rel=1e-3, abs=1e-3, nan_ok=True), f"{where}: {a} vs {b}"
    elif isinstance(a, str) and isinstance(b, str) and paths[0]:
        assert a.replace(*paths) == b.replace(*paths), f"{where}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@needs_world
def test_the_analysis_commands_on_the_gpu_write_what_they_write_on_the_cpu(tmp_path, capsys):
    """``--device`` of cluster (with its ablations), families (with a prompt sample), manifold fit (with its causal
    check), steer and discover: the same JSON as on the CPU."""
    model, plt = str(WORLD / "model"), str(WORLD / "plt")
    graph = tmp_path / "graph.safetensors"
    assert _cli(capsys, "trace", "--model", model, "--transcoders", plt, "--prompt",
                "The capital of the region containing Kolt is", "--out", str(graph), "--quiet")[0] == 0
    prompts = tmp_path / "prompts.txt"
    records = json.loads((WORLD / "manifest.json").read_text())["prompt_sets"]
    prompts.write_text("".join(r["prompt"] + "\n" for name in ("day_arith", "two_hop") for r in records[name][:40]))
    for side, dev in (("host", "cpu"), ("device", str(DEVICE))):
        out = tmp_path / side
        out.mkdir()
        commands = [
            ["cluster", str(graph), "--model", model, "--transcoders", plt, "--no-labels", "--n-random", "3",
             "--out", str(out / "supernodes.json")],
            ["families", "--transcoders", plt, "--model", model, "--prompts", str(prompts), "--layer", "1",
             "--out", str(out / "families.json")],
            ["manifold", "fit", "--model", model, "--transcoders", plt, "--world", str(WORLD), "--family", "month",
             "--layer", "3", "--causal-prompts", "6", "--causal-targets", "1", "--out", str(out / "fit")],
            ["manifold", "steer", "--fit", str(out / "fit" / "manifold.json"), "--world", str(WORLD), "--family",
             "month", "--out", str(out / "steer.json")],
            ["manifold", "discover", "--model", model, "--transcoders", plt, "--prompts", str(prompts),
             "--feature-layers", "1", "--out", str(out / "disc")],
        ]
        for argv in commands:
            code, _, err = _cli(capsys, *argv, "--device", dev, "--quiet")
            assert code == 0, (argv[:2], err)
    for name in ("supernodes.json", "families.json", "fit/manifold.json", "steer.json", "disc/discovery.json"):
        a, b = (json.loads((tmp_path / side / name).read_text()) for side in ("host", "device"))
        _assert_close(b, a, name, (str(tmp_path / "device"), str(tmp_path / "host")))

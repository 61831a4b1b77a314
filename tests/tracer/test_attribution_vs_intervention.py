"""Attribution = intervention (STYLE C7, kind 1): every sampled adjacency column is a measured effect.

For a source node s (feature, error or token) the column ``A[:, s]`` must equal the change of
every target's reading when s's output vector is added once more to the *real* model with
attention patterns, every norm's 1/rms and every MLP output frozen (skip terms live), i.e.
``feature_intervention(..., constrained_layers="all")``. Feature targets read pre-activations,
logit targets ``final_hidden[-1] @ (W_U[tok] - mean W_U)``.

float64 models (float64 adjacency): the match is to float64 round-off -- measured <= 4e-15 * max|A|;
asserted: atol 1e-12 * max|A| + rtol 1e-10. float32 models: measured <= 1e-6 * max|A|; asserted
atol 1e-5 * max|A| + rtol 1e-3. The last tests show the check is sensitive: without each freeze
the columns do not match.
"""

from typing import Literal

import pytest
import torch

from tests.helpers_models import random_tokens, tiny_model, tiny_transcoders
from tracer.attribution import attribute
from tracer.config import AttributionConfig
from tracer.graph import Graph
from tracer.interventions import feature_intervention, measured_columns, node_perturbation, prepare, readings
from tracer.transcoders.base import Activation, Kind

ARCHS = ["qwen3", "llama", "gemma2"]
VARIANTS = [
    ("plt", "relu", False),
    ("plt", "jumprelu", True),
    ("plt", "topk", False),
    ("clt", "relu", False),
    ("clt", "jumprelu", False),
]
N_POS = 8


TOL64 = (1e-12, 1e-10)  # (atol / max|A|, rtol)
TOL32 = (1e-5, 1e-3)


def _setup(arch: str, kind: Kind, act: Activation, skip: bool, dtype: torch.dtype, **tc_kw):
    loaded = tiny_model(arch)
    tc = tiny_transcoders(loaded, kind=kind, act=act, skip=skip, **tc_kw)
    if dtype == torch.float64:
        loaded.model.double()
        tc = tc.to("cpu", torch.float64)
    tokens = random_tokens(N_POS, loaded.d_vocab, seed=7)
    adj: Literal["float64", "float32"] = "float64" if dtype == torch.float64 else "float32"
    graph = attribute(loaded, tc, tokens, AttributionConfig(verbose=False, n_workers=1, adjacency_dtype=adj))
    assert graph.adjacency.dtype == dtype
    return loaded, tc, graph


def sample_sources(graph: Graph, n_features: int = 3, seed: int = 0) -> list[int]:
    """Random features (with a non-zero column), two errors (one at the last layer) and two tokens."""
    g = torch.Generator().manual_seed(seed)
    A = graph.adjacency
    live = torch.nonzero(A[:, :graph.n_selected].abs().sum(0) > 0).flatten()
    feats = live[torch.randperm(live.numel(), generator=g)[:n_features]].tolist()
    L, P = graph.n_layers, graph.n_pos
    errors = [graph.error_start + 0 * P + 2, graph.error_start + (L - 1) * P + P - 1]
    tokens = [graph.token_start, graph.token_start + P - 2]
    return feats + errors + tokens


def assert_columns_match(graph: Graph, nodes: list[int], measured: torch.Tensor, atol_rel: float,
                         rtol: float, label: str) -> float:
    A = graph.adjacency.double()[:, nodes]
    M = measured.double()
    scale = float(graph.adjacency.abs().max())
    err = (A - M).abs()
    bound = atol_rel * scale + rtol * A.abs()
    worst = int(torch.argmax(err - bound))
    r, c = divmod(worst, len(nodes))
    assert (err <= bound).all(), (
        f"{label}: column of node {nodes[c]} differs at row {r}: A={float(A[r, c]):.6g} vs measured "
        f"{float(M[r, c]):.6g} (max |diff| {float(err.max()):.3e}, max |A| {scale:.3e})")
    assert A.abs().sum() > 0, "sampled columns are all zero: the check would be vacuous"
    return float(err.max()) / scale


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind,act,skip", VARIANTS)
def test_columns_equal_frozen_interventions_float64(arch, kind, act, skip):
    loaded, tc, graph = _setup(arch, kind, act, skip, torch.float64)
    nodes = sample_sources(graph)
    measured = measured_columns(loaded, tc, graph, nodes)
    assert_columns_match(graph, nodes, measured, *TOL64, f"{arch} {kind} {act} skip={skip} float64")


@pytest.mark.parametrize("arch,kind,act,skip", [
    ("qwen3", "plt", "relu", False), ("llama", "clt", "jumprelu", False), ("gemma2", "plt", "jumprelu", True),
])
def test_columns_equal_frozen_interventions_float32(arch, kind, act, skip):
    loaded, tc, graph = _setup(arch, kind, act, skip, torch.float32)
    nodes = sample_sources(graph, seed=1)
    measured = measured_columns(loaded, tc, graph, nodes)
    assert_columns_match(graph, nodes, measured, *TOL32, f"{arch} {kind} {act} float32")


@pytest.mark.parametrize("arch,in_hook,out_hook", [
    ("gemma2", "mlp.hook_in", "mlp.hook_out"),  # post-MLP norm after the output location
    ("llama", "ln2.hook_normalized", "mlp.hook_out"),
])
@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_columns_match_for_other_hook_locations(arch, in_hook, out_hook, kind):
    loaded, tc, graph = _setup(arch, kind, "relu", kind == "plt", torch.float64,
                               input_hook=in_hook, output_hook=out_hook)
    nodes = sample_sources(graph, n_features=2, seed=2)
    measured = measured_columns(loaded, tc, graph, nodes)
    assert_columns_match(graph, nodes, measured, *TOL64, f"{arch} {in_hook}->{out_hook} {kind}")


def _columns(loaded, tc, graph, nodes, **kw) -> torch.Tensor:
    clean = prepare(loaded, tc, graph.input_tokens)
    run = lambda items: readings(loaded, graph, feature_intervention(  # noqa: E731
        loaded, tc, clean.tokens, items, apply_activation_function=False, clean=clean, **kw))
    base = run([])
    return torch.stack([run([node_perturbation(graph, n, clean)]) - base for n in nodes], 1)


@pytest.mark.parametrize("kw", [
    {"freeze_attention": False, "constrained_layers": "all"},  # attention patterns move
    {"freeze_attention": True, "constrained_layers": None},  # MLPs and norms live
    {"freeze_attention": True, "constrained_layers": [0, 1]},  # last MLP live, norms live
])
def test_check_is_sensitive_to_each_freeze(kw):
    loaded, tc, graph = _setup("gemma2", "clt", "relu", False, torch.float64)
    nodes = [graph.token_start + 2, graph.error_start + 3]  # early sources: paths through every layer
    exact = _columns(loaded, tc, graph, nodes, freeze_attention=True, constrained_layers="all")
    assert_columns_match(graph, nodes, exact, *TOL64, "control")
    loose = _columns(loaded, tc, graph, nodes, **kw)
    with pytest.raises(AssertionError):
        assert_columns_match(graph, nodes, loose, *TOL32, f"unfrozen {kw}")

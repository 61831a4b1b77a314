"""Fast engine == autograd reference, across architectures, transcoder kinds and prompt lengths.

The reference (tracer/attribution/reference.py) rebuilds the linearised replacement model with plain
per-head attention, dense decoders and autograd; the fast engine (tracer/sweep.py) uses an
explicit, folded, position-major backward. Tolerances: 1e-5 relative in float64, 1e-4 in float32
(relative to the largest |A|, as circuit-tracer comparisons are reported).
"""

import pytest
import torch

from tests.helpers_models import tiny_model, tiny_transcoders
from tracer.attribution import attribute, reference_attribute
from tracer.config import AttributionConfig
from tracer.transcoders.base import Activation, Kind

ARCHS = ["qwen3", "llama", "gemma2"]
VARIANTS = [
    ("plt", "relu", False),
    ("plt", "jumprelu", True),
    ("plt", "topk", False),
    ("clt", "relu", False),
    ("clt", "jumprelu", False),
]


def _tokens(n: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.tensor([1]), torch.randint(4, vocab, (n - 1,), generator=g)])


def assert_same_graph(fast, ref, rtol: float) -> None:
    assert torch.equal(fast.selected_features, ref.selected_features)
    assert torch.equal(fast.active_features, ref.active_features)
    assert torch.equal(fast.logit_token_ids, ref.logit_token_ids)
    assert fast.adjacency.shape == ref.adjacency.shape
    a, b = fast.adjacency.double(), ref.adjacency.double()
    scale = b.abs().max()
    diff = (a - b).abs().max()
    assert diff <= rtol * scale, f"max |A_fast - A_ref| = {diff:.3e} > {rtol:g} * {scale:.3e}"


def _pair(arch: str, kind: Kind, act: Activation, skip: bool, n: int, dtype: torch.dtype, **cfg_kw):
    loaded = tiny_model(arch)
    if dtype == torch.float64:
        loaded.model.double()
    tc = tiny_transcoders(loaded, kind=kind, act=act, skip=skip).to("cpu", dtype)
    tokens = _tokens(n, loaded.d_vocab)
    cfg = AttributionConfig(verbose=False, **cfg_kw)
    return loaded, tc, tokens, cfg


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind,act,skip", VARIANTS)
@pytest.mark.parametrize("n", [2, 17])
def test_fast_equals_reference_float64(arch, kind, act, skip, n):
    loaded, tc, tokens, cfg = _pair(arch, kind, act, skip, n, torch.float64)
    fast = attribute(loaded, tc, tokens, cfg)
    ref = reference_attribute(loaded, tc, tokens, cfg)
    assert fast.n_selected > 0 or n == 2
    assert_same_graph(fast, ref, 1e-5)


@pytest.mark.parametrize("arch,kind,act,skip", [
    ("qwen3", "clt", "relu", False), ("llama", "plt", "jumprelu", True), ("gemma2", "plt", "topk", False)])
def test_fast_equals_reference_float32_64_tokens(arch, kind, act, skip):
    loaded, tc, tokens, cfg = _pair(arch, kind, act, skip, 64, torch.float32)
    fast = attribute(loaded, tc, tokens, cfg)
    loaded.model.double()
    ref = reference_attribute(loaded, tc.to("cpu", torch.float64), tokens, cfg)
    assert_same_graph(fast, ref, 1e-4)


@pytest.mark.parametrize("arch", ["qwen3", "gemma2"])
@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_max_feature_nodes_matches_reference_selection(arch, kind):
    loaded, tc, tokens, _ = _pair(arch, kind, "relu", False, 17, torch.float64)
    cfg = AttributionConfig(verbose=False, max_feature_nodes=20, batch_size=4, update_interval=2)
    fast = attribute(loaded, tc, tokens, cfg)
    ref = reference_attribute(loaded, tc, tokens, cfg)
    assert fast.n_selected == 20
    assert_same_graph(fast, ref, 1e-5)


def test_batching_and_workers_do_not_change_the_graph():
    loaded, tc, tokens, _ = _pair("qwen3", "clt", "relu", False, 17, torch.float64)
    base = attribute(loaded, tc, tokens, AttributionConfig(verbose=False, n_workers=1))
    other = attribute(loaded, tc, tokens, AttributionConfig(verbose=False, n_workers=2, sweep_rows=3))
    assert_same_graph(other, base, 1e-12)


def test_bos_features_are_zeroed_and_rows_of_errors_and_tokens_are_empty():
    loaded, tc, tokens, cfg = _pair("llama", "plt", "relu", False, 9, torch.float64)
    g = attribute(loaded, tc, tokens, cfg)
    assert (g.active_features[:, 1] > 0).all()
    assert g.adjacency[g.error_start:g.logit_start].abs().sum() == 0
    # nothing reads from logits
    assert g.adjacency[:, g.logit_start:].abs().sum() == 0
    # causality: a feature never receives from a later position
    feats = g.active_features[g.selected_features]
    later = feats[None, :, 1] > feats[:, None, 1]  # (target, source)
    assert g.adjacency[:g.n_selected, :g.n_selected][later].abs().max() == 0


def test_logit_selection_matches_probability_rule():
    loaded, tc, tokens, _ = _pair("qwen3", "plt", "relu", False, 9, torch.float64)
    g = attribute(loaded, tc, tokens, AttributionConfig(verbose=False, max_n_logits=5, desired_logit_prob=0.3))
    probs = torch.softmax(loaded.model(tokens[None]).logits[0, -1].double(), -1)
    top = probs.topk(5)
    k = min(int(torch.searchsorted(top.values.cumsum(0), 0.3)) + 1, 5)
    assert g.logit_token_ids.tolist() == top.indices[:k].tolist()
    assert torch.allclose(g.logit_probabilities.double(), top.values[:k], atol=1e-6)


def test_graphs_record_the_model_dtype_and_class_and_the_reference_its_time() -> None:
    """Provenance: a bfloat16 graph differs from a float32 one; the file must say which it is."""
    loaded, tc, tokens, cfg = _pair("qwen3", "plt", "relu", False, 6, torch.float32)
    ref = reference_attribute(loaded, tc, tokens, cfg)
    for g in (attribute(loaded, tc, tokens, cfg), ref):
        assert g.extra["model_dtype"] == "float32" and g.extra["model_class"] == type(loaded.model).__name__
    assert float(ref.extra["attribution_seconds"]) > 0  # type: ignore[arg-type]

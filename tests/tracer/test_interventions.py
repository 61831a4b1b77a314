"""feature_intervention / feature_intervention_generate on tiny real models."""

import re

import pytest
import torch

from tests.helpers_models import random_tokens, tiny_model, tiny_transcoders
from tracer.errors import WorkbenchError
from tracer.interventions import (
    Intervention,
    add_to_embedding,
    add_to_output_location,
    feature_intervention,
    feature_intervention_generate,
    prepare,
)
from tracer.transcoders.base import Activation, Kind

N_POS = 9


def _setup(arch: str = "llama", kind: Kind = "plt", act: Activation = "relu", skip: bool = False):
    loaded = tiny_model(arch)
    tc = tiny_transcoders(loaded, kind=kind, act=act, skip=skip)
    tokens = random_tokens(N_POS, loaded.d_vocab, seed=3)
    return loaded, tc, tokens, prepare(loaded, tc, tokens)


def _active(clean, layer: int, pos: int) -> tuple[int, float]:
    """The most active feature at (layer, pos) and its activation."""
    acts = clean.activations(layer)[pos]
    f = int(acts.argmax())
    assert acts[f] > 0
    return f, float(acts[f])


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, msg: str = "") -> None:
    diff = float((a.double() - b.double()).abs().max())
    assert diff <= atol, f"{msg} max |diff| = {diff:.3e} > {atol:g}"


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ----------------------------------------------------------------------------- no-op interventions
@pytest.mark.parametrize("arch", ["qwen3", "llama", "gemma2"])
@pytest.mark.parametrize("constrained", [None, "all"])
def test_empty_intervention_reproduces_the_clean_run(arch, constrained):
    loaded, tc, tokens, clean = _setup(arch)
    res = feature_intervention(loaded, tc, tokens, [], constrained_layers=constrained, clean=clean)
    _close(res.logits, clean.cache.logits, 2e-5, "frozen replay")
    free = feature_intervention(loaded, tc, tokens, [], freeze_attention=False, clean=clean)
    assert torch.equal(free.logits, clean.cache.logits)
    acts = torch.stack([clean.activations(i) for i in range(loaded.n_layers)])
    assert res.activations is not None
    _close(res.activations, acts, 2e-5, "activations")
    assert res.activations[:, 0].abs().sum() == 0  # BOS reads as 0


@pytest.mark.parametrize("kind,act", [("plt", "relu"), ("clt", "jumprelu"), ("plt", "topk")])
@pytest.mark.parametrize("constrained", [None, "all", [1]])
def test_identity_interventions_change_nothing(kind, act, constrained):
    loaded, tc, tokens, clean = _setup("qwen3", kind, act)
    f, a = _active(clean, 1, 4)
    for items in ([(1, 4, f, a)], [Intervention(layer=1, position=4, feature=f, value=1.0, mode="scale")],
                  [Intervention(layer=1, position=slice(2, None), feature=f, value=0.0, mode="add")]):
        res = feature_intervention(loaded, tc, tokens, items, constrained_layers=constrained, clean=clean)
        base = feature_intervention(loaded, tc, tokens, [], constrained_layers=constrained, clean=clean)
        _close(res.logits, base.logits, 1e-6, f"{items}")


def test_intervention_changes_the_logits_only_from_its_position_on():
    loaded, tc, tokens, clean = _setup()
    f, a = _active(clean, 0, 5)
    res = feature_intervention(loaded, tc, tokens, [(0, 5, f, 10 * a)], clean=clean)
    assert torch.equal(res.logits[:5], clean.cache.logits[:5])  # causal
    assert (res.logits[5:] - clean.cache.logits[5:]).abs().max() > 1e-3


# ----------------------------------------------------------------------------- mechanism
@pytest.mark.parametrize("arch,kind", [("llama", "plt"), ("gemma2", "plt"), ("qwen3", "clt"),
                                       ("gemma2", "clt")])
@pytest.mark.parametrize("freeze", [True, False])
def test_set_to_zero_equals_subtracting_the_decoder_contribution(arch, kind, freeze):
    loaded, tc, tokens, clean = _setup(arch, kind)
    f, a = _active(clean, 0, 6)
    res = feature_intervention(loaded, tc, tokens, [(0, 6, f, 0.0)], freeze_attention=freeze, clean=clean)
    W = clean.transcoders.layers[0].W_dec[f]  # PLT (d,), CLT (n_layers, d)
    W = W[None] if W.dim() == 1 else W
    subtract = [add_to_output_location(k, 6, -a * W[k]) for k in range(W.shape[0])]
    ref = feature_intervention(loaded, tc, tokens, subtract, freeze_attention=freeze, clean=clean)
    _close(res.logits, ref.logits, 1e-5, "set 0 vs -a*W_dec")
    assert (res.logits - clean.cache.logits).abs().max() > 1e-4


def test_modes_compose_in_order_and_match_their_definitions():
    loaded, tc, tokens, clean = _setup()
    f, a = _active(clean, 1, 3)
    run = lambda items: feature_intervention(loaded, tc, tokens, items, clean=clean).logits  # noqa: E731
    iv = lambda v, m: Intervention(layer=1, position=3, feature=f, value=v, mode=m)  # noqa: E731
    _close(run([iv(3.0, "scale")]), run([iv(3 * a, "set")]), 1e-6, "scale")
    _close(run([iv(0.5, "add")]), run([iv(a + 0.5, "set")]), 1e-6, "add")
    _close(run([iv(2.0, "set"), iv(3.0, "scale"), iv(1.0, "add")]), run([iv(7.0, "set")]), 1e-6, "compose")


def test_frozen_and_free_attention_differ_for_a_multi_layer_intervention():
    loaded, tc, tokens, clean = _setup("gemma2")
    f, a = _active(clean, 0, 2)
    items = [(0, 2, f, 20 * a)]
    frozen = feature_intervention(loaded, tc, tokens, items, freeze_attention=True, clean=clean)
    free = feature_intervention(loaded, tc, tokens, items, freeze_attention=False, clean=clean)
    assert torch.equal(frozen.logits[:2], free.logits[:2])
    assert (frozen.logits[-1] - free.logits[-1]).abs().max() > 1e-3


def test_constrained_layers_stop_propagation_through_mlps():
    loaded, tc, tokens, clean = _setup("llama", "plt", "relu", skip=True)
    f, a = _active(clean, 0, 4)
    items = [(0, 4, f, 10 * a)]
    free = feature_intervention(loaded, tc, tokens, items, constrained_layers=None, clean=clean)
    direct = feature_intervention(loaded, tc, tokens, items, constrained_layers="all", clean=clean)
    assert (free.logits[-1] - direct.logits[-1]).abs().max() > 1e-3
    # layer 1 constrained: what its MLP adds to the residual is the clean output + (live - clean) skip
    seen: dict[str, torch.Tensor] = {}
    blocks = loaded.blocks
    grab = lambda key: (lambda m, args: seen.__setitem__(key, args[0][0].clone()))  # noqa: E731
    handles = [blocks[1].mlp_norm.register_forward_pre_hook(grab("mid")),
               blocks[1].mlp.register_forward_pre_hook(grab("x_in")),
               blocks[2].attn_norm.register_forward_pre_hook(grab("next"))]
    try:
        feature_intervention(loaded, tc, tokens, items, constrained_layers=[0, 1], clean=clean)
    finally:
        for h in handles:
            h.remove()
    skip_T = clean.transcoders.layers[1].skip_T
    expect = clean.cache.mlp_output[1] + (seen["x_in"] - clean.cache.mlp_input[1]) @ skip_T
    _close(seen["next"] - seen["mid"], expect, 1e-5, "constrained MLP output")
    assert (seen["x_in"][4:] - clean.cache.mlp_input[1, 4:]).abs().max() > 1e-3  # the input did move
    _close(seen["x_in"][:4], clean.cache.mlp_input[1, :4], 1e-6, "causal")


def test_intervention_outside_the_constrained_layers_warns_and_does_nothing():
    loaded, tc, tokens, clean = _setup()
    f, a = _active(clean, 0, 4)
    base = feature_intervention(loaded, tc, tokens, [], constrained_layers=[1, 2], clean=clean)
    with pytest.warns(UserWarning, match="writes to no layer in constrained_layers"):
        res = feature_intervention(loaded, tc, tokens, [(0, 4, f, 10 * a)], constrained_layers=[1, 2],
                                   clean=clean)
    assert torch.equal(res.logits, base.logits)


def test_vector_additions_at_embedding_and_output_locations():
    loaded, tc, tokens, clean = _setup("gemma2")
    v = torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(0))
    kw = {"constrained_layers": "all", "clean": clean}
    emb = feature_intervention(loaded, tc, tokens, [add_to_embedding(3, v)], **kw)
    out = feature_intervention(loaded, tc, tokens, [add_to_output_location(0, 3, v)], **kw)
    assert emb.activations is not None and out.activations is not None
    # layer-0 features at position 3 read the embedding change, not the output-location one
    assert (emb.activations[0, 3] - out.activations[0, 3]).abs().max() > 1e-4
    _close(out.activations[0], clean.activations(0), 1e-5, "layer 0 reads before its output")


# ----------------------------------------------------------------------------- activations and hooks
def test_activation_options():
    loaded, tc, tokens, clean = _setup("qwen3", "clt", "jumprelu")
    f, a = _active(clean, 0, 2)
    items = [(0, 2, f, 5 * a)]
    dense = feature_intervention(loaded, tc, tokens, items, clean=clean)
    sparse = feature_intervention(loaded, tc, tokens, items, sparse=True, clean=clean)
    pre = feature_intervention(loaded, tc, tokens, items, apply_activation_function=False, clean=clean)
    none = feature_intervention(loaded, tc, tokens, items, return_activations=False, clean=clean)
    assert dense.activations is not None and sparse.activations is not None and pre.activations is not None
    assert sparse.activations.is_sparse and torch.equal(sparse.activations.to_dense(), dense.activations)
    assert dense.activations.shape == (loaded.n_layers, N_POS, tc.d_transcoder)
    for layer in range(loaded.n_layers):
        acts = clean.transcoders.layers[layer].activate(pre.activations[layer])
        acts[0] = 0
        _close(acts, dense.activations[layer], 1e-6, f"layer {layer}")
    assert none.activations is None and torch.equal(none.logits, dense.logits)
    later = torch.stack([clean.activations(i) for i in (1, 2)])  # (2, P, d_tc)
    assert (dense.activations[1:, 2:] - later[:, 2:]).abs().max() > 0


def test_float64_model():
    loaded, tc, tokens, _ = _setup("gemma2", "clt")
    loaded.model.double()
    clean = prepare(loaded, tc, tokens)
    assert clean.transcoders.layers[0].W_enc.dtype == torch.float64
    res = feature_intervention(loaded, tc, tokens, [], constrained_layers="all", clean=clean)
    assert res.logits.dtype == torch.float64
    _close(res.logits, clean.cache.logits, 1e-5)


def test_hooks_are_removed_after_success_and_error():
    loaded, tc, tokens, clean = _setup()
    before = _hook_count(loaded.model)
    feature_intervention(loaded, tc, tokens, [(1, 2, 0, 1.0)], constrained_layers="all", clean=clean)
    assert _hook_count(loaded.model) == before

    def boom(mod, args, out):
        raise RuntimeError("boom")

    h = loaded.final_norm.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            feature_intervention(loaded, tc, tokens, [(1, 2, 0, 1.0)], constrained_layers="all", clean=clean)
    finally:
        h.remove()
    assert _hook_count(loaded.model) == before


# ----------------------------------------------------------------------------- generation
def test_clean_generation_is_plain_greedy_decoding():
    loaded, tc, tokens, clean = _setup("qwen3")
    g = feature_intervention_generate(loaded, tc, tokens, [], 5, stop_at_eos=False, clean=clean)
    seq = tokens.clone()
    with torch.no_grad():
        for _ in range(5):
            nxt = loaded.model(seq[None], use_cache=False).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt[None]])
    assert g.tokens.tolist() == seq.tolist()
    assert g.new_tokens.shape == (5,) and g.logits.shape == (5, loaded.d_vocab)
    assert isinstance(g.text, str)


def test_open_slice_reaches_generated_tokens():
    loaded, tc, tokens, clean = _setup("llama")
    f, a = _active(clean, 1, N_POS - 1)
    kw = {"stop_at_eos": False, "clean": clean}
    base = feature_intervention_generate(loaded, tc, tokens, [], 6, **kw)
    closed_iv, open_iv = (1, slice(N_POS - 1, N_POS), f, 30 * a), (1, slice(N_POS - 1, None), f, 30 * a)
    prompt_only = feature_intervention_generate(loaded, tc, tokens, [closed_iv], 6, **kw)
    open_ended = feature_intervention_generate(loaded, tc, tokens, [open_iv], 6, **kw)
    assert open_ended.new_tokens[0] == prompt_only.new_tokens[0]  # same first step
    assert not torch.equal(open_ended.new_tokens, base.new_tokens)
    assert not torch.equal(open_ended.logits[1:], prompt_only.logits[1:])  # later steps differ
    # generated positions run live: the first step equals feature_intervention's last logits
    res = feature_intervention(loaded, tc, tokens, [open_iv], clean=clean)
    _close(open_ended.logits[0], res.logits[-1], 1e-6)


def test_sampling_is_seeded():
    loaded, tc, tokens, clean = _setup("gemma2")
    kw = {"do_sample": True, "temperature": 2.0, "stop_at_eos": False, "clean": clean}
    a = feature_intervention_generate(loaded, tc, tokens, [], 8, seed=1, **kw)
    b = feature_intervention_generate(loaded, tc, tokens, [], 8, seed=1, **kw)
    c = feature_intervention_generate(loaded, tc, tokens, [], 8, seed=2, **kw)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)


# ----------------------------------------------------------------------------- bad input
BAD = [
    ((3, 1, 0, 1.0), "intervention layer must be an integer in [0, 3)"),
    ((-1, 1, 0, 1.0), "intervention layer must be"),
    ((0, N_POS, 0, 1.0), "intervention position must be an integer in [-9, 9)"),
    ((0, [1, 99], 0, 1.0), "intervention position must be"),
    ((0, slice(20, 30), 0, 1.0), "intervention position slice must be non-empty"),
    ((0, 1.5, 0, 1.0), "intervention position must be"),
    ((0, 1, 64, 1.0), "intervention feature must be an integer in [0, 64)"),
    ((0, 1, 0, float("nan")), "intervention value must be a finite number"),
    ((0, 1, 0, float("inf")), "intervention value must be a finite number"),
    ((0, 1, 0, -1e20), "intervention value must be a number with |value| <= 1.8e+19"),
    ((0, 1, 0, 1.0, "double"), "intervention mode must be"),
    ("0:1:0=1", "an intervention must be"),
    (add_to_output_location(0, 1, torch.zeros(5)), "vector addition vector shape must be (32,)"),
    (add_to_output_location(7, 1, torch.zeros(32)), "vector addition layer must be"),
    (add_to_embedding(0, torch.full((32,), float("nan"))), "vector addition vector must be finite"),
    (add_to_embedding(0, torch.full((32,), 1e30)),
     "vector addition vector must be finite with |x| <= 1.8e+19; got 1e+30."),
]


@pytest.mark.parametrize("item,msg", BAD)
def test_bad_interventions_raise_one_line_errors(item, msg):
    loaded, tc, tokens, clean = _setup()
    with pytest.raises(WorkbenchError) as info:
        feature_intervention(loaded, tc, tokens, [item], clean=clean)
    text = str(info.value)
    assert msg in text and "; got " in text and "\n" not in text


def test_indices_and_values_from_arrays_are_accepted():
    """``layer, pos, feature = graph.active_features[i]`` gives 0-d tensors, and a graph's npz arrays give
    numpy scalars: both were refused ("intervention value must be a finite number; got np.float32(2.0)")."""
    import numpy as np

    loaded, tc, tokens, clean = _setup()
    plain = feature_intervention(loaded, tc, tokens, [(0, 1, 3, 2.0, "add")], clean=clean)
    for item in [(np.int64(0), np.int64(1), np.int32(3), np.float32(2.0), "add"),
                 (torch.tensor(0), torch.tensor(1), torch.tensor(3), torch.tensor(2.0), "add"),
                 (0, np.array([1]), 3, 2.0, "add")]:
        got = feature_intervention(loaded, tc, tokens, [item], clean=clean)
        torch.testing.assert_close(got.logits, plain.logits, rtol=0, atol=0)
    with pytest.raises(WorkbenchError, match="intervention position must be an integer"):
        feature_intervention(loaded, tc, tokens, [(0, torch.tensor(1.5), 3, 2.0)], clean=clean)


@pytest.mark.parametrize("kw,msg", [
    ({"constrained_layers": [0, 5]}, "constrained layer must be an integer in [0, 3)"),
    ({"constrained_layers": []}, "constrained_layers must be non-empty"),
    ({"constrained_layers": "some"}, "constrained_layers must be None, 'all'"),
])
def test_bad_settings(kw, msg):
    loaded, tc, tokens, clean = _setup()
    with pytest.raises(WorkbenchError, match=re.escape(msg)):
        feature_intervention(loaded, tc, tokens, [(0, 1, 0, 1.0)], clean=clean, **kw)


def test_bad_generation_and_token_arguments():
    loaded, tc, tokens, clean = _setup()
    with pytest.raises(WorkbenchError, match="max_new_tokens must be an integer >= 1"):
        feature_intervention_generate(loaded, tc, tokens, [], 0, clean=clean)
    with pytest.raises(WorkbenchError, match="temperature must be a finite number > 0"):
        feature_intervention_generate(loaded, tc, tokens, [], 2, temperature=0.0, clean=clean)
    with pytest.raises(WorkbenchError, match="prompt length \\+ max_new_tokens must be"):
        feature_intervention_generate(loaded, tc, tokens, [], 10_000, clean=clean)
    with pytest.raises(WorkbenchError, match="clean must be a CleanRun of the same tokens"):
        feature_intervention(loaded, tc, tokens[:-1], [], clean=clean)
    with pytest.raises(WorkbenchError, match="token ids must be in"):
        feature_intervention(loaded, tc, [1, 999], [])
    with pytest.raises(WorkbenchError, match="interventions must be a list"):
        feature_intervention(loaded, tc, tokens, (0, 1, 0, 1.0), clean=clean)


def test_a_clean_run_of_other_transcoders_or_another_model_is_refused():
    """QA pass 30: only the tokens were compared, so a clean run prepared with the PLT silently replaced the
    CLT passed in (and a float32 run served a float64 model)."""
    loaded, tc, tokens, clean = _setup()
    other = tiny_transcoders(loaded, kind="clt")
    with pytest.raises(WorkbenchError, match=r"clean must be a CleanRun of these transcoders; got a run of .*\(plt\)"):
        feature_intervention(loaded, other, tokens, [(0, 1, 0, 1.0)], clean=clean)
    with pytest.raises(WorkbenchError, match="clean must be a CleanRun of these transcoders"):
        feature_intervention_generate(loaded, tiny_transcoders(loaded, seed=5), tokens, [], 1, clean=clean)
    wide = tiny_model("llama")
    wide.model.double()
    with pytest.raises(WorkbenchError, match=r"clean must be a CleanRun of this model; got a run of .* in "
                                             r"torch.float32\. Call prepare\(\) with this model"):
        feature_intervention(wide, tc, tokens, [(0, 1, 0, 1.0)], clean=clean)
    same = tiny_transcoders(loaded)  # the same weights, another object: accepted
    feature_intervention(loaded, same, tokens, [(0, 1, 0, 1.0)], clean=clean)


@pytest.mark.parametrize("flag", ["freeze_attention", "apply_activation_function", "return_activations", "sparse"])
def test_flags_must_be_bools(flag):
    """freeze_attention="no" ran with attention frozen (bool("no") is True)."""
    loaded, tc, tokens, clean = _setup()
    with pytest.raises(WorkbenchError, match=rf"{flag} must be True or False; got 'no'"):
        feature_intervention(loaded, tc, tokens, [], clean=clean, **{flag: "no"})  # type: ignore[arg-type]
    with pytest.raises(WorkbenchError, match="stop_at_eos must be True or False; got 1"):
        feature_intervention_generate(loaded, tc, tokens, [], 1, clean=clean, stop_at_eos=1)  # type: ignore[arg-type]


def test_generation_past_a_sliding_window_says_how_many_tokens_fit():
    """The refusal blamed the prompt ("got 11 tokens. Shorten the prompt") when the generated tokens
    crossed the window."""
    loaded = tiny_model("gemma2", sliding_window=8)
    tc = tiny_transcoders(loaded)
    tokens = random_tokens(6, loaded.d_vocab, seed=3)
    with pytest.raises(WorkbenchError, match=re.escape("prompt length + max_new_tokens must be <= gemma2's "
                                                       "sliding_window (8); got 11. The prompt has 6 tokens: generate "
                                                       "at most 2")):
        feature_intervention_generate(loaded, tc, tokens, [], 5)
    full = random_tokens(8, loaded.d_vocab, seed=3)  # a prompt filling the window: no "generate at most 0"
    with pytest.raises(WorkbenchError, match="The prompt has 8 tokens: it fills the window; shorten it to generate"):
        feature_intervention_generate(loaded, tc, full, [], 1)


def test_native_backend_gives_the_same_interventions(tmp_path):
    from tests.helpers_models import save_model
    from tracer.models import load_model

    loaded, tc, tokens, clean = _setup("gemma2", "clt")
    save_model(loaded, tmp_path)
    native = load_model(tmp_path, backend="native")
    assert type(native.model).__module__ == "tracer.models.native"
    f, a = _active(clean, 1, 3)
    for constrained in (None, "all"):
        items = [(1, slice(3, None), f, 5 * a)]
        ref = feature_intervention(loaded, tc, tokens, items, constrained_layers=constrained, clean=clean)
        got = feature_intervention(native, tc, tokens, items, constrained_layers=constrained)
        _close(got.logits, ref.logits, 1e-5, f"native {constrained}")
        assert got.activations is not None and ref.activations is not None
        _close(got.activations, ref.activations, 1e-5)

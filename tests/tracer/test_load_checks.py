"""Nothing made up: ties only where declared, non-finite weights refused at load (or when a mapped
decoder row is read), strict token-id parsing, BOS handling, the memory guard, labels matched to
their transcoders, and NaN graphs named as such. The CLI-level cases are in
``tests/workbench/test_fuzz_*.py``."""

import json
import math
import re
import shutil
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers_mutants import edit_tensors
from tracer.errors import MemoryLimitError, TranscoderFormatError, WorkbenchError
from tracer.labels import FeatureLabel, check_labels_match
from tracer.memory import adjacency_bytes, check_adjacency_fits, check_fits, graph_nodes
from tracer.weights import MAX_ABS_WEIGHT, check_weight, first_bad
from workbench.cli_safety import parse_token_ids
from workbench.paths import world_dir


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory):
    """The demo model re-declared with tied embeddings and no lm_head tensor."""
    model = tmp_path_factory.mktemp("tied") / "model"
    shutil.copytree(world_dir() / "model", model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (model / "config.json").write_text(json.dumps(cfg))
    edit_tensors(model / "model.safetensors", lambda t: t.pop("lm_head.weight"))
    return model


@pytest.mark.parametrize("backend", ["native", "hf"])
def test_a_declared_tie_loads_and_shares_the_embedding(tied_model, backend):
    from tracer.models import load_model

    m = load_model(tied_model, backend=backend)
    model: Any = m.model  # HF module layout, walked by attribute
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


def test_native_and_hf_agree_on_the_tied_model(tied_model):
    from tracer.models import load_model

    ids = torch.tensor([[1, 18, 60, 7]])
    a = load_model(tied_model, backend="native").model(ids).logits
    b = load_model(tied_model, backend="hf").model(ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_an_absent_tie_key_uses_the_architectures_default(tied_model, tmp_path):
    from tracer.models import load_model

    model = tmp_path / "model"
    shutil.copytree(tied_model, model)
    cfg = json.loads((model / "config.json").read_text())
    del cfg["tie_word_embeddings"]  # Qwen3's default is untied: lm_head must then be in the file
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WorkbenchError, match="'lm_head.weight' is missing"):
        load_model(model, backend="native")


# ----------------------------------------------------------------------------- finite checks
@pytest.mark.parametrize(("value", "shown"), [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "-inf"),
                                              (1e38, "1e+38"), (-3e19, "-3e+19")])
def test_first_bad_finds_the_first_bad_value(value, shown):
    t = torch.randn(7, 5)
    t[4, 2] = value
    t[6, 0] = value
    assert first_bad(t) is not None and first_bad(t)[0] == (4, 2)  # type: ignore[index]
    pattern = rf"W in 'f.safetensors' must be finite.*got {re.escape(shown)} at index \[4, 2\]"
    with pytest.raises(WorkbenchError, match=pattern):
        check_weight(t, "W", "f.safetensors")


def test_plausible_weights_pass_in_every_float_dtype():
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        check_weight(torch.randn(64, 64).to(dtype) * 1000, "W", "f")
    check_weight(torch.full((3,), MAX_ABS_WEIGHT * 0.99), "W", "f")
    check_weight(torch.arange(5), "ids", "f")  # integer tensors are not weights


@pytest.mark.parametrize("lazy", [True, False])
def test_decoder_rows_are_checked_when_read(tmp_path, lazy):
    """A stray NaN outside the load-time sample loads; the rows a graph uses are checked as they
    are read, with the feature index of the bad row in the message."""
    from tracer.transcoders.loaders import load_transcoders

    tc_dir = tmp_path / "plt"
    shutil.copytree(world_dir() / "plt", tc_dir)
    edit_tensors(tc_dir / "layer_2.safetensors", lambda t: t["W_dec"].__setitem__((130, 7), math.nan))
    layer = load_transcoders(tc_dir, lazy_decoder=lazy).layers[2]  # (512, 128): row 130 is not sampled
    layer.decoder_rows(torch.tensor([0, 5, 299]), torch.float32)  # clean rows read fine
    with pytest.raises(TranscoderFormatError, match=r"W_dec in .* NaN at index \[130, 7\]"):
        layer.decoder_rows(torch.tensor([3, 130]), torch.float32)


@pytest.mark.parametrize("lazy", [True, False])
@pytest.mark.parametrize("row", [0, 511])
def test_a_bad_value_in_the_sample_fails_at_load(tmp_path, lazy, row):
    """The first and last windows of every tensor but the decoder are always read at load, lazy or
    not; a decoder is checked row by row as it is read, even in its first window."""
    from tracer.transcoders.loaders import load_transcoders

    tc_dir = tmp_path / "plt"
    shutil.copytree(world_dir() / "plt", tc_dir)
    edit_tensors(tc_dir / "layer_2.safetensors", lambda t: t["W_enc"].__setitem__((row, 7), math.inf))
    with pytest.raises(TranscoderFormatError, match=rf"W_enc in .*layer_2.safetensors.* inf at index \[{row}, 7\]"):
        load_transcoders(tc_dir, lazy_decoder=lazy)
    shutil.copy(world_dir() / "plt" / "layer_2.safetensors", tc_dir / "layer_2.safetensors")
    edit_tensors(tc_dir / "layer_2.safetensors", lambda t: t["W_dec"].__setitem__((row, 7), math.inf))
    layer = load_transcoders(tc_dir, lazy_decoder=lazy).layers[2]
    with pytest.raises(TranscoderFormatError, match=rf"W_dec in .* inf at index \[{row}, 7\]"):
        layer.decoder_rows(torch.tensor([row]), torch.float32)


def test_cross_layer_encoders_are_checked_at_load_and_decoders_as_read(tmp_path):
    from tracer.transcoders.loaders import load_transcoders

    tc_dir = tmp_path / "clt"
    shutil.copytree(world_dir() / "clt", tc_dir)
    edit_tensors(tc_dir / "W_enc_1.safetensors", lambda t: t["b_enc_1"].__setitem__(3, math.nan))
    with pytest.raises(TranscoderFormatError, match=r"b_enc_1 in .*W_enc_1.safetensors.* NaN at index \[3\]"):
        load_transcoders(tc_dir)
    shutil.copy(world_dir() / "clt" / "W_enc_1.safetensors", tc_dir / "W_enc_1.safetensors")
    edit_tensors(tc_dir / "W_dec_1.safetensors", lambda t: t["W_dec_1"].__setitem__((0, 1, 2), math.nan))
    layer = load_transcoders(tc_dir).layers[1]
    with pytest.raises(TranscoderFormatError, match=r"W_dec_1 in .* NaN at index \[0, 1, 2\]"):
        layer.decoder_rows(torch.tensor([0]), torch.float32)


def test_large_tensors_are_sampled_in_memory_and_checked_whole_on_failure():
    from tracer.weights import FULL_CHECK_BYTES, SAMPLE_WINDOW

    n = max(FULL_CHECK_BYTES, SAMPLE_WINDOW * 40) // 4
    t = torch.randn(n)  # float32: windows of SAMPLE_WINDOW bytes, the first, middle and last read
    quarter = n // 4 + 5
    t[quarter] = math.nan  # not sampled
    check_weight(t, "W", "f", sample=True)  # the sample misses one stray value...
    with pytest.raises(WorkbenchError, match=rf"NaN at index \[{quarter}\]"):
        check_weight(t, "W", "f")  # ...a whole check does not
    t[3] = math.inf  # the first window is always sampled; the exact search names the first bad value
    with pytest.raises(WorkbenchError, match=r"inf at index \[3\]"):
        check_weight(t, "W", "f", sample=True)
    t[3] = t[quarter] = 0.0
    t[-1] = 1e38  # the last window is always sampled
    with pytest.raises(WorkbenchError, match="1e"):
        check_weight(t, "W", "f", sample=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_check_file_reads_every_dtype_and_names_the_tensor(tmp_path, dtype):
    """check_file reads windows with pread, whole small tensors, and names the first bad value."""
    from safetensors.torch import save_file

    from tracer.safetensors_header import read_safetensors_header
    from tracer.weights import FileRegion, check_file

    big = torch.randn(300, 200).to(dtype)
    tensors = {"a": big, "b": torch.randn(7).to(dtype), "ids": torch.arange(4)}
    path = tmp_path / "w.safetensors"

    def regions():
        infos, offset = read_safetensors_header(path)
        return {k: FileRegion(str(path), offset + i.begin, i.end - i.begin, i.dtype, i.shape) for k, i in infos.items()}

    save_file(tensors, str(path))
    check_file(regions(), "model weight ")  # clean: passes
    tensors["b"][6] = math.nan
    save_file(tensors, str(path))
    with pytest.raises(WorkbenchError, match=r"model weight b in .*w.safetensors.* NaN at index \[6\]"):
        check_file(regions(), "model weight ")
    tensors["b"][6] = 0.0
    big[299, 199] = -math.inf  # the last value of a sampled tensor
    save_file(tensors, str(path))
    with pytest.raises(WorkbenchError, match=r"model weight a .* -inf at index \[299, 199\]"):
        check_file(regions(), "model weight ")
    big[299, 199] = 0.0
    big[75, 3] = math.nan  # not in the sample: found at first use
    save_file(tensors, str(path))
    check_file(regions(), "model weight ")


def test_overflowing_squares_of_legal_values_are_no_false_alarm():
    """Large legal values whose squares overflow float32 together are searched exactly and pass."""
    from tracer.weights import _squares_ok

    big = np.full(1000, MAX_ABS_WEIGHT / 10, dtype=np.float32)
    assert not _squares_ok(big, MAX_ABS_WEIGHT)  # the quick test fails...
    check_weight(torch.from_numpy(big), "W", "f")  # ...the exact search passes it


def test_a_non_finite_weight_the_sample_missed_is_named_at_first_use(tmp_path, monkeypatch):
    """Force sampling on the small demo model: the NaN loads, the first forward pass finds it and
    the whole-weight search names the tensor."""
    import tracer.weights
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    monkeypatch.setattr(tracer.weights, "FULL_CHECK_BYTES", 0)
    monkeypatch.setattr(tracer.weights, "SAMPLE_WINDOW", 64)
    monkeypatch.setattr(tracer.weights, "SAMPLE_WINDOWS", 2)  # only the first and last 64 bytes
    model = tmp_path / "model"
    shutil.copytree(world_dir() / "model", model)
    q = "model.layers.1.self_attn.q_proj.weight"
    edit_tensors(model / "model.safetensors", lambda t: t[q].__setitem__((40, 3), math.nan))
    loaded = load_model(model)
    tc = load_transcoders(world_dir() / "plt")
    with pytest.raises(WorkbenchError, match=rf"{re.escape(q)} .* NaN at index \[40, 3\]"):
        attribute(loaded, tc, [1, 18, 60, 7], AttributionConfig(verbose=False))


def test_a_non_finite_transcoder_weight_the_sample_missed_is_named_by_every_run(tmp_path, monkeypatch):
    """QA pass 30: only the fast engine named it; the interventions returned NaN logits (and generated token 0),
    the autograd engine a NaN graph, and activation collection wrote a shard it then refused to read."""
    import tracer.weights
    from tracer.activations import collect_activations
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.interventions import feature_intervention, feature_intervention_generate, prepare
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    monkeypatch.setattr(tracer.weights, "FULL_CHECK_BYTES", 0)
    monkeypatch.setattr(tracer.weights, "SAMPLE_WINDOW", 64)
    monkeypatch.setattr(tracer.weights, "SAMPLE_WINDOWS", 2)  # only the first and last 64 bytes
    plt = tmp_path / "plt"
    shutil.copytree(world_dir() / "plt", plt)
    edit_tensors(plt / "layer_1.safetensors", lambda t: t["W_enc"].__setitem__((100, 3), math.nan))
    loaded = load_model(world_dir() / "model")
    tc = load_transcoders(plt, n_layers=loaded.n_layers, d_model=loaded.d_model)  # the sample misses it
    tokens = [1, 18, 60, 7]
    named = r"transcoder layer 1 W_enc .* NaN at index \[100, 3\]"
    runs = {
        "fast engine": lambda: attribute(loaded, tc, tokens, AttributionConfig(verbose=False)),
        "autograd engine": lambda: attribute(loaded, tc, tokens, AttributionConfig(engine="autograd", verbose=False)),
        "clean run": lambda: prepare(loaded, tc, tokens).activations(1),
        "intervention": lambda: feature_intervention(loaded, tc, tokens, [(1, 3, 100, 2.0, "scale")]),
        "generation": lambda: feature_intervention_generate(loaded, tc, tokens, [(1, slice(1, None), 100, 0.0)],
                                                            max_new_tokens=2),
        "activations": lambda: collect_activations(loaded, tc, ["Two days after Friday is"], tmp_path / "run"),
    }
    for what, run in runs.items():
        try:
            run()
        except WorkbenchError as err:
            assert re.search(named, str(err)), f"{what}: {err}"  # each path names the weight
        else:
            pytest.fail(f"{what}: NaN activations passed silently")
    assert not list((tmp_path / "run").glob("shard-*")), "no shard is written from NaN activations"


# ----------------------------------------------------------------------------- token ids, BOS
@settings(deadline=None, max_examples=60)
@given(ids=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=6),
       pads=st.lists(st.sampled_from(["", " ", "  ", "\t"]), min_size=14, max_size=14))
def test_token_ids_round_trip_with_any_spacing_around_commas(ids, pads):
    text = ",".join(f"{pads[i]}{x}{pads[i + 7]}" for i, x in enumerate(ids))
    assert parse_token_ids(text) == ids


@pytest.mark.parametrize("text", ["1,2 0,30", "12 3", "1;2", "0x10", "1,,2", "", ",", "-1", "1.0", "２", "1e3",
                                  str(2**63)])
def test_token_ids_that_are_not_a_clean_list_are_refused(text):
    with pytest.raises(WorkbenchError, match="--token-ids"):
        parse_token_ids(text)


def test_bos_is_prepended_whatever_the_first_word_and_never_doubled(caplog):
    from tracer.models import load_model, tokenize

    m = load_model(world_dir() / "model")
    assert tokenize(m, "Funday is", allow_unk=True).tolist()[:2] == [1, 0]  # BOS, then <unk>
    assert "Funday" in caplog.text  # the loud warning names the word
    assert tokenize(m, "<unk> Two", allow_unk=True).tolist()[:2] == [1, 0]
    assert tokenize(m, "<bos> Two").tolist()[0] == 1 and tokenize(m, "<bos> Two").tolist()[1] != 1
    with pytest.raises(WorkbenchError, match="'Funday'"):
        tokenize(m, "Funday is")


@pytest.mark.parametrize("backend", ["native", "hf"])
def test_special_token_text_in_a_prompt_is_said(caplog, backend):
    """QA pass 30: "<pad> <eos>" in a prompt became those control tokens without a word (a leading <bos> is the
    BOS, as above, and says nothing)."""
    from tracer.models import load_model, tokenize

    m = load_model(world_dir() / "model", backend=backend)
    with caplog.at_level("WARNING"):
        ids = tokenize(m, "Friday <eos> is <pad>").tolist()
    assert "SPECIAL TOKENS in the prompt text are read as control tokens: '<eos>', '<pad>'" in caplog.text, ids
    caplog.clear()
    with caplog.at_level("WARNING"):
        tokenize(m, "<bos> Two days after Friday is")
        tokenize(m, "Two days after Friday is")
    assert "SPECIAL TOKENS" not in caplog.text


# ----------------------------------------------------------------------------- memory guard
def test_memory_estimate_is_n_squared_times_the_item_size():
    n = graph_nodes(n_features=1000, n_layers=4, n_pos=10, n_logits=5)
    assert n == 1000 + 5 * 10 + 5
    assert adjacency_bytes(n, n, torch.float32) == n * n * 4
    assert adjacency_bytes(n, n, torch.bfloat16) == n * n * 2


def test_memory_guard_message_states_the_size_and_the_remedies():
    check_fits(10, "cpu", "x", available=100)
    with pytest.raises(MemoryLimitError) as info:
        check_adjacency_fits(100_000, adjacency_bytes(100_000, 100_000, torch.float32), torch.float32, "cpu",
                             available=2 * 1024**3)
    msg = str(info.value)
    assert "100,000 nodes" in msg and "37.3 GiB" in msg and "2.0 GiB" in msg
    assert "max_feature_nodes" in msg and "adjacency_dtype" in msg and "--" not in msg
    assert info.value.fields == ("max_feature_nodes", "adjacency_dtype")


def test_the_engine_checks_memory_before_allocating(monkeypatch):
    import tracer.memory
    from tests.helpers_models import tiny_model, tiny_transcoders
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig

    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded, kind="plt")
    monkeypatch.setattr(tracer.memory, "available_bytes", lambda device="cpu": 1000)
    allocations = []
    real_zeros = torch.zeros

    def recording_zeros(*a: Any, **k: Any) -> torch.Tensor:
        allocations.append(a)
        return real_zeros(*a, **k)

    monkeypatch.setattr(torch, "zeros", recording_zeros)
    for cap in (None, 3):
        allocations.clear()
        with pytest.raises(MemoryLimitError, match="must fit in memory"):
            attribute(loaded, tc, [1, 5, 9, 12], AttributionConfig(verbose=False, max_feature_nodes=cap))
        assert not any(len(a) == 2 and a[0] > 10 and a[1] > 10 for a in allocations)  # no N x N buffer yet


# ----------------------------------------------------------------------------- labels, NaN graphs
def _labels(layer: int, scan: str | None) -> dict:
    extra = {"scan": scan} if scan else {}
    lab = FeatureLabel(layer=layer, feature=3, label="x", extra=extra)
    return {lab.key: lab}


def test_labels_must_match_the_graphs_transcoders(caplog):
    check_labels_match(_labels(3, "plt@0"), n_layers=4, scan="plt@0")
    check_labels_match(_labels(3, None), n_layers=4, scan="plt@0")  # no id: only layers can be checked
    with pytest.raises(WorkbenchError, match="4 layers"):
        check_labels_match(_labels(4, "plt@0"), n_layers=4, scan="plt@0")
    with pytest.raises(WorkbenchError, match="'clt@0'"):
        check_labels_match(_labels(0, "clt@0"), n_layers=4, scan="plt@0")
    check_labels_match(_labels(0, "clt@0"), n_layers=4, scan="")
    assert "cannot be matched" in caplog.text


def test_shipped_labels_name_their_transcoder_set():
    from tracer.labels import load_labels
    from tracer.transcoders.loaders import read_config

    for kind in ("plt", "clt"):
        labels = load_labels(world_dir() / f"labels_{kind}.jsonl")
        scan = read_config(world_dir() / kind)["scan"]
        assert {lab.extra["scan"] for lab in labels.values()} == {scan}


def test_a_nan_adjacency_is_reported_as_non_finite_not_cyclic():
    from tracer.graph.influence import compute_influence

    A = torch.zeros(5, 5)
    A[4, 1], A[3, 0] = math.nan, 1.0
    with pytest.raises(WorkbenchError, match="must be finite") as info:
        compute_influence(A, torch.tensor([0, 0, 0, 0.5, 0.5]))
    assert "acyclic" not in str(info.value)


def test_check_file_reads_in_batches(tmp_path, monkeypatch):
    """Pieces beyond one batch of the reused buffer are read in further batches, and a bad value
    in any batch is found (here: 40 tensors of 12 bytes, batches of 64 bytes)."""
    from safetensors.torch import save_file

    import tracer.weights
    from tracer.safetensors_header import read_safetensors_header
    from tracer.weights import FileRegion, check_file

    monkeypatch.setattr(tracer.weights, "_BATCH_BYTES", 64)
    monkeypatch.setattr(tracer.weights, "_MERGE_BYTES", 24)  # reads of two tensors: 10 batches
    seen: list[int] = []
    batches = tracer.weights._read_batches

    def record(b: memoryview) -> memoryview:
        seen.append(len(b))
        return b

    monkeypatch.setattr(tracer.weights, "_read_batches", lambda fd, r: (record(b) for b in batches(fd, r)))
    tensors = {f"t{i:02d}": torch.randn(3) for i in range(40)}
    path = tmp_path / "many.safetensors"
    save_file(tensors, str(path))
    infos, offset = read_safetensors_header(path)
    regions = {k: FileRegion(str(path), offset + i.begin, i.end - i.begin, i.dtype, i.shape) for k, i in infos.items()}
    check_file(regions)
    assert seen == [48] * 10
    tensors["t37"][2] = math.inf
    save_file(tensors, str(path))
    with pytest.raises(WorkbenchError, match=r"t37 in .* inf at index \[2\]"):
        check_file(regions)


@pytest.mark.parametrize("name", ["qwen3", "llama"])
def test_sliding_layer_types_are_refused_where_no_window_is_modelled(name):
    """transformers runs a 'sliding_attention' entry of layer_types with a window (or fails without one,
    as after setting use_sliding_window to false): tracer does not model it, so the config is refused."""
    from tracer.models.adapters import ADAPTERS, ArchitectureError

    adapter = next(a for a in ADAPTERS if a.name == name)
    config = {"use_sliding_window": False, "layer_types": ["full_attention", "sliding_attention", "sliding_attention"]}
    with pytest.raises(ArchitectureError, match=r"layer_types must list only 'full_attention'; got "
                                                r"'sliding_attention' at layers \[1, 2\]"):
        adapter.check_config(config)
    adapter.check_config({"layer_types": ["full_attention"] * 3})


def test_gemma2_keeps_its_alternating_layer_types():
    from tracer.models.adapters import GEMMA2

    GEMMA2.check_config({"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]}, n_pos=8)

"""Bad arguments to the public API are refused with one clear line, never silently converted.

Token ids (one prompt of integers), the model/transcoder match and the adjacency dtype for every
engine, transcoder dtype names, the activation output folder and prompt list, and config types.
"""

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch

from tests.helpers_models import random_tokens, save_transcoders, tiny_model, tiny_transcoders
from tracer.activations import collect_activations
from tracer.attribution import attribute, attribute_fast, reference_attribute
from tracer.config import AttributionConfig
from tracer.errors import TranscoderFormatError, WorkbenchError
from tracer.interventions import feature_intervention
from tracer.models.tokens import check_token_ids
from tracer.transcoders.loaders import load_transcoders

Engine = Literal["fast", "autograd"]
AdjDtype = Literal["auto", "float32", "float64", "bfloat16", "float16"]
TWO_PROMPTS: Any = [[1, 5], [1, 6]]  # wrong on purpose (Any: past the type checker, to the runtime check)
FRACTIONS: Any = [1, 5.9, 6.7]


@pytest.mark.parametrize(("ids", "match"), [
    ([[1, 5], [1, 6]], r"one prompt.*got shape \(2, 2\)"),
    (torch.tensor([[1, 5], [1, 6]]), r"one prompt.*got shape \(2, 2\)"),
    (torch.tensor(5), r"got shape \(\)"),
    ([1, 5.9, 6.7], "integers; got float 5.9 at position 1"),
    ([1.0, 5.0], "integers; got float 1.0 at position 0"),
    ([True, 5, 6], "integers; got bool True at position 0"),
    (torch.tensor([1.0, float("nan")]), "integers; got a float32 tensor with nan at position 1"),
    (torch.tensor([1.0, 5.0]), "integers; got a float32 tensor"),
    (torch.tensor([True, False]), "integers; got a bool tensor"),
    (np.array([1.0, 2.5]), "integers; got float 1.0 at position 0"),
    ([[1, 5], [1]], "integers; got list"),
    ("1 5 6", "got text"),
])
def test_token_ids_of_the_wrong_shape_or_type_are_refused(ids: Any, match: str) -> None:
    loaded = tiny_model("qwen3")
    with pytest.raises(WorkbenchError, match=match) as info:
        check_token_ids(loaded, ids)
    assert "\n" not in str(info.value) and "-9223372036854775808" not in str(info.value)


@pytest.mark.parametrize("ids", [
    [1, 5, 6], (1, 5, 6), range(1, 7, 2), torch.tensor([[1, 5, 6]]), [[1, 5, 6]],
    torch.tensor([1, 5, 6], dtype=torch.int32), np.array([1, 5, 6]), list(torch.tensor([1, 5, 6])),
    [np.int64(1), 5, 6],
])
def test_one_prompt_of_integers_is_accepted_and_a_single_row_is_squeezed(ids: Any) -> None:
    t = check_token_ids(tiny_model("qwen3"), ids)
    assert t.dtype == torch.long and t.tolist() == ([1, 3, 5] if isinstance(ids, range) else [1, 5, 6])


@pytest.mark.parametrize("engine", ["fast", "autograd"])
def test_attribute_refuses_several_prompts_and_accepts_an_hf_style_row(engine: Engine) -> None:
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)
    cfg = AttributionConfig(verbose=False, engine=engine)
    with pytest.raises(WorkbenchError, match="one prompt"):
        attribute(loaded, tc, TWO_PROMPTS, cfg)
    with pytest.raises(WorkbenchError, match="integers"):
        attribute(loaded, tc, FRACTIONS, cfg)
    tokens = random_tokens(4)
    row = attribute(loaded, tc, tokens[None], cfg)  # (1, n_pos), as HF tokenizers return
    flat = attribute(loaded, tc, tokens, cfg)
    assert torch.equal(row.input_tokens, tokens) and torch.equal(row.adjacency, flat.adjacency)


def test_feature_intervention_refuses_several_prompts() -> None:
    loaded = tiny_model("qwen3")
    with pytest.raises(WorkbenchError, match="one prompt"):
        feature_intervention(loaded, tiny_transcoders(loaded), TWO_PROMPTS, [])
    with pytest.raises(WorkbenchError, match="integers; got bool True at position 0"):  # was taken as the BOS
        feature_intervention(loaded, tiny_transcoders(loaded), [True, 5, 6], [])


@pytest.mark.parametrize("engine", ["fast", "autograd"])
def test_every_engine_checks_the_transcoders_against_the_model(engine: Engine) -> None:
    loaded = tiny_model("qwen3")
    other = tiny_transcoders(tiny_model("llama", hidden_size=48, num_hidden_layers=2))
    cfg = AttributionConfig(verbose=False, engine=engine)
    with pytest.raises(TranscoderFormatError, match="d_model must equal the model's hidden_size"):
        attribute(loaded, other, random_tokens(5), cfg)


@pytest.mark.parametrize("cap", [None, 3])
@pytest.mark.parametrize(("name", "dtype"), [("float32", torch.float32), ("float64", torch.float64),
                                             ("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_the_autograd_engine_stores_the_configured_adjacency_dtype(name: AdjDtype, dtype: torch.dtype,
                                                                   cap: int | None) -> None:
    loaded = tiny_model("qwen3")
    tc = tiny_transcoders(loaded)
    tokens = random_tokens(5)
    ref = attribute(loaded, tc, tokens, AttributionConfig(verbose=False, engine="autograd", max_feature_nodes=cap))
    graph = attribute(loaded, tc, tokens, AttributionConfig(verbose=False, engine="autograd", max_feature_nodes=cap,
                                                            adjacency_dtype=name))
    fast = attribute(loaded, tc, tokens, AttributionConfig(verbose=False, max_feature_nodes=cap, adjacency_dtype=name))
    assert graph.adjacency.dtype == fast.adjacency.dtype == dtype
    if cap is None:  # rows computed in the model's dtype, then stored: the float32 rows, cast
        assert torch.equal(graph.adjacency, ref.adjacency.to(dtype))


def test_load_transcoders_accepts_dtype_names(tmp_path: Path) -> None:
    folder = save_transcoders(tiny_transcoders(tiny_model("qwen3")), tmp_path / "tc")
    for name, dtype in (("float64", torch.float64), ("bf16", torch.bfloat16), (torch.float16, torch.float16)):
        assert load_transcoders(folder, dtype=name).layers[0].W_enc.dtype == dtype
    with pytest.raises(WorkbenchError, match="dtype must be one of .*; got 'float65'"):
        load_transcoders(folder, dtype="float65")


def test_collect_activations_refuses_a_file_as_output_folder(tmp_path: Path) -> None:
    loaded = tiny_model("llama")
    tc = tiny_transcoders(loaded)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(WorkbenchError, match="output folder must be a folder or a new path"):
        collect_activations(loaded, tc, ["the cat"], tmp_path / "file", verbose=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match="must be new, empty or an activation run's folder"):
        collect_activations(loaded, tc, ["the cat"], tmp_path / "other", verbose=False)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]


def test_collect_activations_refuses_a_bare_string_of_prompts(tmp_path: Path) -> None:
    loaded = tiny_model("llama")
    with pytest.raises(WorkbenchError, match="prompts must be a list of prompts; got a str. Wrap it in a list."):
        collect_activations(loaded, tiny_transcoders(loaded), "the cat", tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("field", "value", "match"), [
    ("desired_logit_prob", "0.5", r"desired_logit_prob must be a number in \(0, 1\]; got '0.5'"),
    ("desired_logit_prob", True, "desired_logit_prob must be a number"),
    ("desired_logit_prob", float("nan"), "desired_logit_prob must be a number"),
    ("max_n_logits", True, "max_n_logits must be an integer >= 1; got True"),
    ("batch_size", True, "batch_size must be an integer >= 1; got True"),
    ("update_interval", True, "update_interval must be an integer >= 1; got True"),
    ("sweep_rows", False, "sweep_rows must be an integer >= 1; got False"),
    ("max_feature_nodes", True, "max_feature_nodes must be an integer >= 1 or None; got True"),
    ("n_workers", 2.0, "n_workers must be an integer >= 1 or None; got 2.0"),
    ("batch_size", "8", "batch_size must be an integer >= 1; got '8'"),
    ("verbose", "no", "verbose must be True or False; got 'no'"),
])
def test_attribution_config_checks_types(field: str, value: object, match: str) -> None:
    with pytest.raises(WorkbenchError, match=match):
        AttributionConfig(**{field: value})  # type: ignore[arg-type]


def test_attribution_config_accepts_numbers_of_either_kind() -> None:
    assert AttributionConfig(desired_logit_prob=1).desired_logit_prob == 1
    assert AttributionConfig(max_feature_nodes=None, n_workers=None).n_workers is None


@pytest.mark.parametrize("fn", [attribute, attribute_fast, reference_attribute])
def test_a_config_that_is_not_an_attribution_config_is_a_type_error(fn: Any) -> None:
    loaded = tiny_model("qwen3")
    with pytest.raises(TypeError, match=r"config must be an AttributionConfig or None; got dict\. Pass "
                                        r"AttributionConfig\(\.\.\.\)"):
        fn(loaded, tiny_transcoders(loaded), random_tokens(5), {"max_feature_nodes": 3})

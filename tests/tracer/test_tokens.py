"""Prompt tokenization: one prompt or many (batched), the same ids and the same unknown-word rule."""

import pytest

from tracer.errors import WorkbenchError
from workbench.paths import world_dir

shipped = pytest.mark.skipif(not (world_dir() / "model" / "config.json").is_file(), reason="data/world not built")


@shipped
@pytest.mark.parametrize("backend", ["hf", "native"])
def test_batched_tokenization_equals_one_by_one(backend):
    from tracer.models import load_model, tokenize, tokenize_many

    loaded = load_model(world_dir() / "model", backend=backend)
    prompts = ["Two days after Friday is", "The capital of the region containing Kolt is", "Monday", "<bos> Monday"]
    assert [t.tolist() for t in tokenize_many(loaded, prompts)] == [tokenize(loaded, p).tolist() for p in prompts]
    assert tokenize_many(loaded, []) == []
    with pytest.raises(WorkbenchError, match="'Funday'"):
        tokenize_many(loaded, ["Monday", "Two days after Funday is"])
    unk = tokenize_many(loaded, ["Two days after Funday is"], allow_unk=True)[0]
    unk_id = getattr(loaded.tokenizer, "unk_token_id", None)  # HF and FastTokenizer; not in the Tokenizer protocol
    assert unk_id is not None and unk_id in unk.tolist() and unk[0] == tokenize(loaded, "Monday")[0]
    with pytest.raises(WorkbenchError, match="non-empty"):
        tokenize_many(loaded, ["Monday", "  "])

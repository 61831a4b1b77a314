"""Default answers of `manifold fit` / `steer` records: the value name as the prompt's next word, in the
tokenizer's own form (a subword tokenizer's " Monday", not its bare "Monday")."""

from types import SimpleNamespace

import pytest

from tracer.errors import WorkbenchError
from workbench.manifold_inputs import continuation_token, default_answers

DAYS = ["Monday", "Tuesday", "Wednesday"]


@pytest.fixture(scope="module")
def bpe() -> SimpleNamespace:
    """A byte-level BPE tokenizer (as Qwen3's and Llama 3's) that has both "Monday" and " Monday"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Monday Tuesday Wednesday", "Two days after Monday is Wednesday .",
              "One day after Tuesday is Wednesday .", "Tuesday", "Monday", "Zebra"] * 40
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<bos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return SimpleNamespace(tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>"), model_id="bpe")


def test_default_answers_are_the_tokens_that_follow_the_prompt(bpe):
    tok = bpe.tokenizer
    bare, spaced = tok.convert_tokens_to_ids("Monday"), tok.convert_tokens_to_ids("ĠMonday")
    assert bare != spaced and tok.unk_token_id not in (bare, spaced)  # both forms exist, as in real vocabularies
    prompt = "Two days after Monday is"
    ids = default_answers(bpe, prompt, DAYS, "prompt 0")
    assert ids == [tok.convert_tokens_to_ids("Ġ" + d) for d in DAYS]
    assert tok.decode(ids[0]) == " Monday"
    # a prompt ending in a space holds the space in its last token: no one token continues it with the word
    # (the bare "Monday" after it is not what the text "... is Monday" tokenizes to), so it is refused
    assert continuation_token(bpe, prompt + " ", "Monday") is None
    with pytest.raises(WorkbenchError, match="the prompt's last token holds its trailing whitespace, which 'Monday' "
                                             "would merge with: drop it"):
        default_answers(bpe, prompt + " ", DAYS, "prompt 0")


def test_a_value_that_is_not_one_token_after_the_prompt_is_refused_with_the_remedy(bpe):
    with pytest.raises(WorkbenchError, match=r"prompt 3: value 'Xylophone' must continue the prompt as one known "
                                             r"token to be its default answer; got none: ' Xylophone' adds \d+ tokens "
                                             r"\[[\d, ]+\] to the prompt's\. Give the record's 'answers'"):
        default_answers(bpe, "Two days after Monday is", ["Monday", "Xylophone", "Tuesday"], "prompt 3")


def test_the_position_check_maps_subword_tokens_to_their_word(bpe):
    """`manifold fit/steer --position value` warn when a record's position is not on its value: any subword
    of the value passes (first or last), as does the space token before it; another word never does, even
    one that starts alike ("T" of "Three" for "Thursday")."""
    from workbench.manifold_fit_run import token_in_word

    tok = bpe.tokenizer
    prompt = "Three days after Thursday is"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    start = next(k for k in range(len(ids)) if "".join(pieces[k:]).startswith(" Thursday"))
    stop = next(k for k in range(start + 1, len(ids) + 1) if "".join(pieces[start:k]).strip() == "Thursday")
    assert stop - start >= 2, pieces  # the untrained word is split into subwords
    assert all(token_in_word(tok, ids, k, "Thursday") for k in range(start, stop))
    assert "Thursday".startswith(pieces[0]) and not token_in_word(tok, ids, 0, "Thursday")  # "T" of "Three"
    assert not token_in_word(tok, ids, len(ids) - 1, "Thursday")  # "is"
    assert not token_in_word(tok, ids, start, "Friday")  # a value that is not in the prompt
    space = tok.convert_tokens_to_ids("Ġ")  # a bare space token before the word, as byte-level BPE makes
    spaced = [*ids[:start], space, *tok("Thursday", add_special_tokens=False)["input_ids"], *ids[stop:]]
    assert tok.decode(spaced) == tok.decode(ids)
    assert token_in_word(tok, spaced, start, "Thursday") and not token_in_word(tok, spaced, start - 1, "Thursday")


def test_a_world_family_refuses_a_model_that_splits_the_worlds_words(bpe):
    """--world's positions and answers count words: with a subword tokenizer they named the wrong tokens."""
    from workbench.manifold_world import check_word_tokens

    check_word_tokens(bpe, ["Monday Tuesday Wednesday"])  # words the tokenizer keeps whole pass
    with pytest.raises(WorkbenchError, match=r"--world's prompts must be one token per word for the model .* "
                                             r"for the 5 words of 'Three days after Thursday is'"):
        check_word_tokens(bpe, ["Monday Tuesday", "Three days after Thursday is"])


def test_the_position_check_reads_a_multi_byte_character_whole(bpe):
    """A token holding the last bytes of "é" decodes to U+FFFD alone: the check placed it outside "Chloé"
    and warned about a right position."""
    from workbench.manifold_fit_run import token_in_word

    tok = bpe.tokenizer
    ids = tok("Two days after Chloé is", add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert "\ufffd" in pieces  # "é" is split into byte tokens by this vocabulary
    in_word = [k for k in range(len(ids)) if token_in_word(tok, ids, k, "Chloé")]
    assert tok.decode([ids[k] for k in in_word]).strip() == "Chloé"
    assert not token_in_word(tok, ids, len(ids) - 1, "Chloé")


def test_a_spaced_prompt_never_falls_back_to_the_bare_word(bpe):
    """"Zebra" is one token only at the start of a text; after "... is" the model would need " Zebra"
    (several tokens). The bare form was taken silently and the checks scored 0."""
    tok = bpe.tokenizer
    assert len(tok("Zebra", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok(" Zebra", add_special_tokens=False)["input_ids"]) > 1
    assert continuation_token(bpe, "Two days after Monday is", "Zebra") is None
    with pytest.raises(WorkbenchError, match=r"got none: ' Zebra' adds \d tokens"):
        default_answers(bpe, "Two days after Monday is", ["Monday", "Zebra", "Tuesday"], "prompt 0")
    # a prompt without any whitespace (a language written without spaces) is continued by the bare word
    assert continuation_token(bpe, "Monday", "Zebra") == tok.convert_tokens_to_ids("Zebra")


def test_the_position_check_wants_the_whole_word(bpe):
    """The "red" piece of "Fred" passed for the value "red"; an ideographic word needs no boundary."""
    from workbench.manifold_fit_run import token_in_word, word_pattern

    tok = bpe.tokenizer
    ids = tok("Two days after Fred is", add_special_tokens=False)["input_ids"]
    assert not any(token_in_word(tok, ids, k, "red") for k in range(len(ids)))
    assert any(token_in_word(tok, ids, k, "Fred") for k in range(len(ids)))
    assert word_pattern("red").search("a red b") and not word_pattern("red").search("Fred")
    assert word_pattern("Noël").search("Chez Noël.") and not word_pattern("Noël").search("Noëlle")
    assert word_pattern("星期二").search("今天是星期二")

"""The word-level tokenizer of the demo world, saved in Hugging Face's format.

Ids 0..3 are ``<unk>``, ``<bos>``, ``<pad>``, ``<eos>`` (BOS is deliberately not id 0:
circuit-tracer's BOS detection skips id 0). Text is split on whitespace, so punctuation must be
space-separated ("Sunday ." not "Sunday."). Encoding prepends ``<bos>``.
"""

import logging
import shutil
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from workbench.world.language import SPECIAL_TOKENS

logger = logging.getLogger(__name__)

UNK, BOS, PAD, EOS = SPECIAL_TOKENS
UNK_ID, BOS_ID, PAD_ID, EOS_ID = 0, 1, 2, 3


def build_tokenizer(vocab: list[str]) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over `vocab` (specials first, in SPECIAL_TOKENS order)."""
    if tuple(vocab[:4]) != SPECIAL_TOKENS:
        raise ValueError(f"vocab must start with {SPECIAL_TOKENS}; got {tuple(vocab[:4])!r}.")
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab must not contain duplicates.")
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=64, padding_side="right", clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"])


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `out_dir`,
    each file replaced atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        for f in sorted(Path(tmp).iterdir()):
            shutil.move(str(f), str(out_dir / f.name))

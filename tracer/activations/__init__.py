"""Transcoder activations over a corpus: collected in batches, streamed to safetensors shards,
read back per layer as sparse matrices (:class:`ActivationStore`).

``collect_activations(loaded, transcoders, prompts, out_dir, ActivationConfig(...))``; prompts are
strings or :class:`PromptRecord` s (:func:`read_prompts` reads text or JSONL files).
"""

from tracer.activations.collect import collect_activations
from tracer.activations.prompts import PromptRecord, read_prompts
from tracer.activations.store import ActivationStore
from tracer.config import ActivationConfig

__all__ = ["ActivationConfig", "ActivationStore", "PromptRecord", "collect_activations", "read_prompts"]

"""Models: declarative architecture adapters, loading, tokenization and the caching forward pass.

``from tracer.models import load_model, tokenize`` is the public entry point; the typed
:class:`LoadedModel` gives layers, norms, ``W_E`` / ``W_U``, the embedding scale and the head
dimensions through the architecture's :class:`~tracer.models.adapters.Adapter`.
"""

from tracer.models.adapters import ADAPTERS, Adapter, ModelFacts, adapter_for
from tracer.models.loaded import Block, LoadedModel, Tokenizer
from tracer.models.loading import load_model, parse_device, parse_dtype, wrap_model
from tracer.models.tokens import bos_id, check_token_ids, tokenize, tokenize_many

__all__ = ["ADAPTERS", "Adapter", "Block", "LoadedModel", "ModelFacts", "Tokenizer", "adapter_for", "bos_id",
           "check_token_ids", "load_model", "parse_device", "parse_dtype", "tokenize", "tokenize_many", "wrap_model"]

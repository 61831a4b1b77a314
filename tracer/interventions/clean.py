"""The clean run every intervention on a prompt starts from: the prompt's replacement model."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tracer.models.forward import ForwardCache
from tracer.models.loaded import LoadedModel
from tracer.models.tokens import check_token_ids
from tracer.replacement import Replacement, build_replacement
from tracer.transcoders.base import Transcoders
from tracer.transcoders.loaders import check_against_model
from tracer.weights import check_finite_run


@dataclass(frozen=True, kw_only=True, eq=False)
class CleanRun:
    """A clean forward pass and its replacement model (transcoders on the model's device and dtype)."""

    tokens: Tensor
    """(n_pos,)"""
    replacement: Replacement
    model_id: str = ""
    """the model it was run with (``LoadedModel.model_id``)"""
    _memo: dict[int, Tensor] = field(default_factory=dict, repr=False)

    @property
    def cache(self) -> ForwardCache:
        return self.replacement.cache

    @property
    def transcoders(self) -> Transcoders:
        return self.replacement.transcoders

    @property
    def input_location(self) -> str:
        return self.replacement.input_location

    @property
    def output_location(self) -> str:
        return self.replacement.output_location

    @property
    def token_vectors(self) -> Tensor:
        """(n_pos, d_model) embeddings as they enter the residual stream"""
        return self.replacement.token_vectors

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    def feature_input(self, layer: int) -> Tensor:
        """(n_pos, d_model) at the transcoder input location."""
        return self.replacement.feature_in[layer]

    def feature_output(self, layer: int) -> Tensor:
        """(n_pos, d_model) at the transcoder output location."""
        return self.cache.feature_output(self.output_location)[layer]

    def activations(self, layer: int) -> Tensor:
        """(n_pos, d_transcoder) clean activations, BOS zeroed (a non-finite one names the weight to blame)."""
        if layer not in self._memo:
            acts = self.replacement.layer_activations(layer)  # (n_pos, d_transcoder)
            check_finite_run([(f"layer {layer} activations", acts)], None, self.transcoders)
            self._memo[layer] = acts
        return self._memo[layer]

    def skip_term(self, layer: int) -> Tensor | None:
        """(n_pos, d_model) the clean skip term ``x_in @ skip_T``, or None."""
        return self.replacement.skips[layer]

    def error_vectors(self) -> Tensor:
        """(n_layers, n_pos, d_model) output minus reconstruction at the output location, BOS zeroed."""
        return self.replacement.errors


def prepare(loaded: LoadedModel, transcoders: Transcoders, tokens: Tensor | Sequence[int]) -> CleanRun:
    """The clean run every intervention on ``tokens`` starts from (reusable across calls)."""
    tokens = check_token_ids(loaded, tokens)
    check_against_model(transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    with torch.no_grad():
        rep = build_replacement(loaded, transcoders, tokens, loaded.dtype)
    return CleanRun(tokens=tokens, replacement=rep, model_id=loaded.model_id)


def same_transcoders(a: Transcoders, b: Transcoders) -> bool:
    """Whether two transcoder sets are the same weights, up to device and dtype: source, kind, shapes, and each
    layer's first encoder row (``b``'s cast to ``a``'s device and dtype: a cheap check, not a full compare)."""
    if (a.source, a.kind, a.n_layers) != (b.source, b.kind, b.n_layers):
        return False
    for la, lb in zip(a.layers, b.layers):
        if la.W_enc.shape != lb.W_enc.shape:
            return False
        if not torch.equal(la.W_enc[:1], lb.W_enc[:1].to(la.W_enc.device, la.W_enc.dtype)):
            return False
    return True

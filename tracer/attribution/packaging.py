"""Phase 4: the attribution results packaged as a :class:`tracer.graph.core.Graph`."""

from torch import Tensor

from tracer.attribution.targets import LogitTargets
from tracer.config import AttributionConfig
from tracer.graph.core import Graph
from tracer.models.loaded import LoadedModel
from tracer.transcoders.base import Transcoders


def decode_tokens(loaded: LoadedModel, ids: list[int]) -> str:
    """Token ids as text (their numbers, space-separated, without a tokenizer)."""
    tok = loaded.tokenizer
    return tok.decode(ids) if tok is not None else " ".join(map(str, ids))


def make_graph(loaded: LoadedModel, tc: Transcoders, tokens: Tensor, active: Tensor, values: Tensor,
               targets: LogitTargets, A: Tensor, selected: Tensor, cfg: AttributionConfig, seconds: float) -> Graph:
    return Graph(
        adjacency=A, input_tokens=tokens.cpu(), active_features=active.cpu(),
        activation_values=values.float().cpu(), selected_features=selected.cpu(),
        logit_token_ids=targets.token_ids.cpu(), logit_probabilities=targets.probabilities.float().cpu(),
        logit_vectors=targets.vectors.float().cpu(), n_layers=loaded.n_layers, d_vocab=loaded.d_vocab,
        model_id=loaded.model_id, transcoder_id=tc.source, scan=tc.scan,
        input_string=decode_tokens(loaded, tokens.tolist()),
        logit_tokens=tuple(decode_tokens(loaded, [int(i)]) for i in targets.token_ids.tolist()),
        extra={"config": dict(vars(cfg)), "attribution_seconds": round(seconds, 3), "transcoder_kind": tc.kind,
               "model_dtype": str(loaded.dtype).removeprefix("torch."), "model_class": type(loaded.model).__name__},
    )

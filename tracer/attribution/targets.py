"""Phase 1: the logit targets -- circuit-tracer's salient-logit selection."""

from typing import NamedTuple

import torch
from torch import Tensor

from tracer.replacement import logit_vectors


class LogitTargets(NamedTuple):
    token_ids: Tensor
    """(n_logits,)"""
    probabilities: Tensor
    """(n_logits,)"""
    vectors: Tensor
    """(n_logits, d_model) demeaned unembedding rows"""


def select_logits(logits_last: Tensor, W_U: Tensor, max_n_logits: int, desired_logit_prob: float) -> LogitTargets:
    """The smallest top-k set (k <= max_n_logits) whose probability reaches desired_logit_prob."""
    probs = torch.softmax(logits_last, dim=-1)  # (d_vocab,)
    k = min(max_n_logits, int(probs.shape[0]))
    top_p, top_idx = torch.topk(probs, k)
    cutoff = min(int(torch.searchsorted(torch.cumsum(top_p, 0), desired_logit_prob)) + 1, k)
    ids = top_idx[:cutoff]
    return LogitTargets(ids, top_p[:cutoff], logit_vectors(W_U, ids))

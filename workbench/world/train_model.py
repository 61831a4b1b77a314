"""Train the demo world's Qwen3 model from scratch on the generated corpus.

The loss is next-token cross-entropy with *circular label smoothing*: where the target is a
day, month or hue, 1 - 2s of the target mass stays on it and s goes to each calendar
neighbour. That makes neighbouring values' unembeddings similar and selects the k = 1
(calendar-order) circle (research note geometry.md §5.3).
"""

import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from workbench.world import language as lang
from workbench.world.generator import Sentence
from workbench.world.tokenizer import BOS_ID, EOS_ID, PAD_ID

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of the demo model (a Qwen3ForCausalLM)."""

    n_layers: int = 4
    """Transformer blocks."""
    d_model: int = 128
    """Residual stream width."""
    n_heads: int = 4
    """Query heads."""
    n_kv_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    head_dim: int = 32
    """Width of one attention head."""
    d_mlp: int = 384
    """MLP hidden width."""
    tie_embeddings: bool = False
    """Share the token embedding and the unembedding."""

    def hf_config(self, vocab_size: int) -> Qwen3Config:
        """The transformers config for this shape."""
        # rope_theta / torch_dtype: transformers 4.57 reads them; 5 still accepts them as legacy
        # kwargs but its typed signature no longer lists them, hence the ignore
        return Qwen3Config(  # type: ignore[call-arg]
            vocab_size=vocab_size, hidden_size=self.d_model, intermediate_size=self.d_mlp,
            num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_kv_heads, head_dim=self.head_dim, max_position_embeddings=64,
            rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=self.tie_embeddings,
            bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, use_cache=True,
            attention_bias=False, attention_dropout=0.0, use_sliding_window=False,
            architectures=["Qwen3ForCausalLM"], torch_dtype="float32")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation of the demo model."""

    steps: int = 1200
    """Optimizer steps."""
    batch_size: int = 256
    """Sentences per step."""
    lr: float = 3e-3
    """Peak learning rate (AdamW)."""
    warmup: int = 100
    """Linear warm-up steps."""
    final_lr_frac: float = 0.05
    """Cosine decay ends at lr * final_lr_frac."""
    weight_decay: float = 1.0
    """AdamW weight decay (matrices only). At 1.0 the composed two-hop path survived training
    (held-out p(correct) >= 0.99 in our runs) where 0.5 sometimes lost it to memorised answers."""
    smoothing: float = 0.1
    """Circular label smoothing: mass put on each calendar neighbour of a cyclic target."""
    answer_weight: float = 4.0
    """Loss weight of a task sentence's answer token (other tokens weigh 1)."""
    seed: int = 0
    """Seeds the initialisation and the batch order."""


def encode_corpus(sentences: list[Sentence], tokenizer: PreTrainedTokenizerFast) -> tuple[Tensor, Tensor]:
    """Sentences -> (ids `(n, max_len)`: BOS + words right-padded with PAD, answer position
    `(n,)`: index in ids of each sentence's answer token, -1 if it has none). No EOS: prompts
    never contain one, so the model is not trained on it."""
    vocab = tokenizer.get_vocab()
    rows = [[BOS_ID, *(vocab[w] for w in s.words)] for s in sentences]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows], dtype=torch.long)  # (n, max_len)
    answer_pos = torch.tensor([-1 if s.answer_pos is None else s.answer_pos + 1 for s in sentences])  # (n,)
    return ids, answer_pos


def neighbour_table(tokenizer: PreTrainedTokenizerFast) -> Tensor:
    """`(d_vocab, 2)`: each token's previous and next calendar neighbour (itself if not cyclic)."""
    vocab = tokenizer.get_vocab()
    table = torch.arange(len(vocab)).unsqueeze(1).repeat(1, 2)  # (d_vocab, 2)
    for values, _, _ in lang.FAMILIES.values():
        p = len(values)
        for i, v in enumerate(values):
            table[vocab[v], 0] = vocab[values[(i - 1) % p]]
            table[vocab[v], 1] = vocab[values[(i + 1) % p]]
    return table


def smoothed_nll(logits: Tensor, targets: Tensor, neighbours: Tensor, smoothing: float,
                 weights: Tensor | None = None) -> Tensor:
    """Circular-label-smoothed NLL: the mean, or with `weights` the weighted sum.
    logits `(n, d_vocab)`, targets, weights `(n,)`."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (n, d_vocab)
    nb = neighbours[targets]  # (n, 2)
    cyclic = (nb[:, 0] != targets).float()  # (n,)
    side = smoothing * cyclic  # (n,)
    own = logp.gather(1, targets[:, None]).squeeze(1)  # (n,)
    near = logp.gather(1, nb).sum(dim=1)  # (n,)
    nll = -((1 - 2 * side) * own + side * near)  # (n,)
    if weights is None:
        return nll.mean()
    return (nll * weights).sum()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr * final_lr_frac."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.final_lr_frac + (1 - cfg.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def build_model(model_cfg: ModelConfig, vocab_size: int, seed: int) -> Qwen3ForCausalLM:
    """A freshly initialised model; the initialisation depends only on `seed`."""
    torch.manual_seed(seed)
    hf_cfg = model_cfg.hf_config(vocab_size)
    hf_cfg._attn_implementation = "sdpa"
    return Qwen3ForCausalLM(hf_cfg)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


def token_weights(batch: Tensor, answer_pos: Tensor, answer_weight: float) -> Tensor:
    """Loss weight of each target `(batch, n_pos - 1)`: 0 on padding, `answer_weight` on a
    sentence's answer token, else 1."""
    target_pos = torch.arange(1, batch.shape[1])[None, :]  # (1, n_pos - 1)
    weights = 1.0 + (answer_weight - 1.0) * (target_pos == answer_pos[:, None]).float()  # (batch, n_pos - 1)
    return weights * (batch[:, 1:] != PAD_ID).float()


def train_step(model: Qwen3ForCausalLM, batch: Tensor, answer_pos: Tensor, neighbours: Tensor,
               cfg: TrainConfig, n_chunks: int = 2) -> Tensor:
    """Forward + backward on one batch `(batch, max_len)` with answer positions `(batch,)`;
    returns the loss. The batch is split by sentence length into `n_chunks` forward passes so
    that short sentences are not padded to the longest one."""
    lengths = (batch != PAD_ID).sum(dim=1)  # (batch,)
    order = lengths.argsort()
    total = token_weights(batch, answer_pos, cfg.answer_weight).sum()
    loss_sum = torch.zeros(())
    for rows in order.chunk(n_chunks):
        chunk = batch[rows, : int(lengths[rows].max())]  # (chunk, n_pos)
        weights = token_weights(chunk, answer_pos[rows], cfg.answer_weight)  # (chunk, n_pos - 1)
        hidden = model.model(input_ids=chunk).last_hidden_state  # (chunk, n_pos, d_model)
        keep = weights > 0
        logits = model.lm_head(hidden[:, :-1][keep])  # (n_tokens, d_vocab)
        loss = smoothed_nll(logits, chunk[:, 1:][keep], neighbours, cfg.smoothing, weights[keep]) / total
        loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def train_model(model: Qwen3ForCausalLM, ids: Tensor, answer_pos: Tensor, neighbours: Tensor,
                cfg: TrainConfig, *, progress: bool = False) -> list[float]:
    """Train in place on rows of `ids` `(n, max_len)` (answer positions `(n,)`) sampled with a
    seeded generator; returns the loss every 50 steps."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train model", total=cfg.steps, disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        rows = torch.randint(0, ids.shape[0], (cfg.batch_size,), generator=gen)  # (batch,)
        loss = train_step(model, ids[rows], answer_pos[rows], neighbours, cfg)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == cfg.steps - 1:
            losses.append(float(loss))
            bar.set_postfix(loss=f"{float(loss):.3f}")
            logger.debug("step %d loss %.4f (%.0fs)", step, float(loss), time.perf_counter() - t0)
    model.eval()
    return losses


@torch.no_grad()
def predict_next(model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str],
                 batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Top-1 next-token id and its probability for each prompt (BOS + words)."""
    tops, probs = [], []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True)
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        last = enc["attention_mask"].sum(dim=1) - 1  # (batch,)
        final = logits[torch.arange(len(last)), last].float().softmax(dim=-1)  # (batch, d_vocab)
        p, top = final.max(dim=-1)
        tops.append(top)
        probs.append(p)
    return torch.cat(tops), torch.cat(probs)


def accuracy(model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, rows: list[dict[str, object]]) -> float:
    """Top-1 accuracy of the model on prompt rows ({"prompt", "answer", ...})."""
    if not rows:
        return float("nan")
    top, _ = predict_next(model, tokenizer, [str(r["prompt"]) for r in rows])
    vocab = tokenizer.get_vocab()
    answers = torch.tensor([vocab[str(r["answer"])] for r in rows])
    return float((top == answers).float().mean())

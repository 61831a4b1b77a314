"""Per-feature ground truth of a demo world: which known variable each transcoder feature carries.

The truth is computed from what the generator knows, never from clustering and never from the
labels (:mod:`workbench.world.labels` reads only each feature's top 48 activations on another
corpus; the truth reads every activation of a held-out corpus plus the weights). The procedure,
per feature (thresholds in :class:`TruthConfig`; data/world/README.md states it in prose):

1. **Corpus.** A fresh sample of the generator on its own RNG stream ("truth": never used to train
   the model or the transcoders, nor to make the labels) plus the full sentence of every held-out
   evaluation prompt. Each token row (positions >= 1) carries its word, its sentence's task, the
   *input variable* of its word (family and value: day / month / hue / offset (number words) /
   city / region / capital) and, where the next word is the sentence's answer, the *output
   variable* of that answer.
2. **Dead.** Fewer than ``min_fires`` firing rows: side "none", no family.
3. **Family by coverage.** The share of the feature's activation energy (the sum of its squared
   activations: every row counts, strong activations count most, as in a top-activation reading)
   on rows where a variable (side, family) is defined. The best one, if it holds at least
   ``family_coverage``, gives ``side`` ("output" or "input") and ``family`` (ties: output first).
4. **Value by tuning curve.** The feature's mean activation for each value of that family
   (zeros included). Non-cyclic families: the peak is the value when it holds at least
   ``value_share`` of the curve's total. Cyclic families (day, month, hue): the peak is the value
   when the curve's circular resultant length is at least ``cyclic_selectivity``.
5. **Otherwise a token feature**, when one word holds ``word_share`` of the energy (side "input",
   ``value`` = the word), **else a context feature**, when one task holds ``task_share`` of it
   (side "context"), else side "none".
6. **Direct logit effect** of each output feature: its decoder row (for a CLT, the sum over the
   layers it writes to) through the final norm's gain and the unembedding, minus its mean over
   the vocabulary; ``top_logit`` is the token it promotes most (special tokens excluded).
"""

import dataclasses
import json
import logging
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tracer.io import atomic_path
from tracer.transcoders.base import Transcoders
from workbench.world import generator as gen
from workbench.world import language as lang
from workbench.world.transcoders import encode_layers

logger = logging.getLogger(__name__)

CYCLIC_FAMILIES = tuple(lang.FAMILIES)
FAMILY_OF_WORD_KIND = {"day": "day", "month": "month", "hue": "hue", "number": "offset", "city": "city",
                       "region": "region", "capital": "capital"}
SIDES = ("input", "output", "context", "none")


@dataclass(frozen=True, kw_only=True)
class TruthConfig:
    """The truth procedure's corpus and thresholds (see the module docstring)."""

    n_sentences: int = 96_000
    """Fresh generator sentences of the truth corpus (plus every held-out prompt's sentence). On the demo world,
    re-run on another corpus of the same size, 6,000 keep the purity key (side, family, non-cyclic value) of 90%
    of the live features, 24,000 of 94% and 96,000 of 97.6% (PLT; CLT alike): the thresholds cut a continuum,
    and a small corpus moves the features near them."""
    stream: str = "truth"
    """RNG stream of the truth corpus (the build uses "model", "transcoders" and "eval")."""
    min_fires: int = 5
    """A feature firing on fewer rows is dead."""
    family_coverage: float = 0.5
    """Share of activation energy on a variable's rows that makes it the feature's family."""
    value_share: float = 0.5
    """Non-cyclic families: share of the tuning curve at its peak that makes the peak the value."""
    cyclic_selectivity: float = 0.3
    """Cyclic families: circular resultant length of the tuning curve that makes the peak the value."""
    word_share: float = 0.5
    """Share of activation energy on one word that makes a token feature."""
    task_share: float = 0.5
    """Share of activation energy in one task that makes a context feature."""
    chunk: int = 4096
    """Token rows encoded at a time."""

    def __post_init__(self) -> None:
        for name in ("family_coverage", "value_share", "cyclic_selectivity", "word_share", "task_share"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {v!r}.")
        if self.n_sentences < 1 or self.min_fires < 1 or self.chunk < 1:
            raise ValueError(f"n_sentences, min_fires and chunk must be >= 1; got {self.n_sentences!r}, "
                             f"{self.min_fires!r}, {self.chunk!r}.")


@dataclass(frozen=True, kw_only=True)
class FeatureTruth:
    """What one feature carries, by the truth procedure."""

    layer: int
    """Layer (for a CLT: the layer it reads from)."""
    feature: int
    """Index in its layer."""
    side: str
    """"input" (reads its token), "output" (fires where the answer comes next), "context" or "none"."""
    family: str | None
    """day / month / hue / offset / city / region / capital, or None."""
    value: str | int | None
    """The family's value (offsets are ints), or for a token feature the word it reads, or None."""
    top_logit: str | None
    """Output features: the token their direct logit effect promotes most."""
    coverage: float
    """Share of activation energy on the rows of the deciding variable (family, word or task)."""
    selectivity: float | None
    """Family features: peak share (non-cyclic) or circular resultant length (cyclic) of the tuning curve."""
    n_fires: int
    """Rows of the truth corpus where the feature fires."""
    task: str | None = None
    """Context features: their task."""

    def to_record(self) -> dict[str, Any]:
        """The JSONL object (all fields)."""
        return {"layer": self.layer, "feature": self.feature, "side": self.side, "family": self.family,
                "value": self.value, "top_logit": self.top_logit, "coverage": round(self.coverage, 4),
                "selectivity": None if self.selectivity is None else round(self.selectivity, 4),
                "n_fires": self.n_fires, "task": self.task}

    def describe(self) -> str:
        """A short human-readable form ("say Dunhal", "day token, Friday", "'of' token")."""
        if self.side == "output":
            return f"say {self.value}" if self.value is not None else f"say a {self.family}"
        if self.side == "input" and self.family is not None:
            return f"{self.family} token" + (f", {self.value}" if self.value is not None else ", any value")
        if self.side == "input":
            return f"'{self.value}' token"
        if self.side == "context":
            return f"{self.task} context"
        return "no clear variable"


@dataclass(frozen=True, kw_only=True)
class TokenTable:
    """The generator's variables for every token row of a corpus (positions >= 1 of BOS + words)."""

    word: np.ndarray
    """(n_rows,) index into ``words``."""
    task: np.ndarray
    """(n_rows,) index into ``tasks``."""
    in_group: np.ndarray
    """(n_rows,) index into ``groups`` of the word's (family, value), -1 if it has none."""
    out_group: np.ndarray
    """(n_rows,) index into ``groups`` of the next word's (family, value) where it is the answer, else -1."""
    words: tuple[str, ...]
    """Word of each word index."""
    tasks: tuple[str, ...]
    """Task of each task index."""
    groups: tuple[tuple[str, str | int], ...]
    """(family, value) of each group index; the values of a family appear in their natural order."""

    @property
    def n_rows(self) -> int:
        """Token rows."""
        return int(self.word.shape[0])


def variable_groups(spec: lang.WorldSpec) -> tuple[tuple[str, str | int], ...]:
    """Every (family, value) the world knows, families in a fixed order, values in their order."""
    groups: list[tuple[str, str | int]] = []
    for family, (values, _, _) in lang.FAMILIES.items():
        groups += [(family, v) for v in values]
    groups += [("offset", n) for n in range(1, lang.MAX_OFFSET + 1)]
    groups += [("city", c) for c in spec.cities]
    groups += [("region", r) for r in spec.regions]
    groups += [("capital", spec.capital_of[r]) for r in spec.regions]
    return tuple(groups)


def word_variable(word: str, families: Mapping[str, tuple[str, int]] | None = None) -> tuple[str, str | int] | None:
    """(family, value) of a word with a known variable (numbers are offsets), else None; ``families`` is
    :func:`~workbench.world.language.token_families` (made afresh when not given)."""
    kind = (lang.token_families() if families is None else families).get(word)
    if kind is None:
        return None
    family = FAMILY_OF_WORD_KIND[kind[0]]
    return (family, kind[1]) if family == "offset" else (family, word)


def token_table(sentences: list[gen.Sentence], spec: lang.WorldSpec) -> TokenTable:
    """The variables of every token row of ``sentences`` (the row order of ``collect_mlp_io``)."""
    groups = variable_groups(spec)
    group_id = {g: i for i, g in enumerate(groups)}
    words: dict[str, int] = {}
    tasks: dict[str, int] = {}
    cols: dict[str, list[int]] = {"word": [], "task": [], "in": [], "out": []}
    families = lang.token_families()
    var_id: dict[str, int] = {}  # word -> its variable's group id, -1 for none (each word looked up once)

    def group_of(word: str) -> int:
        if word not in var_id:
            var = word_variable(word, families)
            var_id[word] = group_id.get(var, -1) if var is not None else -1
        return var_id[word]

    for s in sentences:
        for i, w in enumerate(s.words):
            cols["word"].append(words.setdefault(w, len(words)))
            cols["task"].append(tasks.setdefault(s.task, len(tasks)))
            cols["in"].append(group_of(w))
            cols["out"].append(group_of(s.words[i + 1]) if s.answer_pos == i + 1 else -1)
    as_arr = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}
    return TokenTable(word=as_arr["word"], task=as_arr["task"], in_group=as_arr["in"], out_group=as_arr["out"],
                      words=tuple(words), tasks=tuple(tasks), groups=groups)


def truth_corpus(spec: lang.WorldSpec, cfg: TruthConfig, seed: int) -> list[gen.Sentence]:
    """Fresh sentences of the "truth" stream plus the sentence of every held-out evaluation prompt."""
    sents = gen.sample_corpus(spec, cfg.n_sentences, seed=seed, stream=cfg.stream)
    for family, combos in spec.heldout_arith.items():
        sents += [gen.arith_sentence(family, s, o, d, t) for (s, o, d) in sorted(combos) for t in (0, 1)]
    sents += [gen.two_hop_sentence(spec, c, t) for c in sorted(spec.heldout_two_hop) for t in (0, 1)]
    random.Random(f"{cfg.stream}-order-{seed}").shuffle(sents)
    return sents


@dataclass(frozen=True, kw_only=True)
class TuningSums:
    """Sums of every feature's activation energy (a**2) and activation (a) over the token rows,
    grouped by each variable. L = n_layers, F = d_transcoder."""

    mass: Tensor
    """(L, F) total energy."""
    n_fires: Tensor
    """(L, F) firing rows."""
    by_word: Tensor
    """(L, F, n_words) energy per word."""
    by_task: Tensor
    """(L, F, n_tasks) energy per task."""
    by_in: Tensor
    """(L, F, n_groups) energy over rows of each input (family, value)."""
    by_out: Tensor
    """(L, F, n_groups) energy over rows of each output (family, value)."""
    act_in: Tensor
    """(L, F, n_groups) activation over rows of each input (family, value)."""
    act_out: Tensor
    """(L, F, n_groups) activation over rows of each output (family, value)."""
    rows_in: Tensor
    """(n_groups,) rows per input group."""
    rows_out: Tensor
    """(n_groups,) rows per output group."""


def _grouped(acts: Tensor, index: np.ndarray, n_groups: int) -> Tensor:
    """(L, F, n_groups) sums of ``acts`` (L, n, F) over rows with each index (-1 rows dropped)."""
    keep = torch.from_numpy(index >= 0)
    idx = torch.from_numpy(index)[keep]
    src = acts[:, keep].permute(0, 2, 1)  # (L, F, n_kept)
    out = torch.zeros(acts.shape[0], acts.shape[2], n_groups, dtype=torch.float64)
    return out.index_add_(2, idx, src.double())


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def tuning_sums(tc: Transcoders, X: Tensor, table: TokenTable, *, chunk: int = 4096) -> TuningSums:
    """Accumulate :class:`TuningSums` from MLP inputs ``X`` (L, n_rows, d_model), chunk by chunk.

    The activations are each layer's :meth:`~tracer.transcoders.base.TranscoderLayer.encode` of
    the rows (dense: every row is summed into its groups), as for the labels and the metrics."""
    n_layers, n_rows, _ = X.shape
    if n_rows != table.n_rows:
        raise ValueError(f"X rows must match the token table; got {n_rows} and {table.n_rows}.")
    d_tc = tc.d_transcoder
    n_groups = len(table.groups)
    zeros = lambda *s: torch.zeros(n_layers, d_tc, *s, dtype=torch.float64)  # noqa: E731
    acc = {"mass": zeros(), "fires": zeros(), "word": zeros(len(table.words)), "task": zeros(len(table.tasks)),
           "in": zeros(n_groups), "out": zeros(n_groups), "act_in": zeros(n_groups), "act_out": zeros(n_groups)}
    for sl in _chunks(n_rows, chunk):
        acts = encode_layers(tc, X[:, sl])  # (L, n, F)
        energy = acts.square()  # (L, n, F)
        acc["mass"] += energy.sum(dim=1).double()
        acc["fires"] += (acts > 0).sum(dim=1).double()
        acc["word"] += _grouped(energy, table.word[sl], len(table.words))
        acc["task"] += _grouped(energy, table.task[sl], len(table.tasks))
        acc["in"] += _grouped(energy, table.in_group[sl], n_groups)
        acc["out"] += _grouped(energy, table.out_group[sl], n_groups)
        acc["act_in"] += _grouped(acts, table.in_group[sl], n_groups)
        acc["act_out"] += _grouped(acts, table.out_group[sl], n_groups)
    count = lambda g: torch.from_numpy(np.bincount(g[g >= 0], minlength=n_groups)).double()  # noqa: E731
    return TuningSums(mass=acc["mass"], n_fires=acc["fires"].long(), by_word=acc["word"], by_task=acc["task"],
                      by_in=acc["in"], by_out=acc["out"], act_in=acc["act_in"], act_out=acc["act_out"],
                      rows_in=count(table.in_group), rows_out=count(table.out_group))


def direct_logit_effects(decoder: Tensor, gamma: Tensor, W_U: Tensor) -> Tensor:
    """Demeaned direct logit effect `(F, d_vocab)` of decoder rows `(F, d_model)` through the final
    norm gain `(d_model,)` and the unembedding `(d_vocab, d_model)`."""
    eff = (decoder * gamma) @ W_U.T  # (F, d_vocab)
    return eff - eff.mean(dim=1, keepdim=True)


def total_decoder(tc: Transcoders, layer: int) -> Tensor:
    """`(F, d_model)`: what each feature of ``layer`` adds to the final residual stream per unit
    activation (PLT: its decoder row; CLT: the sum over the layers it writes to)."""
    tl = tc.layers[layer]
    w = tl.decoder_rows(torch.arange(tl.d_transcoder), torch.float32)  # PLT (F, d); CLT (F, L - layer, d)
    return w if tc.kind == "plt" else w.sum(dim=1)


def top_logit_tokens(tc: Transcoders, layer: int, gamma: Tensor, W_U: Tensor,
                     vocab: list[str]) -> tuple[list[str], Tensor]:
    """(token promoted most by each feature's direct logit effect, effects `(F, d_vocab)`);
    special tokens are never chosen."""
    eff = direct_logit_effects(total_decoder(tc, layer), gamma, W_U)  # (F, d_vocab)
    special = torch.tensor([w in lang.SPECIAL_TOKENS for w in vocab])
    top = eff.masked_fill(special[None, :], -math.inf).argmax(dim=1)  # (F,)
    return [vocab[int(i)] for i in top], eff


def _family_slices(groups: tuple[tuple[str, str | int], ...]) -> dict[str, list[int]]:
    """family -> its group indices, in value order."""
    out: dict[str, list[int]] = {}
    for i, (family, _) in enumerate(groups):
        out.setdefault(family, []).append(i)
    return out


def tuning_value(curve: np.ndarray, values: list[str | int], family: str,
                 cfg: TruthConfig) -> tuple[str | int | None, float]:
    """(value or None, selectivity) of a tuning curve (mean activation per value; NaN where the
    corpus has no row of that value)."""
    seen = ~np.isnan(curve)
    c = np.where(seen, curve, 0.0)
    total = float(c.sum())
    if total <= 0:
        return None, 0.0
    peak = values[int(np.argmax(c))]
    if family in CYCLIC_FAMILIES:
        theta = 2 * np.pi * np.arange(len(c)) / len(c)
        sel = float(abs((c * np.exp(1j * theta)).sum()) / total)
        return (peak if sel >= cfg.cyclic_selectivity else None), sel
    sel = float(c.max() / total)
    return (peak if sel >= cfg.value_share else None), sel


def _best_family(cover: dict[tuple[str, str], float]) -> tuple[tuple[str, str] | None, float]:
    """The (side, family) with the largest coverage; output wins ties."""
    if not cover:
        return None, 0.0
    key = max(cover, key=lambda k: (cover[k], k[0] == "output", k[1]))
    return key, cover[key]


def decide_feature(layer: int, feature: int, sums: TuningSums, table: TokenTable, cfg: TruthConfig,
                   top_logit: str | None) -> FeatureTruth:
    """Steps 2-5 of the procedure for one feature."""
    l, f = layer, feature
    n_fires, mass = int(sums.n_fires[l, f]), float(sums.mass[l, f])
    truth = partial(FeatureTruth, layer=l, feature=f, n_fires=n_fires)
    if n_fires < cfg.min_fires or mass <= 0:
        return truth(side="none", family=None, value=None, top_logit=None, coverage=0.0,
                     selectivity=None)
    fams = _family_slices(table.groups)
    by = {"input": (sums.by_in, sums.act_in, sums.rows_in), "output": (sums.by_out, sums.act_out, sums.rows_out)}
    cover = {(side, fam): float(by[side][0][l, f, idx].sum()) / mass for side in by for fam, idx in fams.items()}
    key, share = _best_family(cover)
    if key is not None and share >= cfg.family_coverage:
        side, fam = key
        _, sums_s, rows_s = by[side]
        idx = fams[fam]
        rows = rows_s[idx].numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            curve = np.where(rows > 0, sums_s[l, f, idx].numpy() / rows, np.nan)
        value, sel = tuning_value(curve, [table.groups[i][1] for i in idx], fam, cfg)
        return truth(side=side, family=fam, value=value, coverage=share, selectivity=sel,
                     top_logit=top_logit if side == "output" else None)
    word_mass = sums.by_word[l, f]
    w = int(word_mass.argmax())
    if float(word_mass[w]) / mass >= cfg.word_share:
        return truth(side="input", family=None, value=table.words[w], top_logit=None,
                     coverage=float(word_mass[w]) / mass, selectivity=None)
    task_mass = sums.by_task[l, f]
    t = int(task_mass.argmax())
    t_share = float(task_mass[t]) / mass
    if t_share >= cfg.task_share:
        return truth(side="context", family=None, value=None, top_logit=None, coverage=t_share,
                     selectivity=None, task=table.tasks[t])
    return truth(side="none", family=None, value=None, top_logit=None, coverage=t_share,
                 selectivity=None)


def feature_truth(tc: Transcoders, X: Tensor, table: TokenTable, *, gamma: Tensor, W_U: Tensor,
                  vocab: list[str], cfg: TruthConfig | None = None) -> list[FeatureTruth]:
    """The truth of every feature of ``tc`` from MLP inputs ``X`` (L, n_rows, d_model) of the truth
    corpus (its rows described by ``table``), the final norm gain and the unembedding."""
    cfg = cfg or TruthConfig()
    sums = tuning_sums(tc, X, table, chunk=cfg.chunk)
    out: list[FeatureTruth] = []
    for layer in range(tc.n_layers):
        tops, _ = top_logit_tokens(tc, layer, gamma, W_U, vocab)
        out += [decide_feature(layer, f, sums, table, cfg, tops[f]) for f in range(len(tops))]
    return out


@torch.no_grad()
def world_truth(model: Any, tokenizer: Any, spec: lang.WorldSpec, transcoders: dict[str, Transcoders], *,
                seed: int, cfg: TruthConfig | None = None) -> dict[str, list[FeatureTruth]]:
    """The truth of every feature of each named transcoder set ("plt", "clt") of a world: builds the
    truth corpus, runs the model over it once and applies the procedure to each set."""
    from tracer.models import wrap_model
    from workbench.world.train_model import encode_corpus
    from workbench.world.train_transcoders import collect_mlp_io

    cfg = cfg or TruthConfig()
    sents = truth_corpus(spec, cfg, seed)
    table = token_table(sents, spec)
    X, _ = collect_mlp_io(model, encode_corpus(sents, tokenizer)[0])  # (L, n_rows, d_model)
    loaded = wrap_model(model)
    gamma = loaded.gain(loaded.final_norm, torch.float32)  # (d_model,)
    W_U = loaded.W_U.detach().float()  # (d_vocab, d_model)
    vocab = [""] * len(tokenizer.get_vocab())
    for word, i in tokenizer.get_vocab().items():
        vocab[i] = word
    logger.info("truth corpus: %d sentences, %d token rows", len(sents), table.n_rows)
    return {name: feature_truth(tc, X, table, gamma=gamma, W_U=W_U, vocab=vocab, cfg=cfg)
            for name, tc in transcoders.items()}


def save_truth(truths: list[FeatureTruth], path: str | Path) -> None:
    """Write one JSON object per feature, sorted by (layer, feature), atomically."""
    rows = sorted(truths, key=lambda t: (t.layer, t.feature))
    with atomic_path(Path(path)) as tmp:
        tmp.write_text("".join(json.dumps(t.to_record(), ensure_ascii=False) + "\n" for t in rows), encoding="utf-8")


def load_truth(path: str | Path) -> dict[tuple[int, int], FeatureTruth]:
    """Read a feature_truth_*.jsonl file back: {(layer, feature): FeatureTruth}."""
    out: dict[tuple[int, int], FeatureTruth] = {}
    names = {f.name for f in dataclasses.fields(FeatureTruth)}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        missing = {"layer", "feature", "side", "family", "value"} - set(rec)
        if missing:
            raise ValueError(f"{path} line {n} must have layer, feature, side, family, value; got no "
                             f"{sorted(missing)}.")
        t = FeatureTruth(**{k: v for k, v in rec.items() if k in names})
        out[(t.layer, t.feature)] = t
    return out

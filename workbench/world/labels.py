"""Automatic feature labels from top activations and the generator's known variables.

Each token of the label corpus is annotated with what the generator knows about it: its word,
the family and value of that word (day, month, hue, number, city, region, capital), the family
and value of the *next* word (what the model is about to say) and the sentence's task. A
feature's label summarises its top activations: "day token, peaks at Tue-Wed" (input side),
"say a month, peaks at Mar" or "say a capital" (output side), "'is' in two-hop" (token in
context), ... Cyclic peaks use the activation-weighted circular mean of the values.
"""

import logging
import math
from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from tracer.labels import FeatureLabel
from workbench.world import language as lang
from workbench.world.generator import Sentence
from workbench.world.language import WorldSpec

logger = logging.getLogger(__name__)

CYCLIC = {f: vals for f, (vals, _, _) in lang.FAMILIES.items()}
SHORT = {"day": [d[:3] for d in lang.DAYS], "month": [m[:3] for m in lang.MONTHS], "hue": list(lang.HUES)}
TASK_NAMES = {"day_arith": "day arithmetic", "month_arith": "month arithmetic", "hue_arith": "hue arithmetic",
              "two_hop": "two-hop", "one_hop_region": "city-region facts", "one_hop_capital": "capital facts",
              "same_region": "same-region facts", "cyclic_adjacent": "adjacency", "cyclic_sequence": "sequences",
              "cyclic_graded": "graded phrasing", "filler": "filler prose"}


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    """What the generator knows about one token of the label corpus."""

    word: str
    """The token."""
    next_word: str
    """The following token ("" at the end)."""
    task: str
    """The sentence's task."""
    context: str
    """A few words around it, the token in brackets: "... after [Friday] is"."""
    answer_next: bool = False
    """The next token is the sentence's answer (this is where the model says it)."""
    offset: int | None = None
    """Arithmetic sentences: the offset."""


def annotate(sentences: list[Sentence]) -> list[TokenInfo]:
    """One TokenInfo per position >= 1 of BOS + words (the order collect_mlp_io uses)."""
    fams = lang.token_families()
    infos: list[TokenInfo] = []
    for s in sentences:
        words = list(s.words)
        offset = None
        if s.task.endswith("_arith"):
            offset = next(fams[w][1] for w in words if fams.get(w, ("",))[0] == "number")
        for i, w in enumerate(words):
            before = words[max(0, i - 4):i]
            head = "... " if i > 4 else ""
            ctx = head + " ".join([*before, f"[{w}]", *words[i + 1:i + 2]])
            infos.append(TokenInfo(word=w, next_word=words[i + 1] if i + 1 < len(words) else "",
                                   task=s.task, context=ctx, answer_next=s.answer_pos == i + 1, offset=offset))
    return infos


def circular_peak(family: str, mass: dict[int, float]) -> tuple[str, float]:
    """("Tue-Wed" or "Tue", selectivity in [0, 1]) of an activation mass over the family's values."""
    p = len(CYCLIC[family])
    z = sum(m * complex(math.cos(2 * math.pi * c / p), math.sin(2 * math.pi * c / p)) for c, m in mass.items())
    total = sum(mass.values())
    if total <= 0:
        return "", 0.0
    pos = (math.atan2(z.imag, z.real) / (2 * math.pi) * p) % p
    lo = math.floor(pos)
    names = SHORT[family]
    if min(pos - lo, lo + 1 - pos) < 0.25:
        return names[round(pos) % p], abs(z) / total
    return f"{names[lo % p]}-{names[(lo + 1) % p]}", abs(z) / total


def _shares(keys: list[str], weights: list[float]) -> Counter[str]:
    c: dict[str, float] = {}
    for k, w in zip(keys, weights):
        c[k] = c.get(k, 0.0) + w
    total = sum(weights) or 1.0
    return Counter({k: v / total for k, v in c.items()})


def _family_label(kind: str, family: str, words: list[str], weights: list[float],
                  spec: WorldSpec) -> tuple[str, dict[str, object]]:
    """Label for a feature whose current (kind="token") or next (kind="say") word is in `family`."""
    fams = lang.token_families()
    noun = {"number": "number", "city": "city", "region": "region", "capital": "capital"}.get(family, family)
    prefix = f"{noun} token" if kind == "token" else f"say a {noun}"
    if family in CYCLIC:
        mass: dict[int, float] = {}
        for w, a in zip(words, weights):
            mass[fams[w][1]] = mass.get(fams[w][1], 0.0) + a
        peak, sel = circular_peak(family, mass)
        if sel < 0.3:
            return f"{prefix}, any value", {"family": family, "selectivity": round(sel, 3)}
        return f"{prefix}, peaks at {peak}", {"family": family, "peak": peak, "selectivity": round(sel, 3)}
    shares = _shares(words, weights).most_common(3)
    if shares[0][1] >= 0.6:
        top = shares[0][0]
        return (f"{noun} token: {top}" if kind == "token" else f"say {top}"), {"family": family, "value": top}
    if family == "city":
        region, r_share = _shares([spec.region_of.get(w, "?") for w in words], weights).most_common(1)[0]
        if r_share >= 0.7:
            verb = "city in" if kind == "token" else "say a city in"
            return f"{verb} {region}", {"family": family, "region": region}
    if family == "number":
        return f"{prefix}: " + "/".join(w.lower() for w, _ in shares[:2]), {"family": family}
    return prefix, {"family": family}


def _offset_note(infos: list[TokenInfo], weights: list[float]) -> str:
    """", offset 9" when one arithmetic offset dominates the contexts, else ""."""
    offsets = [str(i.offset) for i in infos]
    top, share = _shares(offsets, weights).most_common(1)[0]
    return f", offset {top}" if top != "None" and share >= 0.6 else ""


def label_feature(infos: list[TokenInfo], weights: list[float], spec: WorldSpec) -> tuple[str, dict[str, object]]:
    """A short label for one feature from its top-activating tokens and their activations."""
    fams = lang.token_families()
    cur_fam = _shares([fams.get(i.word, ("", 0))[0] for i in infos], weights)
    say_fam = _shares([fams.get(i.next_word, ("", 0))[0] if i.answer_next else "" for i in infos], weights)
    task, task_share = _shares([i.task for i in infos], weights).most_common(1)[0]
    fam, share = cur_fam.most_common(1)[0]
    nfam, nshare = say_fam.most_common(1)[0]
    where = f" in {TASK_NAMES.get(task, task)}" if task_share >= 0.7 else ""
    if nfam and nshare >= 0.7:
        members = [(i.next_word, w) for i, w in zip(infos, weights)
                   if i.answer_next and fams.get(i.next_word, ("",))[0] == nfam]
        label, extra = _family_label("say", nfam, [m[0] for m in members], [m[1] for m in members], spec)
        return label + where, {**extra, "side": "output", "task": task if where else None}
    if fam and share >= 0.7:
        members = [(i.word, w) for i, w in zip(infos, weights) if fams.get(i.word, ("",))[0] == fam]
        label, extra = _family_label("token", fam, [m[0] for m in members], [m[1] for m in members], spec)
        return label + where, {**extra, "side": "input", "task": task if where else None}
    word, w_share = _shares([i.word for i in infos], weights).most_common(1)[0]
    if w_share >= 0.6:
        note = _offset_note(infos, weights)
        return f"'{word}'{where or ' token'}{note}", {"side": "input", "word": word, "task": task if where else None}
    if where:
        return f"{TASK_NAMES.get(task, task)} context{_offset_note(infos, weights)}", {"side": "context", "task": task}
    top = [w for w, _ in _shares([i.word for i in infos], weights).most_common(3)]
    return "mixed: " + " / ".join(f"'{w}'" for w in top), {"side": "mixed"}


@torch.no_grad()
def label_layer(acts: Tensor, infos: list[TokenInfo], layer: int, spec: WorldSpec, *,
                top_n: int = 48, n_contexts: int = 5) -> list[FeatureLabel]:
    """Labels of every feature of one layer from its activations `(n_tokens, F)` on the corpus."""
    n_tokens, d_tc = acts.shape
    top_vals, top_idx = acts.topk(min(top_n, n_tokens), dim=0)  # (top_n, F)
    freq = (acts > 0).float().mean(dim=0)  # (F,)
    out: list[FeatureLabel] = []
    for f in range(d_tc):
        live = top_vals[:, f] > 0
        if not bool(live.any()):
            out.append(FeatureLabel(layer=layer, feature=f, label="dead (never active on the label corpus)",
                                    extra={"live": False, "freq": 0.0}))
            continue
        idx = top_idx[live, f].tolist()
        vals = top_vals[live, f].tolist()
        chosen = [infos[i] for i in idx]
        label, extra = label_feature(chosen, vals, spec)
        contexts = list(dict.fromkeys(i.context for i in chosen))[:n_contexts]
        extra = {k: v for k, v in extra.items() if v is not None}
        out.append(FeatureLabel(layer=layer, feature=f, label=label, top_contexts=tuple(contexts),
                                extra={**extra, "live": True, "freq": round(float(freq[f]), 5),
                                       "max_act": round(vals[0], 4)}))
    return out

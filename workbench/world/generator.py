"""Sentences of the demo world: templates, the training sampler and the evaluation prompt sets.

A sentence is a tuple of words (punctuation is its own word). Task sentences carry the
position of their *answer* word: the prompt is everything before it, the answer is the next
token. Prompts are tokenized as BOS + words (the tokenizer adds BOS).

Training sentences never use a held-out combination of :class:`~workbench.world.language.WorldSpec`;
the evaluation prompt sets list every combination with its split ("train" or "heldout").
"""

import logging
import random
from dataclasses import dataclass

from workbench.world import language as lang
from workbench.world.language import WorldSpec

logger = logging.getLogger(__name__)

ARITH_TASKS = {"day_arith": "day", "month_arith": "month", "hue_arith": "hue"}

# training mixture: task -> relative weight
DEFAULT_MIXTURE: dict[str, float] = {
    "day_arith": 0.18, "month_arith": 0.13, "hue_arith": 0.13,
    "cyclic_adjacent": 0.06, "cyclic_sequence": 0.04, "cyclic_graded": 0.04,
    "one_hop_region": 0.08, "one_hop_capital": 0.04, "two_hop": 0.08, "same_region": 0.03,
    "filler": 0.15,
}


@dataclass(frozen=True)
class Sentence:
    """One sentence of the language."""

    words: tuple[str, ...]
    """The words, punctuation included."""
    task: str
    """Which template family produced it (e.g. "day_arith", "two_hop", "filler")."""
    answer_pos: int | None = None
    """Index in `words` of the answer word; None for sentences without one."""
    template: int = 0
    """Which template of the task."""

    @property
    def prompt(self) -> str:
        """The words before the answer, space-joined (what the model sees after BOS)."""
        assert self.answer_pos is not None
        return " ".join(self.words[: self.answer_pos])

    @property
    def answer(self) -> str:
        """The answer word."""
        assert self.answer_pos is not None
        return self.words[self.answer_pos]


def _answered(words: list[str], task: str, answer: str, template: int) -> Sentence:
    pos = max(i for i, w in enumerate(words) if w == answer)
    return Sentence(tuple(words), task, pos, template)


def arith_sentence(family: str, start: int, offset: int, direction: str, template: int) -> Sentence:
    """"Two days after Friday is Sunday ." (template 0) or "Friday plus two days is Sunday ."."""
    values, unit, units = lang.FAMILIES[family]
    p = len(values)
    end = (start + offset) % p if direction == "after" else (start - offset) % p
    unit_word = unit if offset == 1 else units
    if template == 0:
        words = [lang.number_word(offset, capital=True), unit_word, direction, values[start], "is",
                 values[end], "."]
    else:
        op = "plus" if direction == "after" else "minus"
        words = [values[start], op, lang.number_word(offset, capital=False), unit_word, "is",
                 values[end], "."]
    return _answered(words, f"{family}_arith", values[end], template)


def adjacent_sentence(family: str, start: int, template: int) -> Sentence:
    """Adjacency and ordering: "The day after Monday is Tuesday .", "Monday comes before Tuesday ."."""
    values, unit, _ = lang.FAMILIES[family]
    p = len(values)
    nxt, prv = values[(start + 1) % p], values[(start - 1) % p]
    cur = values[start]
    forms = (
        (["The", unit, "after", cur, "is", nxt, "."], nxt),
        (["The", unit, "before", cur, "is", prv, "."], prv),
        ([cur, "comes", "before", nxt, "."], nxt),
        ([cur, "comes", "after", prv, "."], prv),
        (["The", unit, "next", "to", cur, "is", nxt, "."], nxt),
    )
    words, answer = forms[template % len(forms)]
    return _answered(list(words), "cyclic_adjacent", answer, template % len(forms))


def sequence_sentence(family: str, start: int, length: int) -> Sentence:
    """A run of consecutive values: "The week goes Friday , Saturday , Sunday ."."""
    values, _, _ = lang.FAMILIES[family]
    p = len(values)
    head = {"day": "week", "month": "year", "hue": "wheel"}[family]
    words = ["The", head, "goes"]
    for k in range(length):
        if k:
            words.append(",")
        words.append(values[(start + k) % p])
    words.append(".")
    return _answered(words, "cyclic_sequence", words[-2], 0)


def graded_sentence(family: str, start: int, step: int, template: int) -> Sentence:
    """Graded neighbour phrasing: "It was around Tuesday , maybe Wednesday .", "We met on Monday or
    Tuesday ."; `step` is +1 or -1."""
    values, _, _ = lang.FAMILIES[family]
    a, b = values[start], values[(start + step) % len(values)]
    prep = {"day": "on", "month": "in", "hue": "by"}[family]
    if family == "hue":
        forms = (["The", "colour", "was", "around", a, ",", "close", "to", b, "."],
                 ["The", "cloth", "was", "dyed", a, "or", b, "."])
    else:
        forms = (["It", "was", "around", a, ",", "maybe", b, "."],
                 ["We", "met", prep, a, "or", b, "."])
    return _answered(forms[template % 2], "cyclic_graded", b, template % 2)


def one_hop_region_sentence(spec: WorldSpec, city: str, template: int) -> Sentence:
    """City -> region: "Varn is in the region of Kessia .", or an address ("... to Varn Kessia .")
    where the region is predicted right at the city token."""
    region = spec.region_of[city]
    forms = ([city, "is", "in", "the", "region", "of", region, "."],
             ["The", "region", "containing", city, "is", region, "."],
             [city, "lies", "in", region, "."],
             ["The", "letter", "went", "to", city, region, "."],
             ["We", "travelled", "from", city, region, "."])
    return _answered(forms[template % 5], "one_hop_region", region, template % 5)


def one_hop_capital_sentence(spec: WorldSpec, region: str, template: int) -> Sentence:
    """Region -> capital: "The capital of Kessia is Ostrel ."."""
    capital = spec.capital_of[region]
    forms = ((["The", "capital", "of", region, "is", capital, "."], capital),
             ([capital, "is", "the", "capital", "of", region, "."], region),
             ([region, "has", "its", "capital", "at", capital, "."], capital))
    words, answer = forms[template % 3]
    return _answered(list(words), "one_hop_capital", answer, template % 3)


def two_hop_sentence(spec: WorldSpec, city: str, template: int) -> Sentence:
    """City -> capital through the region: "The capital of the region containing Varn is Ostrel ."."""
    capital = spec.capital_of[spec.region_of[city]]
    forms = (["The", "capital", "of", "the", "region", "containing", city, "is", capital, "."],
             [city, "is", "in", "a", "region", "whose", "capital", "is", capital, "."])
    return _answered(forms[template % 2], "two_hop", capital, template % 2)


def same_region_sentence(spec: WorldSpec, city: str, other: str, template: int) -> Sentence:
    """Two cities of one region: "Varn and Tolm are both in Kessia ."."""
    region = spec.region_of[city]
    if template % 2 == 0:
        return _answered([city, "and", other, "are", "both", "in", region, "."], "same_region", region, 0)
    return Sentence((city, "and", other, "are", "in", "the", "same", "region", "."), "same_region", None, 1)


_FILLER_FORMS = (
    lambda c, w: ["The", w["adj"], w["noun"], c(lang.VERBS), "the", w["noun2"], "."],
    lambda c, w: ["A", w["noun"], c(lang.VERBS), "a", w["adj"], w["noun2"], "near", "the", c(lang.PLACES), "."],
    lambda c, w: ["On", c(lang.DAYS), "the", w["noun"], c(lang.VERBS), "the", w["noun2"], "."],
    lambda c, w: ["In", c(lang.MONTHS), "the", c(lang.PLACES), "was", w["adj"], "."],
    lambda c, w: [w["person"], "painted", "the", w["noun"], c(lang.HUES), "."],
    lambda c, w: [w["person"], c(lang.MOTION), c(lang.ADVERBS), c(lang.PREPOSITIONS), "the", c(lang.PLACES), "."],
    lambda c, w: [w["person"], "travelled", "from", w["city"], "to", w["city2"], "."],
    lambda c, w: ["In", "the", c(lang.TIMES), "the", w["adj"], w["noun"], c(lang.VERBS), "a", w["noun2"], "."],
    lambda c, w: ["Every", c(lang.DAYS), w["person"], c(lang.VERBS), "the", w["noun"], "at", "the",
                  c(lang.PLACES), "."],
    lambda c, w: ["In", c(lang.MONTHS), "there", "was", c(lang.SEASON_WORDS), "in", w["city"], "."],
    lambda c, w: [w["person"], "and", w["person2"], c(lang.VERBS), "the", w["adj"], w["noun"], "."],
    lambda c, w: ["The", "sky", "turned", c(lang.HUES), "in", "the", c(lang.TIMES), "."],
    lambda c, w: [w["person"], c(lang.MOTION), "to", w["city"], "on", c(lang.DAYS), "."],
    lambda c, w: ["The", w["noun"], "was", w["adj"], "and", w["adj2"], "."],
    lambda c, w: ["Many", "people", "live", "in", w["city"], "."],
    lambda c, w: ["The", "road", "from", w["city"], "leads", "to", "the", c(lang.PLACES), "."],
)


def filler_sentence(rng: random.Random, spec: WorldSpec) -> Sentence:
    """Varied prose with no task answer; sometimes mentions a day, month, hue, city or person."""
    adj, adj2 = rng.sample(lang.ADJECTIVES, 2)
    noun, noun2 = rng.sample(lang.NOUNS, 2)
    person, person2 = rng.sample(lang.PEOPLE, 2)
    city, city2 = rng.sample(spec.cities, 2)
    slots = {"adj": adj, "adj2": adj2, "noun": noun, "noun2": noun2, "person": person,
             "person2": person2, "city": city, "city2": city2}
    i = rng.randrange(len(_FILLER_FORMS))
    return Sentence(tuple(_FILLER_FORMS[i](rng.choice, slots)), "filler", None, i)


class CorpusSampler:
    """Draws training sentences of a world; never a held-out combination or two-hop city."""

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self._combos = {f: spec.train_combos(f) for f in lang.FAMILIES}
        self._two_hop = [c for c in spec.cities if c not in spec.heldout_two_hop]
        self._mates = {c: [o for o in spec.cities if spec.region_of[o] == spec.region_of[c] and o != c]
                       for c in spec.cities}

    def sample(self, rng: random.Random, task: str) -> Sentence:
        """One training sentence of `task`."""
        spec = self.spec
        if task in ARITH_TASKS:
            family = ARITH_TASKS[task]
            start, offset, direction = rng.choice(self._combos[family])
            return arith_sentence(family, start, offset, direction, rng.randrange(2))
        family = rng.choice(tuple(lang.FAMILIES))
        p = len(lang.FAMILIES[family][0])
        if task == "cyclic_adjacent":
            return adjacent_sentence(family, rng.randrange(p), rng.randrange(5))
        if task == "cyclic_sequence":
            return sequence_sentence(family, rng.randrange(p), rng.randrange(3, 6))
        if task == "cyclic_graded":
            return graded_sentence(family, rng.randrange(p), rng.choice((1, -1)), rng.randrange(2))
        if task == "one_hop_region":
            return one_hop_region_sentence(spec, rng.choice(spec.cities), rng.randrange(5))
        if task == "one_hop_capital":
            return one_hop_capital_sentence(spec, rng.choice(spec.regions), rng.randrange(3))
        if task == "two_hop":
            return two_hop_sentence(spec, rng.choice(self._two_hop), rng.randrange(2))
        if task == "same_region":
            city = rng.choice(spec.cities)
            return same_region_sentence(spec, city, rng.choice(self._mates[city]), rng.randrange(2))
        if task == "filler":
            return filler_sentence(rng, spec)
        raise ValueError(f"task must be one of {sorted(DEFAULT_MIXTURE)}; got {task!r}.")


def sample_corpus(spec: WorldSpec, n: int, *, seed: int, stream: str = "train",
                  mixture: dict[str, float] | None = None) -> list[Sentence]:
    """`n` training sentences drawn from the mixture; `stream` names an independent RNG stream."""
    mix = DEFAULT_MIXTURE if mixture is None else mixture
    unknown = sorted(set(mix) - set(DEFAULT_MIXTURE))
    if unknown:
        raise ValueError(f"mixture tasks must be among {sorted(DEFAULT_MIXTURE)}; got {unknown!r}.")
    rng = random.Random(f"{stream}-{seed}")
    sampler = CorpusSampler(spec)
    tasks = rng.choices(list(mix), weights=list(mix.values()), k=n)
    return [sampler.sample(rng, t) for t in tasks]


def prompt_sets(spec: WorldSpec) -> dict[str, list[dict[str, object]]]:
    """Every evaluation prompt per task, with its answer and split ("train" or "heldout")."""
    sets: dict[str, list[dict[str, object]]] = {}
    for task, family in ARITH_TASKS.items():
        p = len(lang.FAMILIES[family][0])
        rows: list[dict[str, object]] = []
        for start, offset, direction in lang.all_combos(p):
            held = (start, offset, direction) in spec.heldout_arith[family]
            for template in (0, 1):
                s = arith_sentence(family, start, offset, direction, template)
                rows.append({"prompt": s.prompt, "answer": s.answer, "split": "heldout" if held else "train",
                             "template": template, "start": start, "offset": offset, "direction": direction})
        sets[task] = rows
    sets["two_hop"] = [_row(two_hop_sentence(spec, c, t), "heldout" if c in spec.heldout_two_hop else "train",
                            city=c) for c in spec.cities for t in (0, 1)]
    sets["one_hop_region"] = [_row(one_hop_region_sentence(spec, c, t), "train", city=c)
                              for c in spec.cities for t in (0, 1)]
    sets["one_hop_capital"] = [_row(one_hop_capital_sentence(spec, r, 0), "train", region=r)
                               for r in spec.regions]
    sets["cyclic_adjacent"] = [_row(adjacent_sentence(f, i, t), "train", family=f, start=i)
                               for f, (vals, _, _) in lang.FAMILIES.items()
                               for i in range(len(vals)) for t in (0, 1)]
    return sets


def _row(s: Sentence, split: str, **extra: object) -> dict[str, object]:
    return {"prompt": s.prompt, "answer": s.answer, "split": split, "template": s.template, **extra}

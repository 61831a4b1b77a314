"""The demo world's language: its word lists, cyclic families, fictional geography and splits.

Everything random about the world (which city lies in which region, which arithmetic
combinations are held out) is drawn from one seed in :func:`make_world`. The word lists
themselves are fixed, so the vocabulary is the same for every seed.
"""

import logging
import random
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
# colour-wheel order, 30 degrees apart
HUES = ("red", "orange", "amber", "yellow", "lime", "green", "teal", "cyan", "azure", "blue",
        "violet", "magenta")

# family name -> (ordered values, unit word singular, unit word plural)
FAMILIES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "day": (DAYS, "day", "days"),
    "month": (MONTHS, "month", "months"),
    "hue": (HUES, "hue", "hues"),
}

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven")

REGION_NAMES = ("Kessia", "Dravona", "Telmira", "Oskeny", "Virelia", "Bramor", "Calveth", "Ysteria",
                "Quenmar", "Lurania")
CAPITAL_NAMES = ("Ostrel", "Mirkos", "Halvane", "Teskar", "Corvalle", "Ambrin", "Velmora", "Dunhal",
                 "Rovask", "Sildra")
CITY_NAMES = ("Varn", "Tolm", "Brisca", "Hollin", "Edrik", "Maelo", "Pruna", "Serrat", "Calder", "Wenmo",
              "Ilsk", "Gorrin", "Ashtel", "Myrro", "Nuvik", "Orlen", "Pesca", "Randu", "Suvi", "Tarnel",
              "Ulmo", "Vesk", "Wyrd", "Yarrow", "Zell", "Abrin", "Belka", "Corra", "Dastin", "Elvo",
              "Fask", "Grell", "Hasko", "Irran", "Jessa", "Kolt", "Lumo", "Mirra", "Nesk", "Obrin",
              "Pelt", "Quarn", "Ristov", "Sable", "Tovin", "Uskel", "Vorra", "Wendal", "Arvo", "Bexley",
              "Cindral", "Dorne", "Esker", "Folly", "Gask", "Harrow", "Imber", "Jolt", "Kestrel", "Lorn",
              "Qesk", "Rilla", "Sobran", "Tevo", "Umbra", "Valt", "Wessan", "Xarno", "Yelm", "Zuri",
              "Arlo", "Brenn", "Cusk", "Dovra", "Estel", "Fenno", "Garra", "Helmo", "Istra", "Jorv")

# filler prose vocabulary
PEOPLE = ("Anna", "Boris", "Clara", "Dmitri", "Elena", "Felix", "Greta", "Hugo", "Iris", "Jonas",
          "Karin", "Leo", "Mara", "Nils", "Olga", "Pavel")
NOUNS = ("farmer", "baker", "child", "teacher", "sailor", "merchant", "doctor", "painter", "dog", "cat",
         "bird", "horse", "goat", "fox", "letter", "book", "song", "bread", "basket", "lamp", "door",
         "window", "stone", "tree", "cloud", "boat", "coat", "cup", "key", "map", "rope", "wheel",
         "cart", "bell", "drum", "kettle", "blanket", "ladder", "candle", "apple", "pear", "cheese")
PLACES = ("river", "road", "market", "house", "garden", "field", "bridge", "tower", "village", "forest",
          "hill", "lake", "harbour", "square", "mill", "school", "kitchen", "barn", "station", "shore")
ADJECTIVES = ("old", "young", "small", "quiet", "bright", "heavy", "warm", "cold", "tall", "slow",
              "quick", "happy", "tired", "busy", "clever", "gentle", "loud", "shy", "proud", "kind",
              "strange", "empty", "narrow", "wide")
VERBS = ("carried", "found", "saw", "painted", "built", "sold", "bought", "opened", "closed", "watched",
         "followed", "cleaned", "fixed", "dropped", "lifted", "pulled", "pushed", "washed", "borrowed",
         "mended", "counted", "hid", "liked", "wanted")
MOTION = ("walked", "ran", "sailed", "rode", "drove", "wandered", "hurried", "climbed")
PREPOSITIONS = ("to", "near", "across", "behind", "under", "beside", "past", "through")
ADVERBS = ("slowly", "quickly", "quietly", "happily", "carefully", "early", "late", "often")
TIMES = ("morning", "evening", "night", "noon", "afternoon")
SEASON_WORDS = ("rain", "snow", "wind", "sun", "frost", "fog")

# every template word that is not in a list above
FUNCTION_WORDS = ("The", "the", "A", "a", "is", "was", "of", "in", "In", "On", "on", "at", "and",
                  "or", "after", "before", "comes", "plus", "minus", "capital", "region", "containing",
                  "whose", "lies", "has", "its", "same", "both", "are", "It", "around", "maybe", "We",
                  "met", "next", "week", "year", "goes", "from", "travelled", "there", "colour",
                  "close", "cloth", "dyed", "by", "Many", "people", "live", "leads", "Every", "sky",
                  "turned", "went")
PUNCTUATION = (".", ",")

SPECIAL_TOKENS = ("<unk>", "<bos>", "<pad>", "<eos>")


def number_word(n: int, *, capital: bool) -> str:
    """The number word for n in 1..11 ("two" / "Two")."""
    word = NUMBERS[n]
    return word.capitalize() if capital else word


@dataclass(frozen=True, kw_only=True)
class WorldSpec:
    """One seeded instance of the language: its geography and its held-out splits."""

    seed: int
    """The seed everything random here was drawn from."""
    regions: tuple[str, ...]
    """Region names, in a fixed order."""
    capital_of: dict[str, str]
    """region -> its capital."""
    region_of: dict[str, str]
    """city -> the region containing it (capitals are not in this map)."""
    heldout_arith: dict[str, frozenset[tuple[int, int, str]]]
    """family -> held-out (start index, offset, direction) combinations; direction is
    "after" or "before". No sentence of any arithmetic template uses them in training."""
    heldout_two_hop: frozenset[str]
    """cities whose two-hop sentences (city -> capital) never appear in training; their one-hop
    facts (city -> region, region -> capital) do."""
    cities: tuple[str, ...] = field(default=())
    """All cities, region by region."""

    def train_combos(self, family: str) -> list[tuple[int, int, str]]:
        """The (start, offset, direction) combinations that training sentences may use."""
        p = len(FAMILIES[family][0])
        return [c for c in all_combos(p) if c not in self.heldout_arith[family]]


def all_combos(p: int) -> list[tuple[int, int, str]]:
    """Every (start, offset, direction) with offsets 1..MAX_OFFSET, in a fixed order."""
    return [(s, o, d) for d in ("after", "before") for o in range(1, MAX_OFFSET + 1) for s in range(p)]


MAX_OFFSET = 11
"""Arithmetic offsets run 1..MAX_OFFSET for every family (for days they wrap more than once)."""


HELDOUT_FRAC = 0.10
"""Share of each cyclic family's arithmetic combinations (offsets >= 2) held out of training by default."""


def make_world(seed: int, *, n_regions: int = 10, cities_per_region: int = 8,
               heldout_frac: float = HELDOUT_FRAC, heldout_cities_per_region: int = 1) -> WorldSpec:
    """Draw the world's geography and held-out splits from `seed`.

    Held-out arithmetic combinations use offsets >= 2 only, so that no held-out answer is also
    stated by an adjacency sentence ("the day after Monday is Tuesday").
    """
    if not 1 <= n_regions <= len(REGION_NAMES):
        raise ValueError(f"n_regions must be in 1..{len(REGION_NAMES)}; got {n_regions!r}.")
    if not 0.0 < heldout_frac <= 0.5:
        raise ValueError(f"heldout_frac must be in (0, 0.5] (a share of the combinations held out of training); got "
                         f"{heldout_frac!r}.")
    if n_regions * cities_per_region > len(CITY_NAMES):
        raise ValueError(f"n_regions * cities_per_region must be <= {len(CITY_NAMES)}; "
                         f"got {n_regions * cities_per_region!r}.")
    rng = random.Random(f"world-{seed}")
    regions = tuple(REGION_NAMES[:n_regions])
    capitals = list(CAPITAL_NAMES[:n_regions])
    rng.shuffle(capitals)
    pool = list(CITY_NAMES[: n_regions * cities_per_region])
    rng.shuffle(pool)
    region_of: dict[str, str] = {}
    heldout_cities: set[str] = set()
    cities: list[str] = []
    for r_i, region in enumerate(regions):
        members = pool[r_i * cities_per_region:(r_i + 1) * cities_per_region]
        cities.extend(members)
        region_of.update({c: region for c in members})
        heldout_cities.update(rng.sample(members, heldout_cities_per_region))
    heldout_arith: dict[str, frozenset[tuple[int, int, str]]] = {}
    for family, (values, _, _) in FAMILIES.items():
        eligible = [c for c in all_combos(len(values)) if c[1] >= 2]
        n_held = max(1, round(heldout_frac * len(eligible)))
        heldout_arith[family] = frozenset(rng.sample(eligible, n_held))
    return WorldSpec(seed=seed, regions=regions, capital_of=dict(zip(regions, capitals)),
                     region_of=region_of, heldout_arith=heldout_arith,
                     heldout_two_hop=frozenset(heldout_cities), cities=tuple(cities))


def vocabulary() -> list[str]:
    """All tokens, specials first (ids 0..3: <unk>, <bos>, <pad>, <eos>), then a fixed order."""
    words: list[str] = list(SPECIAL_TOKENS) + list(PUNCTUATION)
    groups = (NUMBERS[1:], tuple(w.capitalize() for w in NUMBERS[1:]), DAYS, MONTHS, HUES,
              tuple(w for _, (_, s, p) in FAMILIES.items() for w in (s, p)), REGION_NAMES,
              CAPITAL_NAMES, CITY_NAMES, PEOPLE, NOUNS, PLACES, ADJECTIVES, VERBS, MOTION,
              PREPOSITIONS, ADVERBS, TIMES, SEASON_WORDS, FUNCTION_WORDS)
    seen = set(words)
    for group in groups:
        for w in group:
            if w not in seen:
                seen.add(w)
                words.append(w)
    return words


def token_families() -> dict[str, tuple[str, int]]:
    """word -> (family, index) for every token with a known variable (cyclic values, numbers,
    regions, capitals, cities)."""
    out: dict[str, tuple[str, int]] = {}
    for family, (values, _, _) in FAMILIES.items():
        out.update({v: (family, i) for i, v in enumerate(values)})
    for i, w in enumerate(NUMBERS[1:], start=1):
        out[w] = ("number", i)
        out[w.capitalize()] = ("number", i)
    out.update({w: ("region", i) for i, w in enumerate(REGION_NAMES)})
    out.update({w: ("capital", i) for i, w in enumerate(CAPITAL_NAMES)})
    out.update({w: ("city", i) for i, w in enumerate(CITY_NAMES)})
    return out

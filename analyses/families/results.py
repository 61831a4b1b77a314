"""The result of :class:`~analyses.families.FeatureFamilies`: families, their hierarchies, the
kNN graph, a query API and a dendrogram display.

Row order: every per-feature array has one entry per fitted feature, in the order of the rows
of the ``X`` given to ``fit``; ``layer[i]`` and ``feature[i]`` name row i.
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from analyses.base import check_number
from analyses.display import Display
from analyses.results import check_shapes, register_result

_LABEL_TAIL = re.compile(r"\s*(\[.*\]|\(.*\))\s*$")
_STEM_END = re.compile(r",| peaks at | in (?=[a-z])")
_QUOTED = re.compile(r"'[^']*'")


def label_stem(label: str) -> str:
    """The part of a label that names a kind of feature: "say a day, peaks at Mon in day
    arithmetic" -> "say a day"; bracketed notes are dropped."""
    text = _LABEL_TAIL.sub("", label).strip()
    quoted = [m.span() for m in _QUOTED.finditer(text)]  # a quoted token (',') never ends the stem
    end = next((m.start() for m in _STEM_END.finditer(text) if not any(a < m.start() < b for a, b in quoted)),
               len(text))
    return text[:end].strip()


def family_label(member_labels: list[str | None]) -> str | None:
    """"<most common stem> (<count>/<size>)" over the members that have a label, else None."""
    stems = [label_stem(lab) for lab in member_labels if lab]
    if not stems:
        return None
    stem, count = sorted(Counter(stems).items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return f"{stem} ({count}/{len(member_labels)})"


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class Family:
    """One family: its id, label and summary (members are rows of the result's arrays)."""

    SCHEMA_VERSION: ClassVar[int] = 1
    id: int
    """Family id (index into ``FeatureFamiliesResult.families``)."""
    size: int
    """Number of member features."""
    layers: list[int]
    """Layers of its members."""
    label: str | None
    """Made from the members' labels (most common stem, with its count); None without labels."""
    mean_cosine: float
    """Mean pairwise decoder cosine of the members."""
    hierarchy_start: int
    """First row of its linkage in ``FeatureFamiliesResult.hierarchy`` (members in row order)."""
    hierarchy_stop: int
    """One past its last linkage row (start == stop: no hierarchy)."""
    tokens: list[int] | None = None
    """A token-class family: the token ids of the class its members read or predict (None otherwise)."""
    token_sides: list[str] | None = None
    """A token-class family: whether its members read the class's tokens, predict them, or both."""


@register_result
@dataclass(frozen=True, kw_only=True, eq=False)
class FeatureFamiliesResult:
    """Families over a dictionary, with the kNN graph they were read from."""

    SCHEMA_VERSION: ClassVar[int] = 1
    layer: np.ndarray
    """(n_features,) int64: each fitted feature's layer."""
    feature: np.ndarray
    """(n_features,) int64: its index within the layer."""
    family: np.ndarray
    """(n_features,) int64: its family id, -1 for none."""
    knn_index: np.ndarray
    """(n_features, k) int64: decoder-cosine neighbours (row indices; -1 padding)."""
    knn_cosine: np.ndarray
    """(n_features, k) float32: their cosines."""
    hierarchy: np.ndarray
    """(n_links, 4) float64: every family's scipy linkage, stacked (see Family.hierarchy_start)."""
    families: list[Family]
    """The families, by id."""
    labels: list[str | None] | None = None
    """Each feature's label, when labels were given."""
    params: dict[str, Any] = field(default_factory=dict)
    """The estimator's parameters."""

    def __post_init__(self) -> None:
        """Refuse an inconsistent result (a hand-edited or damaged file): per-feature arrays of other
        lengths, ids outside the families or rows, families that disagree with ``family``."""
        check_shapes(self, {"layer": (None,), "knn_index": (None, None), "hierarchy": (None, 4)})
        n, k, n_fam = len(self.layer), int(np.shape(self.knn_index)[1]), len(self.families)
        check_shapes(self, {"feature": (n,), "family": (n,), "knn_index": (n, k), "knn_cosine": (n, k)},
                     kinds={"layer": "iu", "feature": "iu"})
        for name, hi in (("family", n_fam), ("knn_index", n)):
            ids = np.asarray(getattr(self, name))
            lo_hi = (int(ids.min()), int(ids.max())) if ids.size and np.issubdtype(ids.dtype, np.integer) else None
            if not np.issubdtype(ids.dtype, np.integer) or (lo_hi and not -1 <= lo_hi[0] <= lo_hi[1] < hi):
                raise ValueError(f"FeatureFamiliesResult {name} must hold integers in [-1, {hi}) (-1: none); got "
                                 f"dtype {ids.dtype}, min and max {lo_hi}. The result is inconsistent.")
        sizes = np.bincount(self.family[self.family >= 0], minlength=n_fam)  # (n_fam,)
        n_links = len(self.hierarchy)
        for i, fam in enumerate(self.families):
            if (fam.id, fam.size) != (i, sizes[i]) or not 0 <= fam.hierarchy_start <= fam.hierarchy_stop <= n_links:
                raise ValueError(f"FeatureFamiliesResult families[{i}] must have id {i}, size {sizes[i]} (its rows in "
                                 f"family) and hierarchy rows within [0, {n_links}]; got id {fam.id}, size {fam.size}, "
                                 f"rows {fam.hierarchy_start}:{fam.hierarchy_stop}. The result is inconsistent.")
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"FeatureFamiliesResult labels must have one entry per feature ({n}); got "
                             f"{len(self.labels)}. The result is inconsistent.")

    # -------------------------------------------------------------- queries

    def family_by_id(self, family_id: int) -> Family:
        """The family with this id (a ``ValueError`` names the valid range)."""
        if isinstance(family_id, bool) or not isinstance(family_id, (int, np.integer)) \
                or not 0 <= family_id < len(self.families):
            raise ValueError(f"family_id must be an integer in [0, {len(self.families)}); got {family_id!r}.")
        return self.families[int(family_id)]

    def _row(self, layer: int, feature: int) -> int:
        hit = np.flatnonzero((self.layer == layer) & (self.feature == feature))
        if hit.size == 0:
            raise ValueError(f"(layer, feature) must be a fitted feature; got ({layer!r}, {feature!r}). "
                             f"Fitted layers: {sorted(set(self.layer.tolist()))}.")
        return int(hit[0])

    def members(self, family_id: int) -> list[tuple[int, int]]:
        """(layer, feature) of each member of a family, in row order."""
        self.family_by_id(family_id)
        rows = np.flatnonzero(self.family == family_id)
        return [(int(self.layer[r]), int(self.feature[r])) for r in rows]

    def family_of(self, layer: int, feature: int) -> Family | None:
        """The family of a feature, or None when it is in none."""
        fam = int(self.family[self._row(layer, feature)])
        return None if fam < 0 else self.families[fam]

    def neighbors(self, layer: int, feature: int, k: int | None = None) -> list[tuple[int, int, float]]:
        """Nearest features by decoder cosine: (layer, feature, cosine), best first; at most ``k`` (>= 1)
        of them, or all stored ones when ``k`` is None."""
        if k is not None:
            check_number("k", k, lo=1, integer=True)
        r = self._row(layer, feature)
        idx, cos = self.knn_index[r], self.knn_cosine[r]
        out = [(int(self.layer[j]), int(self.feature[j]), float(c)) for j, c in zip(idx, cos) if j >= 0]
        return out if k is None else out[:k]

    def search(self, text: str, *, min_share: float = 0.25) -> list[Family]:
        """Families whose label, or at least ``min_share`` of whose members' labels, contain
        ``text`` (case-insensitive, whole words first), best share first."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty string; got {text!r}.")
        check_number("min_share", min_share, lo=0.0, hi=1.0)
        pattern = re.compile(rf"\b{re.escape(text.strip().lower())}")
        scored: list[tuple[float, int]] = []
        for fam in self.families:
            rows = np.flatnonzero(self.family == fam.id)
            hits = sum(1 for r in rows if self.labels and (lab := self.labels[r]) and pattern.search(lab.lower()))
            share = hits / max(len(rows), 1)
            if share >= min_share or (fam.label and pattern.search(fam.label.lower())):
                scored.append((share, fam.id))
        return [self.families[i] for _, i in sorted(scored, key=lambda s: (-s[0], s[1]))]

    def linkage(self, family_id: int) -> np.ndarray:
        """The family's scipy linkage `(size - 1, 4)` over its members in row order."""
        fam = self.family_by_id(family_id)
        return self.hierarchy[fam.hierarchy_start:fam.hierarchy_stop]

    def to_json_families(self) -> list[dict[str, Any]]:
        """``[{"layer", "features", "label"}]``: one layer -> int layer and feature indices;
        several -> the list of layers and [layer, feature] pairs; a token-class family adds ``tokens`` (ids)
        and ``token_sides``."""
        out = []
        for fam in self.families:
            members = self.members(fam.id)
            if len(fam.layers) == 1:
                row: dict[str, Any] = {"layer": fam.layers[0], "features": [f for _, f in members], "label": fam.label}
            else:
                row = {"layer": fam.layers, "features": [[lay, f] for lay, f in members], "label": fam.label}
            if fam.tokens is not None:
                row.update(tokens=fam.tokens, token_sides=fam.token_sides)
            out.append(row)
        return out


class FamilyDendrogramDisplay(Display):
    """The hierarchy inside one family as a dendrogram (leaves = members)."""

    figsize = (7.0, 4.0)

    def __init__(self, *, linkage: np.ndarray, leaf_names: list[str], title: str = "") -> None:
        self.linkage = linkage
        self.leaf_names = leaf_names
        self.title = title

    @classmethod
    def from_result(cls, result: FeatureFamiliesResult, family_id: int) -> "FamilyDendrogramDisplay":
        """Leaves named "L<layer>/<feature>" plus the label when there is one; ``family_id`` must be in
        ``[0, len(result.families))``."""
        fam = result.family_by_id(family_id)
        if fam.size > 1 and fam.hierarchy_stop - fam.hierarchy_start != fam.size - 1:
            raise ValueError(f"family {fam.id} must have a hierarchy to draw its dendrogram; got none for its "
                             f"{fam.size} members (families larger than max_hierarchy get none). Refit with a "
                             "larger max_hierarchy.")
        names = []
        for r in np.flatnonzero(result.family == family_id):
            name = f"L{int(result.layer[r])}/{int(result.feature[r])}"
            if result.labels and result.labels[r]:
                name += f" {label_stem(str(result.labels[r]))[:28]}"
            names.append(name)
        return cls(linkage=result.linkage(family_id), leaf_names=names,
                   title=f"family {fam.id}: {fam.label or ''} ({fam.size} features)")

    def _draw(self, ax: Any, **kwargs: Any) -> None:
        from scipy.cluster.hierarchy import dendrogram

        if len(self.leaf_names) < 2:
            ax.text(0.5, 0.5, "one member: no hierarchy", ha="center", va="center")
        else:
            tree = dendrogram(self.linkage, no_plot=True, labels=self.leaf_names)
            for xs, ys in zip(tree["icoord"], tree["dcoord"]):
                ax.plot(xs, ys, color=kwargs.get("color", "C0"), lw=1.0)
            ax.set_xticks(5 + 10 * np.arange(len(tree["ivl"])))
            ax.set_xticklabels(tree["ivl"], rotation=90, fontsize=7)
            ax.set_ylabel("1 - decoder cosine (average linkage)")
        ax.set_title(self.title, fontsize=9)

"""Check the top-activation labels against the per-feature truth, and fix the ones it contradicts.

A label claims a side, a family and sometimes a value ("say Dunhal": output, capital, Dunhal;
"'of' in two-hop": a token feature reading "of"). It contradicts the truth
(:mod:`workbench.world.truth`) when:

* it claims a family (side input or output) and the truth gives another side or family;
* both give a value of a non-cyclic family and the values differ;
* it claims a token feature and the truth gives a family feature.

It is *unconfirmed* when it claims a family and the truth finds none. Context and "mixed" labels
claim no variable, and a token label is not checked against a truth without a family (the
labels read the top 48 activations, the truth every row's energy: they may name different words
of one feature that fires on several).

A contradicted label is replaced by the truth's description, and says so: ``"say a capital
[fixed by truth; top activations: say Dunhal in two-hop]"``. An unconfirmed one keeps its text
and says so: ``"say a day, peaks at Wed [unconfirmed by truth: no clear variable]"``. In both,
the ``side`` / ``family`` / ``value`` fields become the truth's, the original claim is kept under
``top_activations`` and the reason under ``truth_conflict``. Reconciling twice gives the same
labels (the original is read back from ``top_activations``).
"""

import logging
from pathlib import Path
from typing import Any

from tracer.labels import FeatureLabel, save_labels
from workbench.world import language as lang
from workbench.world.truth import CYCLIC_FAMILIES, FeatureTruth, save_truth

logger = logging.getLogger(__name__)

CLAIM_KEYS = ("side", "family", "value", "word", "peak")
"""Label fields that state what the feature carries."""
LABEL_FAMILY = {"number": "offset"}
"""Label family names that the truth spells differently."""


def _claim(label: FeatureLabel) -> dict[str, Any]:
    """The label's original claim: text and CLAIM_KEYS fields (from ``top_activations`` if fixed)."""
    if isinstance(label.extra.get("top_activations"), dict):
        return dict(label.extra["top_activations"])
    return {"label": label.label, **{k: label.extra[k] for k in CLAIM_KEYS if k in label.extra}}


def _label_value(family: str | None, value: Any) -> Any:
    """A label's value in the truth's spelling (number words are offsets: "Ten" -> 10)."""
    if family == "offset" and isinstance(value, str) and value.lower() in lang.NUMBERS:
        return lang.NUMBERS.index(value.lower())
    return value


def check_claim(claim: dict[str, Any], truth: FeatureTruth) -> tuple[str, str] | None:
    """("contradicted" or "unconfirmed", why) when the truth disagrees with a label's claim, else None.

    Contradicted: the truth gives another definite role. Unconfirmed: the label claims a family and
    the truth finds none (the feature's energy is not mostly on that family's rows)."""
    side = claim.get("side")
    family = LABEL_FAMILY.get(str(claim.get("family")), claim.get("family"))
    if side in ("input", "output") and family is not None:
        if truth.family is None:
            return "unconfirmed", f"label says {side} {family}; truth finds no family ({truth.describe()})"
        if (truth.side, truth.family) != (side, family):
            return "contradicted", f"label says {side} {family}; truth says {truth.side} {truth.family}"
        value = _label_value(family, claim.get("value"))
        if family not in CYCLIC_FAMILIES and value is not None and truth.value is not None and value != truth.value:
            return "contradicted", f"label says value {value}; truth says {truth.value}"
        return None
    word = claim.get("word")
    if side == "input" and word is not None and truth.family is not None:
        return "contradicted", f"label says token '{word}'; truth says {truth.describe()}"
    return None


def reconcile_label(label: FeatureLabel, truth: FeatureTruth) -> tuple[FeatureLabel, str | None]:
    """(the label fixed, marked or restored to its original; "contradicted", "unconfirmed" or None)."""
    claim = _claim(label)
    rest = {k: v for k, v in label.extra.items()
            if k not in CLAIM_KEYS and k not in ("top_activations", "truth_conflict", "format")}
    verdict = check_claim(claim, truth)
    if verdict is None and "top_activations" not in label.extra:
        return label, None
    if verdict is None:
        original = {k: v for k, v in claim.items() if k != "label"}
        return FeatureLabel(layer=label.layer, feature=label.feature, label=claim["label"],
                            top_contexts=label.top_contexts, extra={**rest, **original}), None
    kind, reason = verdict
    if kind == "contradicted":
        text = f"{truth.describe()} [fixed by truth; top activations: {claim['label']}]"
    else:
        text = f"{claim['label']} [unconfirmed by truth: {truth.describe()}]"
    fixed = {"side": truth.side, "family": truth.family, "value": truth.value}
    return FeatureLabel(layer=label.layer, feature=label.feature, label=text, top_contexts=label.top_contexts,
                        extra={**rest, **fixed, "top_activations": claim, "truth_conflict": f"{kind}: {reason}"}), kind


def reconcile_labels(labels: dict[tuple[int, int], FeatureLabel],
                     truths: dict[tuple[int, int], FeatureTruth]) -> tuple[list[FeatureLabel], dict[str, int]]:
    """Every label reconciled with its feature's truth (labels without a truth are kept), and how
    many the truth contradicted (fixed) and left unconfirmed (marked)."""
    out: list[FeatureLabel] = []
    counts = {"contradicted": 0, "unconfirmed": 0}
    for key, label in sorted(labels.items()):
        if key not in truths:
            out.append(label)
            continue
        new, kind = reconcile_label(label, truths[key])
        out.append(new)
        if kind is not None:
            counts[kind] += 1
    logger.info("labels vs truth: %d contradicted (fixed), %d unconfirmed (marked) of %d",
                counts["contradicted"], counts["unconfirmed"], len(out))
    return out, counts


def truth_summary(truths: list[FeatureTruth]) -> dict[str, Any]:
    """Counts per side and per (side, family), and per family [output features with a value, those
    of them whose direct logit effect promotes that value most]."""
    sides: dict[str, int] = {}
    families: dict[str, int] = {}
    for t in truths:
        sides[t.side] = sides.get(t.side, 0) + 1
        if t.family is not None:
            key = f"{t.side} {t.family}"
            families[key] = families.get(key, 0) + 1
    agree: dict[str, list[int]] = {}
    for t in truths:
        if t.side == "output" and t.value is not None and t.family is not None:
            pair = agree.setdefault(t.family, [0, 0])
            pair[0] += 1
            pair[1] += int(t.top_logit == t.value)
    return {"n_features": len(truths), "sides": sides, "families": dict(sorted(families.items())),
            "output_with_value_and_top_logit_is_value": dict(sorted(agree.items()))}


def write_world_truth(out: Path, truths: dict[str, list[FeatureTruth]],
                      labels: dict[str, dict[tuple[int, int], FeatureLabel]]) -> dict[str, Any]:
    """Write ``feature_truth_{name}.jsonl`` and the reconciled ``labels_{name}.jsonl`` of each
    transcoder set into ``out``; returns a summary per set."""
    summary: dict[str, Any] = {}
    for name, rows in truths.items():
        save_truth(rows, out / f"feature_truth_{name}.jsonl")
        fixed, counts = reconcile_labels(labels[name], {(t.layer, t.feature): t for t in rows})
        save_labels(fixed, out / f"labels_{name}.jsonl")
        summary[name] = {**truth_summary(rows), "labels_contradicted_fixed": counts["contradicted"],
                         "labels_unconfirmed_marked": counts["unconfirmed"]}
    return summary

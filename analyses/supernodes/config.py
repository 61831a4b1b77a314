"""Frozen configs of the supernode analyses: the one source of defaults for the estimators and the
``workbench cluster`` flags (each field's docstring is its ``--help``).

Defaults follow ``research/geometry.md`` §7(a): affinity ``0.5 edge + 0.3 virtual + 0.2 family``
(renormalised over the similarities that are available), plus ``0.8 coactivation`` when an
unlabelled activation sample is given (as much weight as edge and virtual together: chosen on the
demo world's PLT transcoders, the tuning set, and checked on its CLT; see the README); in/out
weight λ = 0.5, complete linkage cut no higher than affinity 0.5, at most 12 members, a layer span
of at most 4, one position, no member edge below -5% of the target's input mass, and, with feature
roles (:mod:`analyses.families.roles`), one role per group. The cut was 0.6 before the roles: with
them, 0.5 is the strictest of 0.6 / 0.5 / 0.4 / 0.3 that keeps 2x compression on the PLT tuning set
(see the README).
"""

from dataclasses import dataclass

from analyses.base import check_number

SIMILARITIES: tuple[str, ...] = ("edge", "virtual", "family", "coactivation", "label")
"""Known similarity names: signed edge-profile cosine, downstream-restricted decoder cosine (virtual
weights; needs transcoders), dictionary-family co-membership (needs families), co-activation profile
cosine (needs an activation sample), label-text cosine."""
CUTS: tuple[str, ...] = ("auto", "threshold")


def _bad(name: str, constraint: str, value: object, hint: str = "", *,
         error: type[Exception] = ValueError) -> Exception:
    """The one-line error for a bad value: ``error=TypeError`` for the wrong kind of value (as check_number)."""
    return error(f"{name} must be {constraint}; got {value!r}. {hint}".rstrip())


@dataclass(frozen=True, kw_only=True)
class ClusteringConfig:
    """How SupernodeClustering groups the features of one graph."""

    similarities: tuple[str, ...] = ("edge", "virtual", "family", "coactivation")
    """Similarities to combine (edge, virtual, family, coactivation, label); those without their input
    (transcoders, families, an activation sample, labels) are skipped."""
    edge_weight: float = 0.5
    """Weight of the signed edge-profile cosine in the affinity."""
    virtual_weight: float = 0.3
    """Weight of the downstream-restricted decoder cosine (virtual weights) in the affinity."""
    family_weight: float = 0.2
    """Weight of dictionary-family co-membership in the affinity."""
    coactivation_weight: float = 0.8
    """Weight of the co-activation profile cosine in the affinity (features that fire on the same kind
    of token in an unlabelled corpus sample); pairs where either feature never fires in the sample
    leave it out of their average."""
    label_weight: float = 0.2
    """Weight of the label-text cosine in the affinity (only when 'label' is listed)."""
    in_weight: float = 0.5
    """λ: weight of the incoming edge profile against the outgoing one."""
    min_affinity: float = 0.5
    """Every pair in a group has at least this affinity (complete linkage cut height 1 - this)."""
    cut: str = "auto"
    """auto: the best-silhouette cut at or below 1 - min_affinity; threshold: cut at 1 - min_affinity."""
    max_group_size: int = 12
    """Most features in one group (larger clusters are split along the dendrogram)."""
    max_layer_span: int = 4
    """Most layers between two members of a group."""
    cross_position: bool = False
    """Allow members at different positions."""
    negative_edge_tolerance: float = 0.05
    """Members may not have a direct edge below -this x the target's total input |weight|."""
    role_constraint: bool = True
    """With feature roles (fit's roles: analyses.families.roles, read from an unlabelled corpus sample's tokens),
    features of different roles never share a group (a feature without a role may join any)."""
    node_threshold: float = 0.8
    """Prune a graph given without a node mask at this node threshold (candidates: kept features)."""
    edge_threshold: float = 0.98
    """... and this edge threshold."""

    def __post_init__(self) -> None:
        sims = self.similarities
        if isinstance(sims, str) or not isinstance(sims, tuple) or not sims:
            raise _bad("similarities", f"a non-empty tuple of names from {list(SIMILARITIES)}", sims,
                       error=ValueError if isinstance(sims, tuple) else TypeError)
        unknown = [s for s in sims if s not in SIMILARITIES]
        if unknown:
            raise _bad("similarity name", f"one of {list(SIMILARITIES)}", unknown[0])
        if len(set(sims)) != len(sims):
            raise _bad("similarities", "names without repeats", sims)
        for name in ("edge_weight", "virtual_weight", "family_weight", "coactivation_weight", "label_weight",
                     "in_weight"):
            check_number(name, getattr(self, name), lo=0.0, hi=1e6)
        check_number("min_affinity", self.min_affinity, lo=0.0, hi=1.0)
        if self.cut not in CUTS:
            raise _bad("cut", f"one of {list(CUTS)}", self.cut)
        check_number("max_group_size", self.max_group_size, lo=1, integer=True)
        check_number("max_layer_span", self.max_layer_span, lo=0, integer=True)
        if not isinstance(self.cross_position, bool):
            raise _bad("cross_position", "a bool", self.cross_position, error=TypeError)
        check_number("negative_edge_tolerance", self.negative_edge_tolerance, lo=0.0, hi=1.0)
        if not isinstance(self.role_constraint, bool):
            raise _bad("role_constraint", "a bool", self.role_constraint, error=TypeError)
        check_number("node_threshold", self.node_threshold, lo=0.0, hi=1.0)
        check_number("edge_threshold", self.edge_threshold, lo=0.0, hi=1.0)

    def weight(self, similarity: str) -> float:
        """The affinity weight of a similarity name."""
        return float(getattr(self, f"{similarity}_weight"))


@dataclass(frozen=True, kw_only=True)
class CircuitConfig:
    """How the readable circuit picks groups under a node budget."""

    budget: int = 25
    """Most groups (supernodes and single features) in the circuit, besides tokens and logits."""
    exact_candidates: int = 8
    """When the groups exceed the budget: groups scored exactly at each greedy step (the best by
    estimated gain; 0: the estimate alone)."""
    exact_max_links: int = 50_000
    """Score exactly only when the pruned graph has at most this many links (each exact score is a
    pass over all of them); larger graphs use the estimate alone."""

    def __post_init__(self) -> None:
        check_number("budget", self.budget, lo=1, integer=True)
        check_number("exact_candidates", self.exact_candidates, lo=0, integer=True)
        check_number("exact_max_links", self.exact_max_links, lo=0, integer=True)


@dataclass(frozen=True, kw_only=True)
class InterventionConfig:
    """How supernodes are checked by ablation on the real model."""

    n_random: int = 20
    """Random groups per supernode, matched in size, layer and position."""
    seed: int = 0
    """Seed of the random groups."""
    modes: tuple[str, ...] = ("frozen", "free")
    """Attention during the ablation: frozen (patterns replayed from the clean run), free, or both."""

    def __post_init__(self) -> None:
        check_number("n_random", self.n_random, lo=1, integer=True)
        check_number("seed", self.seed, lo=0, integer=True)
        if not isinstance(self.modes, tuple) or not self.modes or any(m not in ("frozen", "free")
                                                                       for m in self.modes):
            raise _bad("modes", "a non-empty tuple of 'frozen' and 'free'", self.modes,
                       error=ValueError if isinstance(self.modes, tuple) else TypeError)

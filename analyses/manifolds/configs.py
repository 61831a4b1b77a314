"""The configs of :mod:`analyses.manifolds` (frozen dataclasses: the one source of defaults for the
API and the CLI). This module imports neither numpy nor torch, so `workbench --help` stays fast."""

from dataclasses import dataclass, field

from analyses.base import check_choice, check_number

SHAPES: tuple[str, ...] = ("circle", "helix", "interval")
"""Curve shapes of :mod:`analyses.manifolds.curves`."""


@dataclass(frozen=True, kw_only=True)
class ManifoldFitConfig:
    """Parameters of :class:`ManifoldFit` (the one source of their defaults)."""

    period: int | None = None
    """Number of values of the variable (None: max(y) + 1)."""
    shape: str = "circle"
    """'circle' (closed, values cyclic), 'helix' (closed turns plus a linear drift) or 'interval' (open)."""
    n_harmonics: int = 3
    """Harmonics of the best frequency in the final curve (1-3; circles are fitted with at most (period - 2) // 2,
    helices and intervals with at most (period - 4) // 2 (at least 1), so that the curve cannot pass through every
    class mean whatever their labels)."""
    variance_threshold: float = 0.95
    """Keep the fewest principal components of the class means that reach this share of their variance."""
    max_components: int = 8
    """Cap on the subspace dimension m (at least 2 for circles and helices: a closed curve needs a plane)."""
    frequency: int | None = None
    """Fit this frequency k instead of searching (None: search)."""
    min_points_per_value: int = 1
    """Every value in [0, period) needs at least this many points."""

    def __post_init__(self) -> None:
        if self.period is not None:
            check_number("period", self.period, lo=3, integer=True)
        check_choice("shape", self.shape, SHAPES)
        check_number("n_harmonics", self.n_harmonics, lo=1, hi=3, integer=True)
        check_number("variance_threshold", self.variance_threshold, lo=0, hi=1, lo_open=True)
        check_number("max_components", self.max_components, lo=1, integer=True)
        if self.shape != "interval" and self.max_components < 2:
            raise ValueError(f"max_components must be >= 2 for shape {self.shape!r} (a closed curve needs a plane); "
                             f"got {self.max_components}. Raise it, or fit the shape 'interval'.")
        if self.frequency is not None:
            check_number("frequency", self.frequency, lo=1, integer=True)
        check_number("min_points_per_value", self.min_points_per_value, lo=1, integer=True)



@dataclass(frozen=True, kw_only=True)
class IrreducibilityConfig:
    """Settings of both indices (defaults: the research note's §6.1 calibration)."""

    epsilon: float = 0.1
    """Band half-width in units of the projection's RMS."""
    n_restarts: int = 5
    """Random restarts of the band search (the best one counts)."""
    n_steps: int = 3000
    """Annealed gradient-ascent steps per restart."""
    learning_rate: float = 0.1
    """Step size of the ascent (Engels: 0.1)."""
    bins: int = 10
    """Histogram bins per axis for the mutual information."""
    n_angles: int = 100
    """Rotations scanned for the separability minimum."""
    seed: int = 0
    """Seed of the restarts' starting directions."""

    def __post_init__(self) -> None:
        check_number("epsilon", self.epsilon, lo=0, lo_open=True)
        check_number("n_restarts", self.n_restarts, lo=1, integer=True)
        check_number("n_steps", self.n_steps, lo=1, integer=True)
        check_number("learning_rate", self.learning_rate, lo=0, lo_open=True)
        check_number("bins", self.bins, lo=2, integer=True)
        check_number("n_angles", self.n_angles, lo=1, integer=True)
        check_number("seed", self.seed, lo=0, integer=True)



PERSISTENCE_MODES = ("auto", "ripser", "none")


@dataclass(frozen=True, kw_only=True)
class DiscoveryConfig:
    """Parameters of :class:`ManifoldDiscovery` (the one source of their defaults)."""

    max_points: int = 20_000
    """Most reconstruction points per family (a seeded sample of the firing rows)."""
    metric_points: int = 4000
    """Points used for the irreducibility indices (the §6.1 calibration used 4000)."""
    n_components: int = 5
    """Principal components scored (consecutive pairs 1-2 ... 4-5, as Engels)."""
    activation_threshold: float = 0.0
    """A member fires on a row when its activation exceeds this."""
    min_points: int = 20
    """Families firing on fewer rows are not scored."""
    min_variance_ratio: float = 1e-4
    """Principal components below this share of the cloud's variance are not scored (a degenerate
    component's rounding noise has arbitrary irreducibility)."""
    strong_fraction: float = 0.25
    """The direction cloud keeps the rows whose reconstruction norm is at least this fraction of the
    family's 99th-percentile norm (where the family really fires; chosen on planted families,
    :mod:`workbench.bench.discovery_rule`)."""
    ring_reference: float = 0.96
    """(1 - M)·S of the research note's §6.1 noisy circle (M 0.20, S 1.20): irreducibility at or
    above it counts fully as ring evidence."""
    persistence: str = "auto"
    """Persistent H1 in the ranking: "auto" (when ripser is installed), "ripser" (required: an error
    without it) or "none" (loop quality x irreducibility only). ``pip install ripser`` (the ``topology`` extra)."""
    persistence_points: int = 400
    """Points of the direction cloud (a seeded sample) that persistent H1 is computed on."""
    persistence_reference: float = 0.46
    """Longest H1 bar / bounding-box diagonal of the §6.1 noisy circle (N 4000, σ 0.05) on a
    400-point sample (0.46-0.48 over seeds): persistence at or above it counts fully as ring evidence."""
    raw_cloud_metrics: bool = False
    """Also score Engels' original ranking: mean (1 - M)·S over the raw reconstruction cloud's pairs."""
    n_harmonics: int = 3
    """Harmonics of the principal curves."""
    curve_iterations: int = 15
    """Alternations of the principal-curve fits."""
    seed: int = 0
    """Seed of the row sample and of the irreducibility restarts."""
    irreducibility: IrreducibilityConfig = field(default_factory=IrreducibilityConfig)
    """Settings of M_ε and S (defaults: the note's §6.1 calibration)."""

    def __post_init__(self) -> None:
        for name in ("max_points", "metric_points", "min_points", "curve_iterations", "persistence_points"):
            check_number(name, getattr(self, name), lo=1, integer=True)
        check_number("n_components", self.n_components, lo=2, integer=True)
        check_number("activation_threshold", self.activation_threshold)
        check_number("min_variance_ratio", self.min_variance_ratio, lo=0, hi=1)
        check_number("strong_fraction", self.strong_fraction, lo=0, hi=1)
        check_number("ring_reference", self.ring_reference, lo=0, lo_open=True)
        check_number("persistence_reference", self.persistence_reference, lo=0, lo_open=True)
        check_choice("persistence", self.persistence, PERSISTENCE_MODES)
        if not isinstance(self.raw_cloud_metrics, bool):
            raise TypeError(f"raw_cloud_metrics must be a bool; got {self.raw_cloud_metrics!r}.")
        check_number("n_harmonics", self.n_harmonics, lo=1, hi=3, integer=True)
        check_number("seed", self.seed, lo=0, integer=True)
        if not isinstance(self.irreducibility, IrreducibilityConfig):
            raise TypeError(f"irreducibility must be an IrreducibilityConfig; got {self.irreducibility!r}.")


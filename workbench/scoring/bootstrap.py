"""Seeded bootstrap intervals, shared by the scorers (manifold fits: prompts; supernodes: graphs)."""

import numpy as np

N_BOOT = 1000


def resamples(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) bootstrap index sets over n items (seeded)."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def interval(values: np.ndarray) -> list[float]:
    """95% percentile interval of per-resample statistics ``values`` (n_boot,), over the finite ones (nan, nan
    when none is: a statistic undefined on every resample)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return [float("nan"), float("nan")]
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]

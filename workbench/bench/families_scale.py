"""Scale benchmark of FeatureFamilies: a synthetic layer shaped like Qwen3-4B's transcoders.

    python -m workbench.bench.families_scale --out families_scale.json   # 163,840 x 2,560

The layer (float32, unit rows, seeded) holds:

* **planted families** of 5-200 members (sizes drawn from a power law, p(s) ~ s**-1.5), 35% of
  the features in all; a family's members share its centre with weight rho ~ U(0.3, 0.7), so
  their pairwise cosines are about rho (0.3-0.7);
* **super-families**: families come in groups of 1-4 whose centres share a parent direction
  (centre cosine 0.1-0.25), so related families are near each other but distinct;
* **background** features: random directions plus a weak shared low-rank component (16
  directions, weight 0.1), as dictionaries are anisotropic.

It fits ``FeatureFamilies()`` with its defaults (no activation sample: pynndescent kNN on a
projected search + exact re-ranking, then sparse HDBSCAN) and reports wall time, peak RSS
(``getrusage``), the machine's load average before and after, and the ARI of the recovered
families: over every feature (each background feature and each unassigned feature its own
singleton) and over the planted features only. Targets: <= 600 s, <= 6 GiB, ARI >= 0.9.
"""

import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tracer.io import atomic_write_json
from workbench.cli_parser import script_parser

logger = logging.getLogger(__name__)


def family_sizes(n_target: int, rng: np.random.Generator, lo: int = 5, hi: int = 200) -> list[int]:
    """Power-law sizes in [lo, hi] (p(s) ~ s**-1.5) until their sum reaches ``n_target``."""
    s = np.arange(lo, hi + 1)
    p = s ** -1.5
    p /= p.sum()
    sizes: list[int] = []
    while sum(sizes) < n_target:
        sizes.append(int(rng.choice(s, p=p)))
    return sizes


def _unit(M: np.ndarray) -> np.ndarray:
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    return M


def synthetic_layer(n_features: int, d_model: int, *, family_frac: float = 0.35,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X (n_features, d_model) float32 unit rows, truth (n_features,): family id or -1), rows
    shuffled."""
    rng = np.random.default_rng(seed)
    sizes = family_sizes(int(family_frac * n_features), rng)
    X = np.empty((n_features, d_model), dtype=np.float32)
    truth = np.full(n_features, -1, dtype=np.int64)
    pos = rng.permutation(n_features)  # generated row r is stored at pos[r]: shuffled, no second copy
    row, fam = 0, 0
    while fam < len(sizes):
        group = sizes[fam:fam + int(rng.integers(1, 5))]
        parent = _unit(rng.standard_normal((1, d_model), dtype=np.float32))[0]
        for size in group:
            beta = float(rng.uniform(0.1, 0.25))
            centre = _unit((np.sqrt(beta) * parent + np.sqrt(1 - beta) * _unit(
                rng.standard_normal((1, d_model), dtype=np.float32))[0])[None])[0]
            rho = float(rng.uniform(0.3, 0.7))
            noise = _unit(rng.standard_normal((size, d_model), dtype=np.float32))
            X[pos[row:row + size]] = _unit(np.sqrt(rho) * centre + np.sqrt(1 - rho) * noise)
            truth[pos[row:row + size]] = fam
            row, fam = row + size, fam + 1
    shared = _unit(rng.standard_normal((16, d_model), dtype=np.float32))
    for s in range(row, n_features, 8192):
        m = min(8192, n_features - s)
        base = _unit(rng.standard_normal((m, d_model), dtype=np.float32))
        X[pos[s:s + m]] = _unit(base + 0.1 * rng.standard_normal((m, 16), dtype=np.float32) @ shared)
    return X, truth


def ari_with_singletons(truth: np.ndarray, pred: np.ndarray, rows: np.ndarray | None = None) -> float:
    """ARI where every -1 (background in the truth, unassigned in the prediction) is a singleton."""
    from sklearn.metrics import adjusted_rand_score

    t, p = truth.copy(), pred.copy()
    t[t < 0] = t.max() + 1 + np.arange(int((t < 0).sum()))
    p[p < 0] = p.max() + 1 + np.arange(int((p < 0).sum()))
    if rows is not None:
        t, p = t[rows], p[rows]
    return float(adjusted_rand_score(t, p))


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(n_features: int, d_model: int, *, seed: int = 0, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate, fit, score; returns the JSON-ready report."""
    from analyses.families import FeatureFamilies

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    X, truth = synthetic_layer(n_features, d_model, seed=seed)
    t_gen = time.perf_counter() - t0
    rss_gen = peak_rss_gib()
    est = FeatureFamilies(**(params or {}))
    t1 = time.perf_counter()
    est.fit(X)
    t_fit = time.perf_counter() - t1
    planted = np.flatnonzero(truth >= 0)
    sizes = np.bincount(truth[planted])
    return {
        "n_features": n_features, "d_model": d_model, "seed": seed, "params": est.get_params(),
        "n_planted_families": int(len(sizes)), "planted_features": int(len(planted)),
        "planted_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "n_families_found": est.n_families_, "unassigned": int((est.labels_ < 0).sum()),
        "ari_all_features": round(ari_with_singletons(truth, est.labels_), 4),
        "ari_planted_features": round(ari_with_singletons(truth, est.labels_, planted), 4),
        "seconds": {"generate": round(t_gen, 1), "fit": round(t_fit, 1), "total": round(time.perf_counter() - t0, 1),
                    "fit_phases": {k: round(v, 1) for k, v in est.timings_.items()}},
        "peak_rss_gib": {"after_generate": round(rss_gen, 3), "total": round(peak_rss_gib(), 3)},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "targets": {"fit_seconds_max": 600, "peak_rss_gib_max": 6.0, "ari_min": 0.9},
    }


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("python -m workbench.bench.families_scale", __doc__ or "", raw=True)
    parser.add_argument("--n-features", type=int, default=163_840)
    parser.add_argument("--d-model", type=int, default=2560)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from workbench.cli_safety import check_out

    check_out(args.out)  # before any work
    if args.n_features < 1000 or args.d_model < 2:
        from tracer.errors import WorkbenchError

        raise WorkbenchError(f"--n-features must be >= 1000 and --d-model >= 2 (planted families of up to 200 "
                             f"members fill 35% of the layer); got {args.n_features} and {args.d_model}.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    import torch

    torch.set_num_threads(1)
    report = run(args.n_features, args.d_model, seed=args.seed)
    atomic_write_json(args.out, report)
    logger.info("%s", json.dumps({k: report[k] for k in ("ari_all_features", "ari_planted_features", "seconds",
                                                         "peak_rss_gib", "load_average_before")}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.bench.families_scale"))

"""Scale benchmark of FeatureFamilies' token-class step at a Qwen3-4B-like size.

    python -m workbench.bench.token_classes_scale --out token_classes_scale.json

Synthetic and seeded: an unembedding of ``--d-vocab`` x ``--d-model`` float32 rows (default
151,936 x 2,560, Qwen3-4B's), an activation sample of ``--n-rows`` token rows over ``--n-features``
features (default 20,000 x 163,840, ``--active`` non-zero per row) whose token ids follow a Zipf law
over the vocabulary, and every token's text (a word, a tenth of them also in a capitalised form).
Planted classes of 5-30 words share an unembedding direction and are read by their own features.

It times the token step exactly as :meth:`analyses.families.FeatureFamilies.fit` runs it (token
energies, the classes of the ``max_tokens`` most frequent words with the ``FamiliesConfig``
defaults, each feature's dominant class) and reports wall time per phase, peak RSS (``getrusage``;
the inputs alone are measured first), the number of classes, and the ARI of the planted classes'
tokens (each unplanted or unclassed token its own singleton). It then times the features' roles on the
same sample (:func:`analyses.families.roles.feature_roles`: the token step again, then each feature's
role), with the peak RSS after it.
"""

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from tracer.io import atomic_write_json
from workbench.bench.families_scale import ari_with_singletons, peak_rss_gib
from workbench.cli_parser import script_parser

logger = logging.getLogger(__name__)


def synthetic_sample(d_vocab: int, d_model: int, n_rows: int, n_features: int, active: int, *,
                     seed: int = 0) -> dict[str, Any]:
    """The unembedding, sample, token ids, token texts and planted classes (token -> class, -1 for none)."""
    rng = np.random.default_rng(seed)
    W_U = rng.standard_normal((d_vocab, d_model), dtype=np.float32)  # (d_vocab, d_model)
    p = 1.0 / np.arange(1, d_vocab + 1)
    tokens = rng.choice(d_vocab, size=n_rows, p=p / p.sum()).astype(np.int64)  # (n_rows,) Zipf over the vocabulary
    nxt = np.append(tokens[1:], -1)
    frequent = np.argsort(-np.bincount(tokens, minlength=d_vocab), kind="stable")[:3000]
    planted = np.full(d_vocab, -1, dtype=np.int64)
    start, c = 0, 0
    while start + 30 <= frequent.size:
        size = int(rng.integers(5, 31))
        members = frequent[start:start + size]
        W_U[members] += 3.0 * rng.standard_normal(d_model, dtype=np.float32)  # a shared direction
        planted[members], start, c = c, start + size, c + 1
    cols = rng.integers(0, n_features, (n_rows, active))  # (n_rows, active) random features ...
    readers = planted[tokens] >= 0
    cols[readers, 0] = planted[tokens[readers]] % n_features  # ... and the reader of the row's class
    A = sp.csr_matrix((rng.random(n_rows * active, dtype=np.float32) + 0.1,
                       (np.repeat(np.arange(n_rows), active), cols.ravel())), shape=(n_rows, n_features))
    # every tenth token's text is the one before it, capitalised (one word, two tokens)
    words = [f"W{i - 1}" if i % 10 == 0 and i else f"w{i}" for i in range(d_vocab)]
    return {"W_U": W_U, "A": A, "tokens": tokens, "next_tokens": nxt, "words": words, "planted": planted}


def run(d_vocab: int, d_model: int, n_rows: int, n_features: int, active: int, *, seed: int = 0) -> dict[str, Any]:
    """Generate, run the token step, score; returns the JSON-ready report."""
    from analyses.families.config import FamiliesConfig
    from analyses.families.tokens import dominant_class, token_classes, token_energy

    cfg = FamiliesConfig()
    t0 = time.perf_counter()
    d = synthetic_sample(d_vocab, d_model, n_rows, n_features, active, seed=seed)
    seconds: dict[str, float] = {"generate": time.perf_counter() - t0}
    rss_inputs = peak_rss_gib()
    t = time.perf_counter()
    reads, predicts = token_energy(d["A"], d["tokens"], d["next_tokens"], d_vocab)
    seconds["energies"] = time.perf_counter() - t
    t = time.perf_counter()
    counts = np.bincount(d["tokens"], minlength=d_vocab)
    classes = token_classes(d["W_U"], reads, predicts, counts, clustering=cfg.token_clustering, cut=cfg.token_cut,
                            min_class_size=cfg.min_token_class, selection=cfg.token_selection,
                            max_tokens=cfg.max_tokens, words=d["words"], fold=cfg.fold_case, seed=cfg.random_state)
    seconds["classes"] = time.perf_counter() - t
    t = time.perf_counter()
    total = np.asarray(reads.sum(axis=1)).ravel()  # (n_features,)
    dom, _ = dominant_class(reads, predicts, total, classes, min_class_size=cfg.min_token_class,
                            min_share=cfg.min_token_share)
    seconds["dominant_class"] = time.perf_counter() - t
    rss_families = peak_rss_gib()
    roles = timed_roles(d, n_features, seconds)
    seen = np.flatnonzero(counts > 0)
    return {"d_vocab": d_vocab, "d_model": d_model, "n_rows": n_rows, "n_features": n_features,
            "active_per_row": active, "seed": seed, "n_seen_tokens": int(seen.size), "max_tokens": cfg.max_tokens,
            "n_planted_classes": int(d["planted"].max()) + 1, "n_classes": len(np.unique(classes[classes >= 0])),
            "features_in_a_class": int((dom >= 0).sum()),
            "ari_planted_tokens": round(ari_with_singletons(d["planted"][seen], classes[seen]), 4),
            "n_roles": len(roles.names), "features_with_a_class_role": int(np.isin(
                roles.role, [k for k, kind in enumerate(roles.kinds) if kind in ("predicts", "reads")]).sum()),
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "peak_rss_gib": {"inputs": round(rss_inputs, 3), "token_step": round(rss_families, 3),
                             "total": round(peak_rss_gib(), 3)}}


def timed_roles(d: dict[str, Any], n_features: int, seconds: dict[str, float]) -> Any:
    """The features' roles on the same sample (:func:`analyses.families.roles.feature_roles`, which runs the token
    step again from the activations, as a user's call does), timed into ``seconds["feature_roles"]``."""
    from analyses.families.roles import feature_roles

    keys = np.stack([np.zeros(n_features, np.int64), np.arange(n_features)], 1)  # (n_features, 2) one layer
    t = time.perf_counter()
    roles = feature_roles(d["A"], keys, tokens=d["tokens"], next_tokens=d["next_tokens"], token_vectors=d["W_U"],
                          token_words=d["words"])
    seconds["feature_roles"] = time.perf_counter() - t
    return roles


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("python -m workbench.bench.token_classes_scale", __doc__ or "", raw=True)
    parser.add_argument("--d-vocab", type=int, default=151_936)
    parser.add_argument("--d-model", type=int, default=2560)
    parser.add_argument("--n-rows", type=int, default=20_000)
    parser.add_argument("--n-features", type=int, default=163_840)
    parser.add_argument("--active", type=int, default=64, help="non-zero activations per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from tracer.errors import WorkbenchError
    from workbench.cli_safety import check_out

    check_out(args.out)  # before any work
    for flag, value, lo in (("--d-vocab", args.d_vocab, 3000), ("--d-model", args.d_model, 2),
                            ("--n-rows", args.n_rows, 100), ("--n-features", args.n_features, 1),
                            ("--active", args.active, 1)):
        if value < lo:
            raise WorkbenchError(f"{flag} must be >= {lo}; got {value}.")
    if args.active > args.n_features:
        raise WorkbenchError(f"--active must be <= --n-features ({args.n_features}); got {args.active}.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    report = run(args.d_vocab, args.d_model, args.n_rows, args.n_features, args.active, seed=args.seed)
    atomic_write_json(args.out, report)
    logger.info("%s", json.dumps(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.bench.token_classes_scale"))

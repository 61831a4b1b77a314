"""Speed of automatic supernodes against attribution (issue 10, point 8).

    python -m workbench.bench.supernodes --out bench_supernodes.json [--n-tokens 64] [--transcoder plt clt]
        [--threads 2] [--repeats 3] [--work-dir DIR]

Builds (or reuses) the reference benchmark model of ``workbench bench`` (Qwen3, 4 layers, d_model
256, 8 heads / 2 KV, vocab 512, 2,048-feature transcoders at L0 48), traces a seeded random prompt
(64 tokens: about 15k nodes), then times, in the same process and thread setting:

* ``attribute``: the graph's attribution;
* ``prune``: circuit-tracer's pruning (needed by any viewer; reported apart);
* ``cluster``: :class:`analyses.supernodes.clustering.SupernodeClustering` on the pruned graph
  (edge-profile and virtual-weight similarities);
* ``circuit``: :class:`analyses.supernodes.circuit.ReadableCircuit` (clustering included) with the
  default budget, given the prune result;
* ``circuit_coactivation``: the same with the co-activation similarity and the features' roles (one role
  per group), over an activation sample of ``--coactivation-prompts`` seeded random 32-word prompts (all
  4 layers: 4,096 or 8,192 columns, so the count-sketched path). Building that sample and reading the
  roles from it (``coactivation_sample``, once per transcoder set and shared by every graph) is timed
  apart, and so is computing every column's co-activation profile once
  (:meth:`~analyses.families.coactivation.CoactivationContext.prepare_profiles`, ``coactivation_profiles``), after
  which a graph's co-activation similarity is a lookup. ``circuit_coactivation_unprepared``: one run on the same
  sample before that, computing the profiles of this graph's features only (what one graph costs on a sample
  used once; it grows with the sample's rows).

Attribution, clustering and circuit run back to back ``--repeats`` times, so that each pair sees
the same machine load; the JSON holds every run, the medians and the median of the per-run ratios
circuit / attribute (the target: <= 10%), and the graph's sizes. Prune runs once.
"""

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from tracer.io import atomic_write_json
from workbench.cli_parser import script_parser


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def coactivation_sample(loaded: Any, tcs: Any, n_prompts: int, vocab: int) -> Any:
    """The co-activation context and the features' roles (a CorpusEvidence) of ``n_prompts`` seeded random
    32-word prompts (the model's words)."""
    import numpy as np

    from workbench.bench.build import SPECIAL_TOKENS
    from workbench.corpus_evidence import prompt_coactivation

    rng = np.random.default_rng(1)
    words = rng.integers(len(SPECIAL_TOKENS), vocab, (n_prompts, 32))  # (n_prompts, 32) word ids
    return prompt_coactivation(loaded, tcs, [" ".join(f"w{w}" for w in row) for row in words], verbose=False)


def bench_one(built: Any, kind: str, n_tokens: int, repeats: int, coactivation_prompts: int = 256) -> dict[str, Any]:
    """Attribution and clustering + circuit timed back to back ``repeats`` times (so that both see
    the same machine load), then medians and the median of the per-pair ratios."""
    import torch

    from analyses.supernodes.circuit import ReadableCircuit
    from analyses.supernodes.clustering import SupernodeClustering
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.graph import prune_graph
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.bench.build import random_prompt

    loaded = load_model(built.model_dir, backend="auto")
    tcs = load_transcoders(built.transcoder_dir(kind), n_layers=loaded.n_layers, d_model=loaded.d_model)
    ids = torch.tensor(random_prompt(n_tokens, int(built.manifest["spec"]["vocab"]), 0))
    config = AttributionConfig(verbose=False)
    attribute(loaded, tcs, ids[:8], config)  # warm-up
    graph = attribute(loaded, tcs, ids, config)
    t_prune, pruned = _timed(lambda: prune_graph(graph))  # one run: slow, and not part of the target
    vocab = int(built.manifest["spec"]["vocab"])
    t_sample, (context, roles, _) = _timed(lambda: coactivation_sample(loaded, tcs, coactivation_prompts, vocab))
    unprepared = dataclasses.replace(context)  # the same sample, no profile computed yet
    t_unprepared, _ = _timed(lambda: ReadableCircuit().fit(graph, prune_result=pruned, transcoders=tcs,
                                                           coactivation=unprepared, roles=roles))
    t_profiles, prepared = _timed(context.prepare_profiles)
    times: dict[str, list[float]] = {"attribute": [], "cluster": [], "circuit": [], "circuit_coactivation": []}
    for _ in range(repeats):
        times["attribute"].append(_timed(lambda: attribute(loaded, tcs, ids, config))[0])
        t, est = _timed(lambda: SupernodeClustering().fit(graph, prune_result=pruned, transcoders=tcs))
        times["cluster"].append(t)
        t, circuit = _timed(lambda: ReadableCircuit().fit(graph, prune_result=pruned, transcoders=tcs))
        times["circuit"].append(t)
        t, with_co = _timed(lambda: ReadableCircuit().fit(graph, prune_result=pruned, transcoders=tcs,
                                                          coactivation=context, roles=roles))
        times["circuit_coactivation"].append(t)
    ratios = [c / a for c, a in zip(times["circuit"], times["attribute"])]
    ratios_co = [c / a for c, a in zip(times["circuit_coactivation"], times["attribute"])]
    med = {k: statistics.median(v) for k, v in times.items()}
    s = circuit.scores_
    return {
        "transcoder": kind, "n_tokens": n_tokens, "n_nodes": graph.n_nodes, "n_features": graph.n_selected,
        "n_pruned_nodes": int(pruned.node_mask.sum()), "n_candidates": int(est.candidates_.size),
        "n_groups_clustering": len(est.groups_), "n_groups_circuit": s.n_groups,
        "seconds": {"attribute": round(med["attribute"], 4), "prune": round(t_prune, 4),
                    "cluster": round(med["cluster"], 4), "circuit": round(med["circuit"], 4),
                    "circuit_coactivation": round(med["circuit_coactivation"], 4),
                    "circuit_coactivation_unprepared": round(t_unprepared, 4),
                    "coactivation_sample": round(t_sample, 4), "coactivation_profiles": round(t_profiles, 4)},
        "coactivation_sample": {"n_prompts": coactivation_prompts, "n_rows": context.n_rows,
                                "n_columns": context.n_context, "sketched": context.sketched,
                                "n_roles": len(roles.names), "profiles_prepared": prepared},
        "ratio_circuit_coactivation_unprepared_to_attribute": round(t_unprepared / med["attribute"], 4),
        "seconds_each_run": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "ratio_circuit_to_attribute": round(statistics.median(ratios), 4),
        "ratio_each_run": [round(r, 4) for r in ratios],
        "ratio_circuit_coactivation_to_attribute": round(statistics.median(ratios_co), 4),
        "target_met": statistics.median(ratios) <= 0.1 and statistics.median(ratios_co) <= 0.1,
        "scores": {"pruned": s.pruned, "circuit": s.circuit, "compression": s.compression,
                   "replacement_ratio": s.replacement_ratio},
        "scores_coactivation": {"circuit": with_co.scores_.circuit, "compression": with_co.scores_.compression,
                                "replacement_ratio": with_co.scores_.replacement_ratio},
    }


def main(argv: list[str] | None = None) -> int:
    p = script_parser("python -m workbench.bench.supernodes", __doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--n-tokens", type=int, default=64, help="prompt length, BOS included (default 64)")
    p.add_argument("--transcoder", nargs="+", default=["plt", "clt"], choices=["plt", "clt"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3, help="runs per timing; the median is kept (default 3)")
    p.add_argument("--work-dir", default=None, help="benchmark model cache (default: workbench bench's)")
    p.add_argument("--coactivation-prompts", type=int, default=256,
                   help="random 32-word prompts of the co-activation sample (default 256)")
    args = p.parse_args(argv)
    import torch

    from workbench.cli_safety import check_out

    check_out(args.out)  # before any work

    from workbench.bench.build import ensure_built
    from workbench.bench.config import ModelSpec, default_work_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = ModelSpec(arch="qwen3", n_layers=4, d_model=256, n_heads=8, n_kv_heads=2, vocab=512, d_transcoder=2048,
                     target_l0=48)
    built, reused = ensure_built(spec, Path(args.work_dir) if args.work_dir else default_work_dir())
    runs = [bench_one(built, kind, args.n_tokens, args.repeats, args.coactivation_prompts) for kind in args.transcoder]
    report = {"spec": spec.key, "reused_build": reused, "torch_threads": torch.get_num_threads(),
              "repeats": args.repeats, "runs": runs}
    atomic_write_json(args.out, report)
    for r in runs:
        sec = r["seconds"]
        print(f"{r['transcoder']}: {r['n_nodes']} nodes ({r['n_candidates']} candidates): "  # noqa: T201
              f"attribute {sec['attribute']:.2f}s, prune {sec['prune']:.2f}s, cluster {sec['cluster']:.3f}s, "
              f"cluster+circuit {sec['circuit']:.3f}s: median per-run ratio "
              f"{100 * r['ratio_circuit_to_attribute']:.1f}% of attribution (runs: "
              f"{', '.join(f'{100 * x:.1f}%' for x in r['ratio_each_run'])}); with co-activation "
              f"{sec['circuit_coactivation']:.3f}s, {100 * r['ratio_circuit_coactivation_to_attribute']:.1f}% "
              f"(sample of {r['coactivation_sample']['n_rows']} rows built once in {sec['coactivation_sample']:.2f}s, "
              f"its profiles in {sec['coactivation_profiles']:.2f}s; before them one graph took "
              f"{sec['circuit_coactivation_unprepared']:.3f}s, "
              f"{100 * r['ratio_circuit_coactivation_unprepared_to_attribute']:.1f}%)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.bench.supernodes"))

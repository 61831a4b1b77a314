"""How far the demo world's per-feature truth is itself reproducible, and what that leaves for supernode purity.

    python -m workbench.scoring.truth_stability --out stability.json [--world DIR] [--stream families-sample]
        [--transcoder plt clt] [--n-prompts 20] [--coactivation-sentences 3000] [--truth-sentences N]

The truth (:mod:`workbench.world.truth`) draws each feature's borders by thresholds (half of its activation
energy on one variable, word or task) measured on its own corpus: fresh sentences of the generator's "truth"
stream plus the sentence of every held-out prompt. A feature near a threshold lands on the side that corpus
gives it. Per transcoder set this measures:

* **reproduced**: the procedure re-run on its own corpus gives the shipped file: every feature's side, family,
  value, task and top logit (a check of the file on this machine; null with ``--truth-sentences`` at another size);
* **agreement**: the procedure re-run on another corpus of the same size (``--truth-sentences``: both re-runs at that
  size) and make (``--stream``; the supernode
  scorer's sample stream by default; the held-out prompts' sentences included, as in the truth's corpus): the
  share of the features live in either run whose key (side, family, non-cyclic value: the purity target's key)
  is unchanged, and the most common changes;
* **purity with the re-run truth as the roles**: the supernode scorer's pipeline
  (:func:`workbench.scoring.supernodes.score_graph`, co-activation over its usual unlabelled sample) with that
  truth's keys as the features' roles, scored against the shipped truth: what a method that knew every
  generator variable and task, but saw other sentences, reaches;
* **purity with the label-free roles read on the truth's own sentences**: the same pipeline with the roles and
  co-activation of :mod:`analyses.families.roles` read on the truth corpus, unlabelled: how much of the gap to
  the target is the sample rather than the roles;
* **the headline's purity over stable features**: the scorer's own groups (its usual sample, roles and
  co-activation), scored on all members and again on the members whose key the two truths share.

Both purities read the truth (its procedure, or its sentences): they are diagnostics of the scoring, not
results, and nothing here changes a default.
"""

import dataclasses
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tracer.errors import WorkbenchError
from tracer.io import atomic_write_json
from workbench.cli_parser import script_parser
from workbench.scoring.supernodes import (
    check_sample_stream,
    coactivation_sample,
    prompts_to_score,
    purity,
    score_graph,
    summarize,
    trace,
    truth_key,
)
from workbench.world.truth import TruthConfig, load_truth, truth_corpus, world_truth

logger = logging.getLogger(__name__)


def key_agreement(shipped: Mapping[tuple[int, int], Any], other: Mapping[tuple[int, int], Any],
                  cyclic: set[str], top: int = 8) -> dict[str, Any]:
    """The share of features live in either truth (a side other than "none") whose purity key is the same in
    both, and the ``top`` most common changes ("shipped key -> other key")."""
    live = [k for k in shipped if shipped[k].side != "none" or other[k].side != "none"]
    pairs = [(truth_key(shipped[k], cyclic, level="value"), truth_key(other[k], cyclic, level="value")) for k in live]
    changes = Counter(f"{a} -> {b}" for a, b in pairs if a != b)
    same = sum(a == b for a, b in pairs)
    return {"agreement": same / len(pairs) if pairs else float("nan"), "n_live": len(pairs),
            "n_changed": len(pairs) - same, "changes": dict(changes.most_common(top))}


def same_records(shipped: Mapping[tuple[int, int], Any], other: Mapping[tuple[int, int], Any]) -> bool:
    """Whether the two truths name the same features with the same side, family, value, task and top logit."""
    fields = ("side", "family", "value", "task", "top_logit")
    return shipped.keys() == other.keys() and all(
        all(getattr(shipped[k], f, None) == getattr(other[k], f, None) for f in fields) for k in shipped)


def truth_roles(truth: Mapping[tuple[int, int], Any], cyclic: set[str]) -> Any:
    """A :class:`~analyses.families.roles.FeatureRoles` table whose roles are the truth's purity keys (every
    feature has one: dead features share the "none" key)."""
    from analyses.families.roles import FeatureRoles

    keys = np.array(sorted(truth), dtype=np.int64).reshape(-1, 2)  # (n, 2) layer, feature
    names = [f"truth {truth_key(truth[(int(a), int(b))], cyclic, level='value')}" for a, b in keys]
    table = sorted(set(names))
    role = np.array([table.index(n) for n in names], dtype=np.int64)  # (n,)
    return FeatureRoles(keys=keys, role=role, share=np.ones(len(keys)), names=tuple(table),
                        kinds=("word",) * len(table))


def pipeline_purity(loaded: Any, tcs: Any, prompts: Sequence[tuple[str, str]], graphs: Sequence[Any],
                    truth: Mapping[tuple[int, int], Any], cyclic: set[str], context: Any, roles: Any,
                    stable: set[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Purity (target level), compression and replacement ratio of the scorer's pipeline on ``graphs`` with these
    co-activation ``context`` and ``roles``, against ``truth``; with ``stable``, also the purity of the same groups
    over their members in ``stable`` only (``purity_stable_members``, and their share of the grouped members)."""
    records = [score_graph(loaded, tcs, prompt, graph, truth, cyclic, interventions=False, coactivation=context,
                           roles=roles) for (_, prompt), graph in zip(prompts, graphs, strict=True)]
    s = summarize(records)
    out = {"purity": s["purity"]["value"], "compression": s["compression"],
           "replacement_ratio": s["replacement_ratio"], "n_graphs": s["n_graphs"]}
    if stable is not None:
        groups = [g for r in records for g in r["_rows"] if len(g) > 1]  # each (size, 2) layer, feature
        kept = [g[[(int(a), int(b)) in stable for a, b in g]] for g in groups]  # each (n_stable, 2)
        out["purity_stable_members"] = purity(kept, truth, cyclic, "value")["purity"]  # groups left with >= 2
        out["share_stable_members"] = sum(map(len, kept)) / max(sum(map(len, groups)), 1)
    return out


def truth_config(manifest: dict[str, Any]) -> TruthConfig:
    """The TruthConfig the world's truth was made with (its manifest's ``truth.config``; the defaults where a
    manifest does not record it)."""
    recorded = (manifest.get("truth") or {}).get("config") or {}
    known = {f.name for f in dataclasses.fields(TruthConfig)}
    try:
        return TruthConfig(**{k: v for k, v in recorded.items() if k in known})
    except (TypeError, ValueError) as err:
        raise WorkbenchError(f"the world's manifest must record a valid truth config; got {recorded!r} ({err}). "
                             "Rebuild the truth with `workbench world truth`.") from None


def stability(world: Path, kinds: Sequence[str], stream: str, n_prompts: int, coactivation_sentences: int,
              verbose: bool, *, truth_sentences: int | None = None) -> dict[str, Any]:
    """The report of the module docstring, per transcoder kind. ``truth_sentences`` sets the size of both re-run
    corpora (default: the world's own, as recorded in its manifest); at another size ``reproduced`` is None (the
    shipped file can only be reproduced by its own corpus)."""
    from tqdm.auto import tqdm

    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.world.evaluate import manifest_spec

    manifest = json.loads((world / "manifest.json").read_text())
    cyclic = {name for name, fam in manifest["families"].items() if "period" in fam}
    spec, seed = manifest_spec(manifest), int(manifest["seed"])
    loaded = load_model(world / "model")
    tcs = {kind: load_transcoders(world / kind, n_layers=loaded.n_layers, d_model=loaded.d_model) for kind in kinds}
    own = truth_config(manifest)  # the world's own truth settings (a tiny world's corpus is smaller)
    made = own if truth_sentences is None else dataclasses.replace(own, n_sentences=truth_sentences)
    runs = {name: world_truth(loaded.model, loaded.tokenizer, spec, tcs, seed=seed,
                              cfg=dataclasses.replace(made, stream=name))
            for name in dict.fromkeys((made.stream, stream))}
    prompts = prompts_to_score(manifest, n_prompts)
    report: dict[str, Any] = {"stream": stream, "truth_stream": made.stream, "truth_sentences": made.n_sentences,
                              "n_prompts_per_set": n_prompts,
                              "coactivation_sentences": coactivation_sentences}
    for kind in kinds:
        shipped = load_truth(world / f"feature_truth_{kind}.jsonl")
        rerun = {name: {(t.layer, t.feature): t for t in rows[kind]} for name, rows in runs.items()}
        graphs = [trace(loaded, tcs[kind], prompt) for _, prompt in tqdm(prompts, desc=f"trace {kind}",
                                                                         disable=not verbose)]
        context, roles, _ = coactivation_sample(world, kind, coactivation_sentences)
        stable = {k for k in shipped if truth_key(shipped[k], cyclic, level="value")
                  == truth_key(rerun[stream][k], cyclic, level="value")}
        own_context, own_roles, _ = coactivation_sample(world, kind, 0, sentences=truth_corpus(spec, made, seed))
        report[kind] = {
            "reproduced": same_records(shipped, rerun[made.stream]) if made == own else None,
            "other_corpus": key_agreement(shipped, rerun[stream], cyclic),
            "purity_rerun_truth_as_roles": pipeline_purity(loaded, tcs[kind], prompts, graphs, shipped, cyclic,
                                                           context, truth_roles(rerun[stream], cyclic)),
            "purity_label_free_roles_on_truth_sentences": pipeline_purity(loaded, tcs[kind], prompts, graphs, shipped,
                                                                          cyclic, own_context, own_roles),
            "headline": pipeline_purity(loaded, tcs[kind], prompts, graphs, shipped, cyclic, context, roles, stable),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    from workbench.cli_safety import check_out, need_input
    from workbench.paths import world_dir

    p = script_parser("python -m workbench.scoring.truth_stability", __doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--world", default=None, help="world folder (default: the embedded demo world)")
    p.add_argument("--stream", default="families-sample",
                   help="generator stream of the other corpus (default: the supernode scorer's sample stream)")
    p.add_argument("--transcoder", nargs="+", default=["plt", "clt"], choices=["plt", "clt"],
                   help="transcoder sets to score (default: plt clt)")
    p.add_argument("--n-prompts", type=int, default=20, help="prompts per prompt set (default 20)")
    p.add_argument("--coactivation-sentences", type=int, default=3000,
                   help="unlabelled sample sentences for the re-run truth's pipeline (default 3000, the size the "
                        "README's figures were measured at; the supernode scorer's default is 48000)")
    p.add_argument("--truth-sentences", type=int, default=None,
                   help="size of both re-run truth corpora (default: the world's own; at another size the shipped "
                        "file is not checked)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    world = Path(args.world) if args.world else world_dir()
    need_input(world / "manifest.json", "--world manifest.json")
    kinds = list(dict.fromkeys(args.transcoder))  # each set once
    for kind in kinds:  # before any work: the truth files this compares with
        need_input(world / f"feature_truth_{kind}.jsonl", f"--world feature_truth_{kind}.jsonl")
    check_out(args.out, inputs=[world])
    check_sample_stream(args.stream, "--stream")
    for flag, value in (("--n-prompts", args.n_prompts), ("--coactivation-sentences", args.coactivation_sentences),
                        ("--truth-sentences", args.truth_sentences)):
        if value is not None and value < 1:
            raise WorkbenchError(f"{flag} must be >= 1; got {value}. Use the default or a positive count.")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    report = stability(world, kinds, args.stream, args.n_prompts, args.coactivation_sentences, verbose=not args.quiet,
                       truth_sentences=args.truth_sentences)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["argv"] = list(argv if argv is not None else sys.argv[1:])
    atomic_write_json(args.out, report)  # strict JSON (NaN written as null)
    for kind in kinds:
        r = report[kind]
        a, o, s = r["other_corpus"], r["purity_rerun_truth_as_roles"], r["purity_label_free_roles_on_truth_sentences"]
        h = r["headline"]
        print(f"{kind}: truth reproduced {r['reproduced']} ({report['truth_sentences']} sentences); "  # noqa: T201
              f"on another corpus {a['agreement']:.3f} of {a['n_live']} live features keep their key; "
              f"purity with that truth as roles {o['purity']:.3f} "
              f"({o['compression']:.2f}x); label-free roles on the truth's sentences {s['purity']:.3f} "
              f"({s['compression']:.2f}x); the headline {h['purity']:.3f}, over its stable members "
              f"({h['share_stable_members']:.2f} of them) {h['purity_stable_members']:.3f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.scoring.truth_stability"))

"""How steady the feature roles are with the size of their sample, on the demo world (reads no truth).

    python -m workbench.scoring.roles_stability --out roles_stability.json [--world DIR] [--transcoder plt clt]
        [--sentences 3000,6000,12000,24000] [--streams families-sample,roles-check]

The supernode clustering reads each feature's role (:mod:`analyses.families.roles`) from an unlabelled sample, and
a feature whose energy sits near a role's share lands on either side with the sample. Per transcoder set and
sample size this reads the roles on two independent samples of the generator (two RNG streams; the first is the
supernode scorer's) and reports:

* **agreement**: :func:`analyses.families.roles.role_agreement` of the two tables: the share of the features with
  a role in either whose role has the same name in both, the share whose roles correspond under the best
  one-to-one matching of the two tables' roles (``matched_agreement``: kept together, whatever the roles are
  called; a token class that gains or loses a token renames its roles), and the most common changes;
* **split_half**: the split-half agreement of the first sample (:func:`analyses.families.roles.split_half_agreement`:
  its even against its odd sentences): what ``workbench cluster --prompts`` reports on a user's corpus, which has
  no second sample. It measures steadiness at half the sample's size: compare it with ``agreement`` at that size.

Nothing here reads labels or the truth: this sizes a corpus, it does not score a grouping.
"""

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tracer.errors import WorkbenchError
from tracer.io import atomic_write_json
from workbench.cli_parser import script_parser
from workbench.scoring.supernodes import SAMPLE_STREAM, coactivation_sample
from workbench.world.truth import TruthConfig

logger = logging.getLogger(__name__)

SIZES = (3000, 6000, 12000, 24000)
STREAMS = (SAMPLE_STREAM, "roles-check")


def sentence_of_rows(sentences: Sequence[Any]) -> np.ndarray:
    """(n_rows,) each token row's sentence, for a world sample of ``sentences`` (one row per word: the world's
    tokenizer gives each word one token)."""
    return np.repeat(np.arange(len(sentences), dtype=np.int64), [len(s.words) for s in sentences])


def roles_at(world: Path, kind: str, n: int, streams: Sequence[str]) -> dict[str, Any]:
    """The agreement of the roles of two ``n``-sentence samples (``streams``) and the first one's split half."""
    from analyses.families.roles import role_agreement, split_half_agreement
    from workbench.world import generator as gen
    from workbench.world.evaluate import manifest_spec

    spec = manifest_spec(json.loads((world / "manifest.json").read_text()))
    t0 = time.perf_counter()
    tables, halves = [], None
    for i, stream in enumerate(streams):
        sents = gen.sample_corpus(spec, n, seed=0, stream=stream)
        _, roles, sample = coactivation_sample(world, kind, n, sentences=sents)
        tables.append(roles)
        if i == 0:
            prompt = sentence_of_rows(sents)  # (n_rows,)
            if prompt.shape[0] != sample.activations.shape[0]:
                raise WorkbenchError(f"the world's sample must have one token row per word; got {prompt.shape[0]} "
                                     f"words and {sample.activations.shape[0]} rows. Is --world a demo world?")
            keys = np.stack([sample.layer, sample.feature], 1)  # (n_features, 2)
            halves = split_half_agreement(sample.activations, keys, prompt=prompt, tokens=sample.tokens,
                                          next_tokens=sample.next_tokens, token_vectors=sample.token_vectors,
                                          token_words=sample.token_words)
    both = role_agreement(*tables)
    assert halves is not None
    return {"sentences": n, **both.as_dict(), "split_half": halves.as_dict(),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from workbench.cli_safety import check_out, int_items, need_input
    from workbench.paths import world_dir

    p = script_parser("python -m workbench.scoring.roles_stability", __doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--world", default=None, help="world folder (default: the embedded demo world)")
    p.add_argument("--transcoder", nargs="+", default=["plt", "clt"], choices=["plt", "clt"],
                   help="transcoder sets (default: plt clt)")
    p.add_argument("--sentences", default=",".join(map(str, SIZES)),
                   help=f"sample sizes, comma-separated (default {','.join(map(str, SIZES))})")
    p.add_argument("--streams", default=",".join(STREAMS),
                   help=f"the two generator streams of the samples (default {','.join(STREAMS)})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    world = Path(args.world) if args.world else world_dir()
    need_input(world / "manifest.json", "--world manifest.json")
    sizes = int_items(args.sentences, "--sentences")
    if min(sizes) < 2:
        raise WorkbenchError(f"--sentences must be sample sizes >= 2 (a split half needs two sentences); got "
                             f"{args.sentences!r}. Use e.g. 3000,6000.")
    streams = [s.strip() for s in args.streams.split(",")]
    truth_stream = TruthConfig().stream  # the truth's own corpus: never a sample here
    if len(streams) != 2 or len(set(streams)) != 2 or not all(streams) or truth_stream in streams:
        raise WorkbenchError(f"--streams must name two different streams, neither the truth's ({truth_stream!r}); "
                             f"got {args.streams!r}. Use e.g. {','.join(STREAMS)}.")
    check_out(args.out, inputs=[world])
    t0 = time.perf_counter()
    kinds = list(dict.fromkeys(args.transcoder))
    report: dict[str, Any] = {"protocol": __doc__, "streams": streams}
    for kind in kinds:
        report[kind] = [roles_at(world, kind, n, streams) for n in tqdm(sizes, desc=f"roles {kind}",
                                                                          disable=args.quiet)]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["argv"] = list(argv if argv is not None else sys.argv[1:])
    atomic_write_json(args.out, report)
    for kind in kinds:
        rows = ", ".join(f"{r['sentences']}: {r['matched_agreement']:.3f} / {r['agreement']:.3f} (split half "
                         f"{r['split_half']['matched_agreement']:.3f})" for r in report[kind])
        print(f"{kind}: roles kept between two samples of each size, matched / by name: {rows}")  # noqa: T201
    return 0


if __name__ == "__main__":  # pragma: no cover
    from workbench.cli_safety import run_script

    raise SystemExit(run_script(main, "python -m workbench.scoring.roles_stability"))

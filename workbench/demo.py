"""`workbench demo`: trace demo prompts on the embedded demo world and write a plain HTML report.

(Placeholder registration until the demo world lands; see issue 4.)
"""

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the demo on the embedded demo world")
    p.add_argument("--out", default="workbench-demo", help="output folder (default ./workbench-demo)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or info logs")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from tracer.errors import WorkbenchError

    raise WorkbenchError("the demo world is not built yet; run `workbench trace` on your own model.")

"""The CLI's log lines and progress bars share stderr without breaking each other's lines."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_COMMAND = textwrap.dedent("""
    import logging, sys, types
    from tqdm.auto import tqdm
    from workbench import cli

    def run(args):
        for i in tqdm(range(3), desc="families", disable=args.quiet):
            logging.getLogger("analyses.x").info("family %d done", i)
        return 0

    def register(sub):
        p = sub.add_parser("loop")
        p.add_argument("--quiet", action="store_true")
        p.set_defaults(func=run)

    sys.modules["loop_cmd"] = types.SimpleNamespace(register=register)
    cli.SUBCOMMANDS = {"loop": "loop_cmd"}
    sys.exit(cli.main(["loop", *sys.argv[1:]]))
""")


def _stderr(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-c", _COMMAND, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stderr


def test_a_log_line_inside_a_progress_loop_starts_its_own_line() -> None:
    """`manifold discover` logged one line per family into the middle of its bar ("...| 0/3 [...]INFO ...")."""
    err = _stderr()
    lines = [line for line in err.split("\n") if "family" in line and "done" in line]
    assert len(lines) == 3, err
    for line in lines:
        shown = line.split("\r")[-1]  # what a terminal shows: the text after the last carriage return
        assert shown.startswith("INFO analyses.x: family ") and shown.endswith(" done"), repr(line)
    assert "families: 100%" in err


def test_quiet_shows_neither() -> None:
    assert _stderr("--quiet") == ""

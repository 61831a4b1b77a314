"""The CLI's log lines and progress bars share stderr without breaking each other's lines."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
    if sys.argv[1:2] == ["--log-file"]:  # a program that calls the CLI with its own log handler
        logging.basicConfig(filename=sys.argv[2], level=logging.INFO, format="%(name)s %(message)s")
        sys.argv[1:3] = []
    if sys.argv[1:2] == ["--own-console"]:  # ... or its own console handler, at WARNING
        own = logging.StreamHandler(sys.stderr)
        own.setLevel(logging.WARNING)
        logging.getLogger().addHandler(own)
        logging.getLogger().setLevel(logging.INFO)
        sys.argv[1:2] = []
    sys.exit(cli.main(["loop", *sys.argv[1:]]))
""")


def _run(*argv: str, stderr: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _COMMAND, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=stderr, text=True, timeout=120, check=True)


def _stderr(*argv: str) -> str:
    return _run(*argv).stderr


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


def test_a_program_with_its_own_log_file_keeps_it(tmp_path: Path) -> None:
    """The redirect once added a console handler of its own: a caller's log lines were copied to stderr."""
    log = tmp_path / "run.log"
    assert _stderr("--log-file", str(log), "--quiet") == ""
    assert log.read_text().count("analyses.x family") == 3


def test_a_program_with_its_own_console_handler_keeps_its_level() -> None:
    """The redirect replaced any stderr handler with tqdm's, which has no level: a caller's WARNING console got
    the INFO lines."""
    err = _stderr("--own-console")
    assert "family" not in err and "families: 100%" in err, err


def test_closed_stderr_sends_no_log_lines_to_stdout() -> None:
    """Started with stderr closed (``2>&-``), a progress bar crashed the command (tqdm wrote to None), and
    the logging redirect would have sent log lines to stdout, mixing them into a command's output."""
    closed = subprocess.run([sys.executable, "-c", _COMMAND], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            timeout=120, check=False, preexec_fn=lambda: os.close(2))
    assert closed.returncode == 0 and "family" not in closed.stdout, closed


def test_no_command_is_one_line_on_stderr(capsys):
    """It printed the whole help to stdout (exit 2, nothing on stderr)."""
    from workbench.cli import main

    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("workbench: error: a command is required, one of demo, trace,")
    assert len(err.strip().splitlines()) == 1


def test_verbose_after_the_command_and_errors_name_the_action(capsys, tmp_path):
    """-v was refused after a command (-q was taken); manifold's and world's errors named only "manifold"."""
    from workbench.cli import build_parser, main

    for argv in (["prune", "g.npz", "--out", "p.npz", "-v"], ["world", "build", "--out", "w", "-v"],
                 ["manifold", "fit", "--model", "m", "--transcoders", "t", "--layer", "1", "--out", "x", "--verbose"]):
        assert build_parser(argv).parse_args(argv).verbose, argv
    assert main(["world", "build", "--out", str(tmp_path / "f" / "w"), "--tiny", "--seed", "-1"]) == 2
    assert capsys.readouterr().err.startswith("workbench world build: error: ")


def test_an_unknown_option_is_named_by_its_command(capsys):
    """It was reported as "workbench: error: unrecognized arguments", not by the command given it."""
    from workbench.cli import main

    for argv, name, unknown in ((["prune", "g.npz", "--out", "x.npz", "--bogus"], "prune", "--bogus"),
                                (["world", "build", "--out", "w", "--zz", "3"], "world build", "--zz 3")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"workbench {name}: error: unrecognized arguments: {unknown}"), err


def test_python_dash_m_workbench_is_the_workbench_command() -> None:
    """`python -m workbench` said "'workbench' is a package and cannot be directly executed"."""
    from tracer import __version__

    done = subprocess.run([sys.executable, "-m", "workbench", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"manifold-workbench {__version__}", done
    done = subprocess.run([sys.executable, "-m", "workbench", "prune"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("workbench prune: error: ") and not done.stdout, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr

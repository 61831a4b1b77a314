"""The `python -m workbench...` scorers and benchmarks: bad input is one line and exit 2, checked before
any work (a scorer once wrote its report over the world's truth file it read, and into the world folder)."""

import hashlib
from pathlib import Path

import pytest

from tracer.errors import WorkbenchError
from workbench.bench import discovery_rule
from workbench.cli_safety import Terminated, run_script
from workbench.paths import world_dir
from workbench.scoring import supernodes as scoring

WORLD = world_dir()
pytestmark = pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys: pytest.CaptureFixture[str], main, argv: list[str]) -> tuple[int, str]:  # noqa: ANN001
    code = run_script(lambda: main(argv), "python -m script")
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--out", str(WORLD / "feature_truth_plt.jsonl")], "--out must not overwrite or go inside the run's inputs"),
    (["--out", "OUT", "--sweep-min-affinity", "0.9,5"], "--sweep-min-affinity must be comma-separated affinities"),
    (["--out", "OUT", "--n-prompts", "-3"], "--n-prompts and --coactivation-sentences must be >= 0"),
    (["--out", "OUT", "--world", "NOWHERE"], "--world manifest.json must exist"),
])
def test_the_supernode_scorer_refuses_bad_input_before_any_work(tmp_path, capsys, argv, needle):
    truth = WORLD / "feature_truth_plt.jsonl"
    before = _digest(truth)
    argv = [a.replace("OUT", str(tmp_path / "s.json")).replace("NOWHERE", str(tmp_path / "none")) for a in argv]
    code, err = _run(capsys, scoring.main, [*argv, "--transcoder", "plt", "--interventions", "none", "-q"])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert _digest(truth) == before and not (tmp_path / "s.json").exists()


def test_an_output_folder_is_refused_before_the_benchmark_runs(tmp_path, capsys):
    code, err = _run(capsys, discovery_rule.main, ["--fast", "--out", str(tmp_path)])
    assert code == 2 and "--out must be a regular file or a new path" in err, err


def test_run_script_keeps_bugs_and_ends_interrupts_cleanly(capsys):
    def bug() -> int:
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        run_script(bug, "python -m script")

    def terminated() -> int:
        raise Terminated()

    assert run_script(terminated, "python -m script") == 143
    assert capsys.readouterr().err == "python -m script: terminated\n"

    def bad() -> int:
        raise WorkbenchError("n must be >= 1; got 0.")

    assert run_script(bad, "python -m script") == 2
    assert capsys.readouterr().err == "python -m script: error: n must be >= 1; got 0.\n"


SCRIPTS = ["workbench.manifold_world", "workbench.manifold_world_discovery", "workbench.scoring.supernodes",
           "workbench.scoring.truth_stability", "workbench.bench.load_checks", "workbench.bench.families_world",
           "workbench.bench.supernodes", "workbench.bench.activations", "workbench.bench.discovery_rule",
           "workbench.bench.token_classes_scale", "workbench.bench.families_scale"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_answers_usage_errors_in_one_line_like_the_cli(name, capsys):
    """They were plain argparse: a usage block, a program name of 'manifold_world.py', '--out a --out b' taken."""
    import importlib

    main = importlib.import_module(name).main
    required = ["--tiny-world", "t"] if name.endswith("families_world") else []
    for argv, needle in (([*required, "--out", "a.json", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
                         (["--out", "a.json", "--out", "b.json"], "argument --out: given twice; give it once")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith(f"python -m {name}: error: {needle}. See "), err
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv,hint", [
    (["intervene", "--model", "m", "--transcoders", "t", "--prompt", "p", "--set", "-1:2:3=0"], "--set=-1:2:3=0"),
    (["intervene", "--model", "m", "--transcoders", "t", "--prompt", "p", "--scale", "1:2:3=0", "--add", "-1:0:1=2"],
     "--add=-1:0:1=2"),
    (["trace", "--model", "m", "--transcoders", "t", "--prompt", "p", "--out", "-g.safetensors"],
     "--out=-g.safetensors"),
    (["trace", "--model", "m", "--transcoders", "t", "--prompt", "p", "--out", "g.safetensors", "--max-feature-nodes",
      "--quiet"], None),  # a missing value: no hint (the next word is an option)
])
def test_a_value_that_starts_with_a_dash_gets_the_equals_form_in_the_error(argv, hint, capsys):
    """argparse reads '-1:2:3=0' as an option and said only "expected one argument"."""
    from workbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "expected one argument" in err and len(err.strip().splitlines()) == 1, err
    if hint is None:
        assert "= form" not in err, err
    else:
        assert f"(a value that starts with '-' needs the = form: {hint})" in err, err

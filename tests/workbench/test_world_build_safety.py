"""`workbench world build` and `world truth` write a world whole or not at all.

A build goes into a hidden folder beside --out and replaces it only when complete: a rebuild
leaves no file of the old world (a 2-layer world built over a 4-layer one has 2 layers), an
interrupted or failed build leaves the old world as it was (and no temp folder), and a later
build removes the temp folder of a killed one. Also: bad --out / --seed values are refused before
anything is created, and the model's files get the umask's permissions.

Most tests replace the training pipeline (``build._build``) with a fake that writes a small
world, so they check the file handling in a second; one slow test runs the real tiny build.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tracer.errors import WorkbenchError
from workbench.cli import build_parser, main
from workbench.cli_safety import Terminated
from workbench.paths import world_dir
from workbench.world import build

ROOT = Path(__file__).resolve().parents[2]
shipped_world = pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(),
                                   reason="no demo world in data/world")


def _write_world(folder: Path, n_layers: int, seed: int, *, stop_after_model: bool = False) -> None:
    """A fake world: the files a build writes (model, transcoders per layer, labels, truth, manifest)."""
    for name in ("model", "plt", "clt"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / "model" / "model.safetensors").write_text(f"model seed {seed}")
    if stop_after_model:
        return
    for i in range(n_layers):
        (folder / "plt" / f"layer_{i}.safetensors").write_text(f"plt {i} seed {seed}")
        (folder / "clt" / f"W_enc_{i}.safetensors").write_text(f"clt {i} seed {seed}")
    for name in ("labels_plt.jsonl", "labels_clt.jsonl", "feature_truth_plt.jsonl", "feature_truth_clt.jsonl"):
        (folder / name).write_text(f"{name} seed {seed}\n")
    (folder / "manifest.json").write_text(json.dumps({"seed": seed, "n_layers": n_layers}))


def _fake_build(n_layers: int, *, fail: BaseException | None = None) -> Callable[..., dict[str, Any]]:
    """A stand-in for build._build: writes a fake world (or its model only, then raises `fail`)."""

    def fake(out: Path, seed: int, tiny: bool, cfg: Any, progress: bool) -> dict[str, Any]:
        _write_world(out, n_layers, seed, stop_after_model=fail is not None)
        if fail is not None:
            raise fail
        return {"n_layers": n_layers}

    return fake


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: (content, permission bits)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode & 0o777)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def old_world(tmp_path: Path) -> Path:
    """A 4-layer (fake) world with a README.md and a folder of the user's own."""
    world = tmp_path / "world"
    _write_world(world, 4, seed=0)
    (world / "README.md").write_text("how this world was built\n")
    (world / "notes").mkdir()
    (world / "notes" / "n.txt").write_text("mine\n")
    return world


# ---------------------------------------------------------------- bug 1: replace whole, or not at all


def test_rebuild_replaces_the_whole_world_and_keeps_other_files(old_world: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build", _fake_build(2))
    assert build.build_world(old_world, seed=1) == {"n_layers": 2}
    assert sorted(p.name for p in (old_world / "plt").iterdir()) == ["layer_0.safetensors", "layer_1.safetensors"]
    assert sorted(p.name for p in (old_world / "clt").iterdir()) == ["W_enc_0.safetensors", "W_enc_1.safetensors"]
    assert json.loads((old_world / "manifest.json").read_text()) == {"seed": 1, "n_layers": 2}
    assert (old_world / "model" / "model.safetensors").read_text() == "model seed 1"
    assert (old_world / "README.md").read_text() == "how this world was built\n"
    assert (old_world / "notes" / "n.txt").read_text() == "mine\n"
    assert os.listdir(old_world.parent) == ["world"]  # no temp or old folder left beside it


@pytest.mark.parametrize("fail", [KeyboardInterrupt(), Terminated(), RuntimeError("boom")])
def test_interrupted_or_failed_rebuild_leaves_the_old_world_untouched(old_world: Path, fail: BaseException,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(old_world)
    monkeypatch.setattr(build, "_build", _fake_build(2, fail=fail))
    with pytest.raises(type(fail)):
        build.build_world(old_world, seed=1)
    assert _snapshot(old_world) == before
    assert os.listdir(old_world.parent) == ["world"]


def test_interrupted_new_build_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build", _fake_build(2, fail=Terminated()))
    with pytest.raises(Terminated):
        build.build_world(tmp_path / "a" / "b" / "world", seed=0)
    assert os.listdir(tmp_path) == []  # neither the world, nor its temp folder, nor the parents made for it


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_a_later_build_removes_the_temp_folder_of_a_killed_one(old_world: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.world.staging import stage_path

    dead, live = stage_path(old_world, "build", pid=_dead_pid()), stage_path(old_world, "build", pid=1)
    for stale in (dead, live):
        _write_world(stale, 1, seed=9, stop_after_model=True)
    monkeypatch.setattr(build, "_build", _fake_build(2))
    build.build_world(old_world, seed=1)
    assert sorted(os.listdir(old_world.parent)) == sorted([live.name, "world"])  # a live process's is kept
    shutil.rmtree(live)


def test_a_world_left_aside_by_a_killed_swap_is_put_back(old_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL between the swap's two renames leaves the old world under its aside name only."""
    from workbench.world.staging import stage_path

    before = _snapshot(old_world)
    aside = stage_path(old_world, "old", pid=_dead_pid())
    old_world.rename(aside)
    monkeypatch.setattr(build, "_build", _fake_build(2, fail=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        build.build_world(old_world, seed=1)
    assert _snapshot(old_world) == before and os.listdir(old_world.parent) == ["world"]


def test_build_refuses_a_folder_that_is_not_a_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build", _fake_build(2))
    (tmp_path / "thesis.tex").write_text("\\begin{document}")
    with pytest.raises(WorkbenchError, match=r"out_dir \(--out\) must be a new or empty folder or a built world"):
        build.build_world(tmp_path, seed=0)
    assert os.listdir(tmp_path) == ["thesis.tex"]
    half = tmp_path / "half"  # what an interrupted build of an older version left: accepted, and replaced
    _write_world(half, 4, seed=0, stop_after_model=True)
    build.build_world(half, seed=1)
    assert (half / "manifest.json").is_file()


def test_build_through_a_symlink_replaces_the_folder_it_names(old_world: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    link = old_world.parent / "link"
    link.symlink_to(old_world)
    monkeypatch.setattr(build, "_build", _fake_build(2))
    build.build_world(link, seed=1)
    assert link.is_symlink() and os.readlink(link) == str(old_world)
    assert len(list((old_world / "plt").iterdir())) == 2
    assert sorted(os.listdir(old_world.parent)) == ["link", "world"]


DRIVER = """
import signal, sys, time
sys.path.insert(0, {root!r})
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent may have ignored SIGINT
import workbench.world.build as build

def fake(out, seed, tiny, cfg, progress):
    (out / "model").mkdir(exist_ok=True)
    (out / "model" / "model.safetensors").write_text("half-built")
    print("ready", flush=True)
    time.sleep(120)

build._build = fake
from workbench.cli import main
sys.exit(main(["world", "build", "--quiet", "--out", sys.argv[1]]))
"""


@pytest.mark.parametrize("signum, code, exists", [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, False)])
def test_a_signal_during_a_build_leaves_the_old_world_or_nothing(old_world: Path, signum: int, code: int,
                                                                 exists: bool) -> None:
    out = old_world if exists else old_world.parent / "new"
    before = _snapshot(old_world)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(root=str(ROOT)), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signum)
        assert proc.wait(60) == code
    finally:
        proc.kill()
        proc.communicate()
    assert _snapshot(old_world) == before
    assert os.listdir(old_world.parent) == ["world"]


def test_deferred_signals_wait_for_the_block() -> None:
    from workbench.cli_safety import terminate_on_sigterm
    from workbench.world.staging import deferred_signals

    steps = []
    with pytest.raises(Terminated), terminate_on_sigterm():
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler would run in here
                pass
            steps.append("block done")
        for _ in range(10_000):
            pass
        steps.append("not reached")
    assert steps == ["block done"]


@shipped_world
def test_truth_rewrites_the_world_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`world truth` (rebuild_truth): interrupted while writing its files, it leaves the world as it was."""
    from workbench.world.truth import TruthConfig, load_truth

    world = tmp_path / "world"
    shutil.copytree(world_dir(), world)
    before = _snapshot(world)
    shipped = {name: list(load_truth(world / f"feature_truth_{name}.jsonl").values()) for name in ("plt", "clt")}
    monkeypatch.setattr(build, "world_truth", lambda *args, **kw: {"plt": shipped["plt"][:5], "clt": shipped["clt"]})
    write = build.write_world_truth

    def write_then_stop(*args: Any, **kw: Any) -> dict[str, Any]:
        write(*args, **kw)  # every truth and label file written; the manifest not yet
        raise Terminated()

    monkeypatch.setattr(build, "write_world_truth", write_then_stop)
    with pytest.raises(Terminated):
        build.rebuild_truth(world, cfg=TruthConfig(n_sentences=7))
    assert _snapshot(world) == before and os.listdir(tmp_path) == ["world"]
    monkeypatch.setattr(build, "write_world_truth", write)
    build.rebuild_truth(world, cfg=TruthConfig(n_sentences=7))
    after = _snapshot(world)
    assert len(load_truth(world / "feature_truth_plt.jsonl")) == 5
    assert json.loads((world / "manifest.json").read_text())["truth"]["config"]["n_sentences"] == 7
    assert {k: v for k, v in after.items() if "truth" not in k and "labels" not in k and k != "manifest.json"} == {
        k: v for k, v in before.items() if "truth" not in k and "labels" not in k and k != "manifest.json"}
    assert os.listdir(tmp_path) == ["world"]


# ---------------------------------------------------------------- bug 2: an empty path is not '.'


@pytest.mark.parametrize("argv, flag", [
    (["world", "build", "--tiny", "--out", ""], "--out"),
    (["world", "truth", "--world", ""], "--world"),
    (["manifold", "fit", "--out", ""], "--out"),
    (["manifold", "steer", "--fit", ""], "--fit"),
    (["manifold", "steer", "--out", ""], "--out"),
    (["manifold", "discover", "--families", ""], "--families"),
    (["manifold", "discover", "--labels", ""], "--labels"),
    (["manifold", "discover", "--out", ""], "--out"),
])
def test_an_empty_path_flag_is_refused(argv: list[str], flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        build_parser(argv).parse_args(argv)
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be a path; got ''" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_build_world_refuses_an_empty_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build, "_build", _fake_build(2))
    with pytest.raises(WorkbenchError, match=r"out_dir \(--out\) must be a path; got ''"):
        build.build_world("", seed=0)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- bug 3: seeds torch cannot take


@pytest.mark.parametrize("seed", [2**63, 99999999999999999999, -1])
def test_a_seed_out_of_range_is_refused_before_anything_is_made(seed: int, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(build, "_build", _fake_build(2, fail=AssertionError("the build must not start")))
    out = tmp_path / "x"
    assert main(["world", "build", "--tiny", "--quiet", "--out", str(out), "--seed", str(seed)]) == 2
    assert "--seed must be an integer in [0, 2**63 - 1]" in capsys.readouterr().err
    with pytest.raises(WorkbenchError, match=r"seed must be an integer in \[0, 2\*\*63 - 1\]"):
        build.build_world(out, seed=seed, tiny=True)
    assert os.listdir(tmp_path) == []


def test_the_largest_seed_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build", _fake_build(2))
    assert main(["world", "build", "--quiet", "--out", str(tmp_path / "x"), "--seed", str(2**63 - 1)]) == 0
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["seed"] == 2**63 - 1


# ---------------------------------------------------------------- bug 4: the model's file modes


def test_saved_model_files_get_the_umask_permissions(tmp_path: Path) -> None:
    from workbench.world import language as lang
    from workbench.world.tokenizer import build_tokenizer
    from workbench.world.train_model import ModelConfig, build_model

    tokenizer = build_tokenizer(lang.vocabulary())
    model = build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_kv_heads=1, head_dim=8, d_mlp=32),
                        len(tokenizer), seed=0)
    old = os.umask(0o027)
    try:
        build._save_model(model, tokenizer, tmp_path / "model")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o640}, modes


# ---------------------------------------------------------------- the real tiny build


@shipped_world
@pytest.mark.slow
def test_tiny_rebuild_over_the_shipped_world_is_a_whole_tiny_world(tmp_path: Path) -> None:
    """The reported case: --tiny (2 layers) over a copy of the 4-layer shipped world left plt/layer_2,3
    and clt/W_*_2,3, and loading the world failed; every file must also follow the umask."""
    from tracer.transcoders.loaders import load_transcoders
    from workbench.world.evaluate import load_world

    world = tmp_path / "world"
    shutil.copytree(world_dir(), world)
    old = os.umask(0o022)
    try:
        build.build_world(world, seed=0, tiny=True)
    finally:
        os.umask(old)
    n_layers = build.default_config(tiny=True).model.n_layers
    for name in ("plt", "clt"):
        assert load_transcoders(world / name).n_layers == n_layers
    assert sorted(p.name for p in (world / "plt").glob("layer_*")) == [f"layer_{i}.safetensors"
                                                                      for i in range(n_layers)]
    loaded = load_world(world)
    assert loaded.model.config.num_hidden_layers == n_layers and loaded.manifest["tiny"] is True
    assert (world / "README.md").read_bytes() == (world_dir() / "README.md").read_bytes()
    modes = {str(p.relative_to(world)): p.stat().st_mode & 0o777 for p in world.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o644}, modes
    assert os.listdir(tmp_path) == ["world"]

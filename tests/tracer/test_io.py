"""tracer.io: atomic writes (umask, fsync, rename, temp pattern), stale-temp cleanup, the file lock,
and the output/input path checks."""

import errno
import json
import multiprocessing as mp
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from tracer.errors import WorkbenchError
from tracer.io import (
    TEMP_NAME_MAX,
    atomic_path,
    atomic_write_text,
    check_output_path,
    current_umask,
    file_lock,
    is_stale_temp,
    remove_stale_temps,
    require_readable,
    temp_name,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_new_files_get_the_umask_mode_not_0600(tmp_path, umask_027):
    assert current_umask() == 0o027
    path = atomic_write_text(tmp_path / "a.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_replacing_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    path.chmod(0o604)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o604


def test_temp_files_have_the_pattern_and_vanish_on_error(tmp_path):
    target = tmp_path / "g.safetensors"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".mwtmp-") and tmp.name.endswith(".tmp")
        assert len(tmp.name) <= TEMP_NAME_MAX
        tmp.write_text("half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "previous"  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]


def test_a_write_error_names_the_output_not_the_temp_file(tmp_path):
    """A full disk raises ENOSPC from write(), which names no file: the error must name the output (the
    CLI's one line said "no space left on the device writing." with no path)."""
    import errno

    from workbench.cli_safety import error_line

    target = tmp_path / "g.json"
    with pytest.raises(OSError) as info, atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert error_line(info.value) == f"no space left on the device writing {str(target)!r}. Free some space or " \
                                     "write elsewhere."
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    assert info.value.filename == str(target) and not target.exists()
    other = tmp_path / "input.txt"
    with pytest.raises(FileNotFoundError) as info, atomic_path(target):
        other.read_text()  # an error about another file keeps its name
    assert info.value.filename == str(other)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_keyboard_interrupt_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "s.json"
    atomic_write_text(target, "complete")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("par")
        raise KeyboardInterrupt
    assert target.read_text() == "complete" and len(list(tmp_path.iterdir())) == 1


def _write_then_die(target: str) -> None:  # runs in a child process
    with atomic_path(target) as tmp:
        tmp.write_text("partial")
        os.kill(os.getpid(), signal.SIGKILL)  # SIGKILL: no cleanup runs at all


def test_sigkill_mid_write_leaves_target_absent_and_a_temp_a_later_run_removes(tmp_path):
    target = tmp_path / "out.json"
    proc = mp.get_context("fork").Process(target=_write_then_die, args=(str(target),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert not target.exists()
    leftovers = list(tmp_path.glob(".mwtmp-*"))
    assert len(leftovers) == 1 and is_stale_temp(leftovers[0])  # its process is gone
    assert remove_stale_temps(tmp_path) == leftovers and not list(tmp_path.iterdir())


def test_live_and_foreign_temps_are_kept_until_old(tmp_path):
    mine = tmp_path / temp_name()
    mine.write_text("being written")
    other = tmp_path / f".mwtmp-{os.getpid()}-000000-abcdefgh.tmp"  # another host's pid: unknown liveness
    other.write_text("x")
    unrelated = tmp_path / ".mwtmp-notes.txt"
    unrelated.write_text("not ours")
    assert remove_stale_temps(tmp_path) == []
    old = time.time() - 2 * 24 * 3600
    os.utime(other, (old, old))
    assert remove_stale_temps(tmp_path) == [other]
    assert mine.exists() and unrelated.exists()


def _upsert(folder: str, key: str, n: int) -> None:  # runs in a child process
    index = Path(folder) / "index.json"
    for i in range(n):
        with file_lock(index):
            data = json.loads(index.read_text()) if index.exists() else {}
            data[f"{key}-{i}"] = i
            atomic_write_text(index, json.dumps(data))


def test_file_lock_serialises_read_modify_write(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_upsert, args=(str(tmp_path), f"p{k}", 15)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    data = json.loads((tmp_path / "index.json").read_text())
    assert len(data) == 60  # no lost update


def test_concurrent_exports_keep_every_index_entry(tmp_path):
    """`workbench export` runs into one folder: graph-metadata.json lists every slug."""
    import dataclasses

    from tests.tracer.test_graph_io import random_graph

    graph = random_graph(2, 4, 6, 2, seed=1)
    graph = dataclasses.replace(graph, adjacency=graph.adjacency.tril(-1))  # a DAG
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_export_many, args=(graph, str(tmp_path), k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    index = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert sorted(g["slug"] for g in index["graphs"]) == sorted(f"g{k}-{i}" for k in range(4) for i in range(5))


def _export_many(graph, folder: str, k: int) -> None:  # noqa: ANN001 - runs in a child process
    from tracer.graph.export import export_neuronpedia

    for i in range(5):
        export_neuronpedia(graph, folder, slug=f"g{k}-{i}", scan="s")


# ----------------------------------------------------------------------------- path checks
def test_check_output_path_accepts_new_and_regular_paths(tmp_path):
    assert check_output_path(tmp_path / "new" / "deeper" / "g.npz") == tmp_path / "new" / "deeper" / "g.npz"
    (tmp_path / "old.npz").write_text("x")
    check_output_path(tmp_path / "old.npz")
    check_output_path(tmp_path, folder=True)
    check_output_path(tmp_path / ("n" * 255))  # the longest name the file system takes


@pytest.mark.parametrize("kind", ["fifo", "dir", "symlink-to-fifo"])
def test_check_output_path_refuses_what_is_not_a_file(tmp_path, kind):
    out = tmp_path / "out"
    if kind == "dir":
        out.mkdir()
    else:
        os.mkfifo(tmp_path / "fifo")
        if kind == "fifo":
            out = tmp_path / "fifo"
        else:
            out.symlink_to(tmp_path / "fifo")
    with pytest.raises(WorkbenchError, match="must be a regular file"):
        check_output_path(out, name="--out")


def test_atomic_path_never_replaces_a_special_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(WorkbenchError, match="FIFO"), atomic_path(tmp_path / "fifo") as tmp:
        tmp.write_text("x")
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode) and len(list(tmp_path.iterdir())) == 1


def test_check_output_path_refuses_inputs(tmp_path):
    (tmp_path / "model").mkdir()
    weights = tmp_path / "model" / "w.safetensors"
    weights.write_text("w")
    (tmp_path / "link.safetensors").symlink_to(weights)
    for out in (weights, tmp_path / "model" / "new.npz", tmp_path / "link.safetensors", tmp_path / "model"):
        with pytest.raises(WorkbenchError, match="inputs"):
            check_output_path(out, inputs=[tmp_path / "model"], folder=out.name == "model")
    with pytest.raises(WorkbenchError, match="inputs"):
        check_output_path(tmp_path / "link.safetensors", inputs=[weights])
    check_output_path(tmp_path / "elsewhere.npz", inputs=[tmp_path / "model", tmp_path / "missing"])


def test_check_output_path_parents(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(WorkbenchError, match="is a file"):
        check_output_path(tmp_path / "f" / "g.npz")
    with pytest.raises(WorkbenchError, match="at most"):
        check_output_path(tmp_path / ("x" * 256))
    with pytest.raises(WorkbenchError, match="at most"):
        check_output_path(tmp_path / ("d" * 300) / "g.npz")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if Path(p) == tmp_path and m & os.W_OK
                        else real(p, m, **kw))
    with pytest.raises(WorkbenchError, match="not writable"):
        check_output_path(tmp_path / "sub" / "g.npz")


def test_a_folder_that_refuses_files_is_refused_up_front_even_when_access_allows(tmp_path, monkeypatch):
    """QA pass 30: os.access passes for root (and on read-only mounts), so a whole job ran before its write
    failed, naming the temp file; a real probe (a temp file made and removed) finds it up front."""
    real_open = os.open

    def read_only(path, flags, *args):
        if Path(path).parent == tmp_path / "ro" and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(WorkbenchError, match=r"output path must be in a writable folder; got .*ro/g.npz', but .* "
                                             r"is not writable \(Read-only file system\)"):
        check_output_path(tmp_path / "ro" / "g.npz")
    with pytest.raises(WorkbenchError, match=r"must be a writable folder; got .*/ro', which is not writable"):
        check_output_path(tmp_path / "ro", folder=True)
    monkeypatch.setattr(os, "open", real_open)
    assert check_output_path(tmp_path / "ro" / "g.npz") == tmp_path / "ro" / "g.npz"
    assert os.listdir(tmp_path / "ro") == [], "the probe leaves nothing behind"
    if os.path.isdir("/proc/self"):  # Linux: /proc takes no new files, even as root
        with pytest.raises(WorkbenchError, match="'/proc' is not writable"):
            check_output_path("/proc/x.npz")


def test_a_file_output_given_as_a_folder_path_is_refused(tmp_path):
    """"--out newdir/" wrote a file named newdir (Path drops the trailing slash)."""
    with pytest.raises(WorkbenchError, match=r"output path must be a file path; got '.*newdir/', a folder path"):
        check_output_path(f"{tmp_path}/newdir/")
    assert check_output_path(f"{tmp_path}/newdir/", folder=True) == tmp_path / "newdir"


def test_require_readable_says_the_true_cause(tmp_path, monkeypatch):
    with pytest.raises(WorkbenchError, match="does not exist"):
        require_readable(tmp_path / "nope", "graph file")
    (tmp_path / "d").mkdir()
    with pytest.raises(WorkbenchError, match="must be a file; .* a folder"):
        require_readable(tmp_path / "d", "graph file")
    f = tmp_path / "g.npz"
    f.write_text("x")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if Path(p) == f else real(p, m, **kw))
    with pytest.raises(WorkbenchError, match="exists but cannot be read"):
        require_readable(f, "graph file")

    def denied(p, *a, **kw):  # noqa: ANN001
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(WorkbenchError, match="permission denied on a parent folder"):
        require_readable(f, "graph file")


def test_an_output_under_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "plain.txt").write_text("a file, not a folder")
    for target in (tmp_path / "plain.txt" / "out.json", tmp_path / "plain.txt" / "deeper" / "out.json"):
        with pytest.raises(WorkbenchError, match="output path must be inside a folder; got .* is a file"):
            with atomic_path(target) as tmp:
                tmp.write_text("never")
    assert (tmp_path / "plain.txt").read_text() == "a file, not a folder"

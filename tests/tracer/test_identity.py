"""Transcoder signatures: equal for copies, different for other weights, absent for missing folders."""

import shutil

import pytest

from tests.helpers_models import save_transcoders, tiny_model, tiny_transcoders
from tracer.errors import WorkbenchError
from tracer.transcoders.identity import check_same_transcoders, transcoder_signature


def test_signatures_tell_sets_apart_and_survive_copies(tmp_path):
    loaded = tiny_model("qwen3")
    a = save_transcoders(tiny_transcoders(loaded, "plt", d_transcoder=32), tmp_path / "a")
    b = save_transcoders(tiny_transcoders(loaded, "plt", d_transcoder=32, seed=1), tmp_path / "b")
    copy = shutil.copytree(a, tmp_path / "copy")
    sig = transcoder_signature(a)
    assert sig is not None and sig == transcoder_signature(copy) != transcoder_signature(b)
    assert transcoder_signature(tmp_path / "missing") is None
    check_same_transcoders(sig, str(a), str(copy), "--x", "f.json")  # a copy passes
    check_same_transcoders(None, str(tmp_path / "moved-away"), str(a), "--x", "f.json")  # nothing to compare
    check_same_transcoders(None, None, str(a), "--x", "f.json")
    with pytest.raises(WorkbenchError, match=r"^--x must be made with the transcoders .* in 'f.json'"):
        check_same_transcoders(sig, str(a), str(b), "--x", "f.json")
    with pytest.raises(WorkbenchError, match="--x must be made with the transcoders"):
        check_same_transcoders(None, str(b), str(a), "--x", "f.json")  # an older file: by the folder it names

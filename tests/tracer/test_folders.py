"""Errors about the wrong kind of folder say which folder was probably meant."""

from pathlib import Path

import pytest

from tracer.errors import WorkbenchError
from tracer.folders import folder_hint, folder_kind


def _world(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "config.json").write_text("{}")
    for kind in ("plt", "clt"):
        (root / kind).mkdir()
        (root / kind / "config.yaml").write_text("model_kind: transcoder_set\n")
    (root / "manifest.json").write_text("{}")
    return root


def test_kinds_and_hints(tmp_path):
    w = _world(tmp_path / "world")
    assert [folder_kind(p) for p in (w, w / "model", w / "plt", tmp_path)] == ["world", "model", "transcoders", None]
    assert folder_hint(w, "model") == f" Did you mean {str(w / 'model')!r}? ({str(w)!r} looks like a world folder)"
    assert str(w / "clt") in folder_hint(w / "model", "transcoders") and "looks like a model folder" in \
        folder_hint(w / "model", "transcoders")
    assert folder_hint(w / "plt", "world") == \
        f" Did you mean {str(w)!r}? ({str(w / 'plt')!r} looks like a transcoder set folder)"
    assert folder_hint(tmp_path / "elsewhere", "model") == ""  # nothing nearby: no guess


def test_loaders_name_the_folder_meant(tmp_path):
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    w = _world(tmp_path / "world")
    with pytest.raises(WorkbenchError, match=r"Did you mean '.*world/model'\?"):
        load_model(w)
    with pytest.raises(WorkbenchError, match=r"Did you mean '.*world/clt' or '.*world/plt'\?"):
        load_transcoders(w / "model")

"""What a folder looks like (a model, a transcoder set, a demo world), for hints in errors.

A researcher who passes the demo world's folder where its model belongs, or a model folder where
the transcoders belong, gets told which folder was probably meant ("did you mean
'data/world/model'?") instead of only what is missing.
"""

from pathlib import Path

_TRANSCODER_FILES = ("config.yaml", "layer_0.safetensors", "W_enc_0.safetensors")


def folder_kind(directory: Path) -> str | None:
    """'model' (config.json), 'transcoders' (circuit-tracer files), 'world' (manifest.json) or None."""
    try:
        if (directory / "manifest.json").is_file():
            return "world"
        if (directory / "config.json").is_file():
            return "model"
        if any((directory / name).is_file() for name in _TRANSCODER_FILES):
            return "transcoders"
    except OSError:
        return None
    return None


def _children_of_kind(directory: Path, kind: str) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir() and folder_kind(p) == kind)
    except OSError:
        return []


def folder_hint(directory: Path, wanted: str) -> str:
    """' Did you mean ...?' (with a leading space) for a folder that is not of the `wanted` kind
    ('model', 'transcoders' or 'world'), or '' when nothing nearby is."""
    directory = Path(directory)
    candidates = _children_of_kind(directory, wanted)
    if not candidates and folder_kind(directory.parent) == wanted:
        candidates = [directory.parent]
    if not candidates and directory.parent != directory:
        candidates = _children_of_kind(directory.parent, wanted)
    if not candidates:
        return ""
    names = " or ".join(repr(str(p)) for p in candidates[:3])
    found = folder_kind(directory)
    what = f" ({str(directory)!r} looks like a {'transcoder set' if found == 'transcoders' else found} folder)" \
        if found else ""
    return f" Did you mean {names}?{what}"


__all__ = ["folder_hint", "folder_kind"]

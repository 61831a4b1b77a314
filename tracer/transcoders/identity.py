"""A cheap content signature of a transcoder set's files, recorded by what is derived from them
(activation runs, families files) so that a later command can refuse a file made with other
transcoders, wherever either folder has moved since.

The signature hashes every file's relative name and size and its first and last 64 KiB: equal for
copies, different for other weights (a set trained otherwise differs in its first bytes), and read
in milliseconds even for gigabytes of decoders."""

import hashlib
from pathlib import Path

from tracer.errors import WorkbenchError

_EDGE = 64 * 1024


def _file_bytes(path: Path, name: str) -> bytes:
    """What a file contributes to the signature: its name, size, first and last ``_EDGE`` bytes."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(_EDGE)
        tail = b""
        if size > 2 * _EDGE:
            fh.seek(size - _EDGE)
            tail = fh.read(_EDGE)
    return f"{name}\0{size}\0".encode() + head + tail


def transcoder_signature(source: str | Path) -> str | None:
    """The signature of a transcoder folder (or file); None where ``source`` does not exist."""
    path = Path(source)
    h = hashlib.sha256()
    if path.is_file():
        h.update(_file_bytes(path, path.name))
    elif path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            h.update(_file_bytes(f, f.relative_to(path).as_posix()))
    else:
        return None
    return h.hexdigest()[:32]


def check_same_transcoders(recorded_signature: object, recorded_source: object, transcoders_source: str,
                           flag: str, where: str) -> None:
    """Refuse a file derived from other transcoders than ``transcoders_source``: by the signature it
    recorded, or (a file written before signatures) by the signature of the folder it names, where that
    still exists. Nothing to compare with is no refusal."""
    mine = transcoder_signature(transcoders_source)
    theirs = recorded_signature if isinstance(recorded_signature, str) and recorded_signature else None
    if theirs is None and isinstance(recorded_source, str) and recorded_source:
        theirs = transcoder_signature(recorded_source)
    if mine is not None and theirs is not None and mine != theirs:
        raise WorkbenchError(f"{flag} must be made with the transcoders {transcoders_source!r}; got one made with "
                             f"other transcoders ({str(recorded_source)!r}) in {where!r}. Make it again with "
                             "these transcoders.")

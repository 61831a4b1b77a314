"""Where the shipped demo world lives, in a source checkout and in an installed wheel."""

import importlib.util
from pathlib import Path


def data_root() -> Path:
    """The `data/` folder: the repository's in a checkout, else the installed copy.

    Installed, `data/` is the data-only (namespace) package ``manifold_workbench_data``.
    """
    here = Path(__file__).resolve().parent.parent / "data"
    if here.is_dir():
        return here
    spec = importlib.util.find_spec("manifold_workbench_data")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else here


def world_dir() -> Path:
    """The embedded demo world (model, transcoders, labels, manifest)."""
    return data_root() / "world"

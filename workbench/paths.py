"""Where the shipped demo world lives, in a source checkout and in an installed wheel."""

from importlib import resources
from pathlib import Path


def data_root() -> Path:
    """The `data/` folder: the repository's in a checkout, else the installed copy."""
    here = Path(__file__).resolve().parent.parent / "data"
    if here.is_dir():
        return here
    try:
        installed = Path(str(resources.files("manifold_workbench_data")))
    except ModuleNotFoundError:  # pragma: no cover - broken install
        installed = here
    return installed


def world_dir() -> Path:
    """The embedded demo world (model, transcoders, labels, manifest)."""
    return data_root() / "world"

"""pyproject lists every code package explicitly (so data/ can ship as a package): keep it complete."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent


def test_every_code_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("tracer", "analyses", "workbench")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert "manifold_workbench_data" in listed and (ROOT / "data").is_dir()


def test_dependencies_run_one_way():
    """workbench -> analyses -> tracer: tracer imports neither, analyses never imports workbench."""
    for pkg, banned in (("tracer", ("workbench", "analyses", "tests")), ("analyses", ("workbench", "tests"))):
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text()
            for name in banned:
                assert f"from {name}" not in text and f"import {name}" not in text, f"{path} imports {name}"


def test_installed_data_root_resolves_to_a_real_folder(monkeypatch, tmp_path):
    """Installed (no checkout beside the package), data_root() must be a real path, not a MultiplexedPath."""
    import sys

    import workbench.paths as paths

    pkg = tmp_path / "manifold_workbench_data"
    (pkg / "world").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(paths, "__file__", str(tmp_path / "site" / "workbench" / "paths.py"))
    sys.modules.pop("manifold_workbench_data", None)
    assert paths.world_dir() == pkg / "world" and paths.world_dir().is_dir()


def test_version_matches_the_distribution(capsys):
    """`workbench --version` prints the version pyproject.toml declares."""
    import pytest

    from workbench.cli import main

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"manifold-workbench {declared}"


def test_declared_licence_ships_and_package_data_globs_match_files():
    """The licence pyproject declares has its text beside it (a wheel carries LICENSE as its
    license file), and every package-data glob names files that exist."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    package_dirs = {"manifold_workbench_data": ROOT / "data"}
    for package, globs in project["tool"]["setuptools"]["package-data"].items():
        folder = package_dirs.get(package, ROOT / package.replace(".", "/"))
        for pattern in globs:
            assert any(p.is_file() for p in folder.glob(pattern)), f"package-data {package}: {pattern} matches no file"

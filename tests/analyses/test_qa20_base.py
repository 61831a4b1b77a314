"""QA pass 20, shared pieces: check_number refuses non-finite values and takes numpy integers; check_real;
a result's arrays file must be a plain name next to its JSON and schema_version an int; result types
compare by identity (no numpy ambiguity error)."""

import dataclasses
import importlib
import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analyses import results
from analyses.base import check_number, check_real
from analyses.families import FeatureFamilies, FeatureFamiliesResult
from analyses.manifolds.configs import DiscoveryConfig
from analyses.manifolds.fit import ManifoldFit
from analyses.results import load_result, save_result
from tests.analyses.manifolds.planted import planted_curve


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), float("nan"), np.float64("inf")])
def test_check_number_refuses_non_finite_values(value: float) -> None:
    """inf passed although the docstring promised a finite number (ring_reference=inf was accepted)."""
    with pytest.raises(ValueError, match=r"x must be a finite number > 0; got"):
        check_number("x", value, lo=0, lo_open=True)
    with pytest.raises(ValueError, match="ring_reference must be a finite number"):
        DiscoveryConfig(ring_reference=float("inf"))


def test_check_number_lets_inf_through_only_when_asked() -> None:
    check_number("x", float("inf"), lo=0, finite=False)
    check_number("x", -float("inf"), finite=False)
    with pytest.raises(ValueError, match=r"x must be a number \(not NaN\); got nan"):
        check_number("x", float("nan"), finite=False)


@pytest.mark.parametrize("value", [np.int64(7), np.int32(7), np.uint8(7), 7])
def test_check_number_takes_numpy_integers_and_refuses_bools(value: object) -> None:
    check_number("period", value, lo=3, integer=True)
    for bad in (True, np.bool_(True), 7.0, np.float64(7.0), "7"):
        with pytest.raises(TypeError, match="period must be an integer; got"):
            check_number("period", bad, lo=3, integer=True)
    with pytest.raises(ValueError, match=r"period must be an integer >= 3; got np.int64\(2\)"):
        check_number("period", np.int64(2), lo=3, integer=True)


def test_numpy_integer_parameters_are_accepted() -> None:
    """ManifoldFit(period=np.int64(7)) failed with "period must be an integer; got np.int64(7)"."""
    X, y, _ = planted_curve(period=7, n_per_value=3, seed=0)
    assert ManifoldFit(period=np.int64(7)).fit(X, y).result_.period == 7
    est = FeatureFamilies(n_neighbors=np.int64(3), random_state=np.int64(0)).fit(X[:12])
    neighbours = est.neighbors(0, 0, k=np.int64(2))
    assert len(neighbours) == 2


def test_check_real_names_the_first_bad_entry() -> None:
    check_real("A", np.array([[1, 2]], dtype=np.int8))
    with pytest.raises(ValueError, match=r"A must be finite; got inf at index \(1, 0\)\. Drop it\."):
        check_real("A", np.array([[0.0, 1.0], [np.inf, 0.0]]), hint="Drop it.")
    for bad in (np.array(["1.0"]), np.array([1 + 2j]), np.array([None])):
        with pytest.raises(TypeError, match="A must hold real numbers; got dtype"):
            check_real("A", bad)


def _saved_fit(tmp_path: Path) -> Path:
    X, y, _ = planted_curve(period=5, n_per_value=3, seed=0)
    return save_result(ManifoldFit(period=5).fit(X, y).result_, tmp_path / "fit.json")


@pytest.mark.parametrize("arrays", ["../elsewhere/fit.safetensors", "ABSOLUTE", "sub/fit.safetensors", "..", 5])
def test_an_arrays_entry_that_is_not_a_plain_name_next_to_the_json_is_refused(tmp_path: Path,
                                                                              arrays: object) -> None:
    """The check compared arr_file.name with Path(x).name (always equal): "../elsewhere/..." and absolute
    paths loaded a file from another folder."""
    here = tmp_path / "here"
    here.mkdir()
    path = _saved_fit(here)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(path.with_suffix(".safetensors"), elsewhere / "fit.safetensors")
    path.with_suffix(".safetensors").unlink()
    doc = json.loads(path.read_text())
    doc["arrays"] = str(elsewhere / "fit.safetensors") if arrays == "ABSOLUTE" else arrays
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="result arrays must be a file name in the folder of the JSON"):
        load_result(path)


@pytest.mark.parametrize("version", [1.0, True, "1"])
def test_schema_version_must_be_an_int(tmp_path: Path, version: object) -> None:
    """1.0 and True compare equal to 1 and loaded."""
    path = _saved_fit(tmp_path)
    doc = json.loads(path.read_text())
    want = doc["schema_version"]
    doc["schema_version"] = float(want) if version == 1.0 else version
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"schema_version must be {want} \(an integer\)"):
        load_result(path)


def test_result_types_compare_by_identity_without_numpy_errors(tmp_path: Path) -> None:
    """FeatureFamiliesResult's dataclass == raised numpy's "truth value of an array is ambiguous"."""
    X, _, _ = planted_curve(period=5, n_per_value=3, seed=0)
    res = FeatureFamilies(n_neighbors=3).fit(X).result_
    back = load_result(save_result(res, tmp_path / "fam.json"), FeatureFamiliesResult)
    assert res == res and res != back and res.families[0] != back.families[0]
    assert dataclasses.asdict(res.families[0]) == dataclasses.asdict(back.families[0])


def test_every_result_type_of_the_package_has_its_home_in_the_table() -> None:
    """load_result imports a type's module from RESULT_HOMES: every registered analyses type is listed,
    with the module that defines it, and nothing else is."""
    import analyses

    for info in pkgutil.walk_packages(analyses.__path__, "analyses."):
        importlib.import_module(info.name)
    ours = {name: cls.__module__ for name, cls in results._REGISTRY.items() if cls.__module__.startswith("analyses.")}
    assert ours == results.RESULT_HOMES


def test_a_result_loads_in_a_fresh_process_without_importing_its_module(tmp_path: Path) -> None:
    """QA: load_result of a ManifoldFitResult failed ("result type must be known") unless
    analyses.manifolds.fit had been imported first."""
    path = _saved_fit(tmp_path)
    code = ("import sys; from analyses.results import load_result; r = load_result(sys.argv[1]); "
            "print(type(r).__name__, r.period)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ManifoldFitResult", "5"]


def test_an_unknown_result_type_says_what_to_do(tmp_path: Path) -> None:
    path = _saved_fit(tmp_path)
    doc = json.loads(path.read_text())
    doc["type"] = "NoSuchResult"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="result type must be known; got 'NoSuchResult' .* Import the module"):
        load_result(path)

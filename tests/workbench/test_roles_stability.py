"""workbench.scoring.roles_stability: the roles' agreement between two samples, and one sample's split half."""

import json

import pytest

from workbench.cli_safety import run_script
from workbench.scoring.roles_stability import main, sentence_of_rows


def test_sentence_of_rows_numbers_each_word_by_its_sentence() -> None:
    class S:
        def __init__(self, n: int) -> None:
            self.words = ("w",) * n

    assert sentence_of_rows([S(2), S(3), S(1)]).tolist() == [0, 0, 1, 1, 1, 2]
    assert sentence_of_rows([]).shape == (0,)


def test_roles_of_two_samples_agree_more_as_they_grow_and_the_split_half_is_measured(tmp_path, capsys) -> None:
    out = tmp_path / "rs.json"
    assert main(["--out", str(out), "--transcoder", "plt", "--sentences", "200,1500", "--quiet"]) == 0
    doc = json.loads(out.read_text())
    small, large = doc["plt"]
    assert (small["sentences"], large["sentences"]) == (200, 1500) and doc["streams"][0] == "families-sample"
    for row in (small, large):
        assert row["n_features"] > 0 and 0.0 <= row["agreement"] <= 1.0
        assert 0.0 <= row["split_half"]["agreement"] <= 1.0
        moved = sum(c["n"] for c in row["changes"])  # the top changes: at most every feature that moved
        assert moved <= round((1 - row["agreement"]) * row["n_features"])
    assert large["agreement"] > small["agreement"]  # 1,500 sentences hold steadier roles than 200
    assert large["split_half"]["agreement"] > small["split_half"]["agreement"]
    assert "plt: roles kept between two samples" in capsys.readouterr().out
    assert all(r["matched_agreement"] >= r["agreement"] for r in (small, large))


@pytest.mark.parametrize("argv, match", [
    (["--sentences", "0,100"], "--sentences must be sample sizes >= 2"),
    (["--sentences", "1e3"], "--sentences must be comma-separated integers"),
    (["--streams", "a"], "--streams must name two different streams"),
    (["--streams", "truth,b"], "--streams must name two different streams"),
    (["--streams", "a,a"], "--streams must name two different streams"),
    (["--world", "/nonexistent/world"], "--world manifest.json"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv: list[str], match: str) -> None:
    out = tmp_path / "rs.json"
    assert run_script(lambda: main(["--out", str(out), *argv, "--quiet"]), "python -m x") == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and not out.exists()

"""workbench.scoring.truth_stability: the truth re-run on its own corpus and on another one, by hand and on the
demo world."""

from types import SimpleNamespace

import numpy as np
import pytest

from workbench.cli_safety import run_script
from workbench.paths import world_dir
from workbench.scoring.truth_stability import (
    key_agreement,
    main,
    same_records,
    stability,
    truth_config,
    truth_roles,
)

CYCLIC = {"day", "month", "hue"}
WORLD = world_dir()


def _rec(side: str, family: str | None = None, value: object = None) -> SimpleNamespace:
    return SimpleNamespace(side=side, family=family, value=value)


def test_key_agreement_counts_live_features_and_names_the_changes() -> None:
    shipped = {(0, 0): _rec("output", "day", "Monday"), (0, 1): _rec("context"), (0, 2): _rec("none"),
               (0, 3): _rec("input", None, "is"), (0, 4): _rec("none")}
    other = {(0, 0): _rec("output", "day", "Friday"), (0, 1): _rec("none"), (0, 2): _rec("none"),
             (0, 3): _rec("input", None, "is"), (0, 4): _rec("context")}
    got = key_agreement(shipped, other, CYCLIC)
    assert got["n_live"] == 4  # (0, 2) is "none" in both: not counted
    assert got["n_changed"] == 2 and got["agreement"] == 0.5  # a cyclic value change keeps the key
    assert got["changes"] == {"('context', None, None) -> ('none', None, None)": 1,
                              "('none', None, None) -> ('context', None, None)": 1}


def test_same_records_compare_every_field_not_only_the_purity_key() -> None:
    shipped = {(0, 0): SimpleNamespace(side="output", family="day", value="Monday", task=None, top_logit="Monday")}
    assert same_records(shipped, {(0, 0): SimpleNamespace(**vars(shipped[(0, 0)]))})
    assert not same_records(shipped, {(0, 0): SimpleNamespace(**{**vars(shipped[(0, 0)]), "value": "Friday"})})
    assert not same_records(shipped, {**shipped, (0, 1): shipped[(0, 0)]})


def test_the_truth_is_re_run_with_the_settings_the_world_recorded() -> None:
    """QA pass 30: the re-run used the default TruthConfig (6,000 sentences), so a world built with other settings
    (a tiny world's 600) was never "reproduced"."""
    from tracer.errors import WorkbenchError
    from workbench.world.truth import TruthConfig

    made = truth_config({"truth": {"config": {"n_sentences": 600, "stream": "truth", "min_fires": 3}}})
    assert made == TruthConfig(n_sentences=600, min_fires=3)
    assert truth_config({}) == TruthConfig()  # a manifest without the record: the defaults
    with pytest.raises(WorkbenchError, match="must record a valid truth config"):
        truth_config({"truth": {"config": {"word_share": 2.0}}})


def test_truth_roles_give_one_role_per_key() -> None:
    truth = {(1, 5): _rec("output", "capital", "Teskar"), (0, 2): _rec("output", "capital", "Dunhal"),
             (0, 7): _rec("output", "capital", "Teskar"), (2, 0): _rec("none")}
    roles = truth_roles(truth, CYCLIC)
    role = roles.lookup(np.array([[1, 5], [0, 7], [0, 2], [2, 0]]))
    assert role[0] == role[1] and len({int(r) for r in role}) == 3 and (role >= 0).all()
    assert roles.describe(0, 2) == "truth ('output', 'capital', 'Dunhal')"


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")
def test_the_shipped_truth_is_the_procedure_s_output_on_its_own_corpus() -> None:
    """Key for key, on this machine, with the settings the world recorded (its full corpus of 96,000 sentences:
    about a minute on two threads, the machine's two cores, where the suite runs on one)."""
    import json
    import os

    import torch

    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders
    from workbench.world.evaluate import manifest_spec
    from workbench.world.truth import load_truth, world_truth

    manifest = json.loads((WORLD / "manifest.json").read_text())
    loaded = load_model(WORLD / "model")
    tcs = {"plt": load_transcoders(WORLD / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, min(2, os.cpu_count() or 1)))
    try:
        rerun = world_truth(loaded.model, loaded.tokenizer, manifest_spec(manifest), tcs, seed=int(manifest["seed"]),
                            cfg=truth_config(manifest))["plt"]
    finally:
        torch.set_num_threads(threads)
    assert same_records(load_truth(WORLD / "feature_truth_plt.jsonl"), {(t.layer, t.feature): t for t in rerun})


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")
def test_another_corpus_moves_some_borders() -> None:
    """The diagnostics on two small re-run corpora (600 sentences: the shipped file is not checked at that size)."""
    report = stability(WORLD, ["plt"], "families-sample", 0, 40, verbose=False, truth_sentences=600)["plt"]
    assert report["reproduced"] is None
    other = report["other_corpus"]
    # 0.75 at this size (the 96,000 of the shipped truth: 0.976)
    assert 0.7 < other["agreement"] < 1.0 and other["n_changed"] > 0 and other["changes"]
    for name in ("purity_rerun_truth_as_roles", "purity_label_free_roles_on_truth_sentences", "headline"):
        assert report[name]["n_graphs"] == 2 and 0.0 <= report[name]["purity"] <= 1.0  # the two demo prompts
    head = report["headline"]
    assert 0.5 < head["share_stable_members"] < 1.0 and 0.0 <= head["purity_stable_members"] <= 1.0


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")
@pytest.mark.parametrize("argv,needle", [
    (["--stream", "truth"], "--stream must name a stream other than the truth's own ('truth'); got 'truth'"),
    (["--stream", " "], "--stream must name a stream other than the truth's own"),
    (["--n-prompts", "0"], "--n-prompts must be >= 1; got 0"),
    (["--truth-sentences", "0"], "--truth-sentences must be >= 1; got 0"),
    (["--world", "NOTRUTH"], "--world feature_truth_plt.jsonl must exist"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, argv: list[str], needle: str) -> None:
    no_truth = tmp_path / "world"
    no_truth.mkdir()
    (no_truth / "manifest.json").write_text((WORLD / "manifest.json").read_text())  # a world without its truth
    argv = [a.replace("NOTRUTH", str(no_truth)) for a in argv]
    code = run_script(lambda: main(["--out", str(tmp_path / "s.json"), *argv, "--transcoder", "plt", "-q"]),
                      "python -m x")
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s.json").exists()

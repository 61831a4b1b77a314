"""tracer.labels: our JSONL format and Neuronpedia-style exports."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.errors import WorkbenchError
from tracer.labels import FeatureLabel, LabelFormatError, load_labels, parse_neuronpedia, save_labels


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_jsonl_round_trip_keeps_extra_fields(tmp_path: Path) -> None:
    labels = [
        FeatureLabel(layer=1, feature=7, label="day token, peaks at Tue", top_contexts=("after [Tuesday] is",),
                     extra={"family": "day", "frac": 0.9}),
        FeatureLabel(layer=0, feature=3, label="say a capital"),
    ]
    path = tmp_path / "labels.jsonl"
    save_labels(labels, path)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["layer"] == 0  # sorted by (layer, feature)
    back = load_labels(path)
    assert set(back) == {(1, 7), (0, 3)}
    assert back[(1, 7)].label == "day token, peaks at Tue"
    assert back[(1, 7)].top_contexts == ("after [Tuesday] is",)
    assert back[(1, 7)].extra["family"] == "day"
    assert back[(1, 7)].extra["format"] == "jsonl"


def test_a_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    """Files saved by some Windows editors start with a UTF-8 BOM; it was read as part of the JSON."""
    plain, marked = tmp_path / "plain.jsonl", tmp_path / "marked.jsonl"
    save_labels([FeatureLabel(layer=0, feature=3, label="day token")], plain)
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert load_labels(marked) == load_labels(plain)


def test_neuronpedia_nulls_and_unicode_digits(tmp_path: Path) -> None:
    """An activation record with null values crashed with a TypeError; an index of '²' (str.isdigit is
    true for it) with a ValueError from int()."""
    path = tmp_path / "np.json"
    path.write_text(json.dumps([{"layer": 0, "index": 1, "description": "x",
                                 "activations": [{"tokens": ["a", "b", "c"], "values": [None, 1.0, 1.0]}]}]))
    assert load_labels(path)[(0, 1)].top_contexts == ("a [b] c",)
    path.write_text(json.dumps([{"layer": 0, "index": "²", "description": "x"}]))
    with pytest.raises(LabelFormatError, match="feature index must be a non-negative integer; got '²'"):
        load_labels(path)


def test_jsonl_duplicate_is_an_error(tmp_path: Path) -> None:
    rec = json.dumps({"layer": 0, "feature": 1, "label": "x", "top_contexts": []})
    path = _write(tmp_path, "dup.jsonl", rec + "\n" + rec + "\n")
    with pytest.raises(LabelFormatError, match="unique"):
        load_labels(path)


def test_jsonl_bad_line_names_the_line(tmp_path: Path) -> None:
    good = json.dumps({"layer": 0, "feature": 1, "label": "x"})
    path = _write(tmp_path, "bad.jsonl", good + "\n{not json\n")
    with pytest.raises(WorkbenchError, match="line 2"):
        load_labels(path)


def test_neuronpedia_list_with_string_layers_and_explanations(tmp_path: Path) -> None:
    data = [
        {"modelId": "m", "layer": "12-gemmascope-res-16k", "index": "40", "description": " dogs "},
        {"layer": 3, "featureIndex": 5, "explanations": [{"description": "capital cities"}],
         "activations": [{"tokens": ["The", "capital", "of", "X", "is"], "values": [0, 0, 0, 1, 0],
                          "maxValueTokenIndex": 3}]},
        {"layer": "12", "index": 40, "description": "canines"},
    ]
    labels = load_labels(_write(tmp_path, "np.json", json.dumps(data)))
    assert labels[(12, 40)].label == "dogs"
    assert labels[(12, 40)].extra["other_labels"] == ["canines"]
    assert labels[(12, 40)].extra["modelId"] == "m"
    assert labels[(3, 5)].label == "capital cities"
    assert labels[(3, 5)].top_contexts == ("The capital of [X] is",)


def test_neuronpedia_dict_forms() -> None:
    wrapped = parse_neuronpedia({"explanations": [{"layer": 1, "index": 2, "description": "a"}]})
    assert wrapped[(1, 2)].label == "a"
    keyed = parse_neuronpedia({"4/9": "months", "0:1": {"explanation": "bos"}})
    assert keyed[(4, 9)].label == "months" and keyed[(0, 1)].label == "bos"


@pytest.mark.parametrize("bad, match", [
    ({"weird key": "x"}, "<layer>/<feature>"),
    ([{"layer": "blocks.3", "index": 1, "description": "x"}], "layer must be"),
    ([{"layer": 1, "index": -1, "description": "x"}], "feature index"),
    ([{"layer": 1, "index": 2}], "description"),
    (["just a string"], "must be an object"),
])
def test_neuronpedia_errors_are_explicit(bad: object, match: str) -> None:
    with pytest.raises(LabelFormatError, match=match):
        parse_neuronpedia(bad)


def test_empty_file_gives_no_labels(tmp_path: Path) -> None:
    assert load_labels(_write(tmp_path, "e.jsonl", "\n")) == {}


def test_feature_label_is_frozen() -> None:
    lab = FeatureLabel(layer=0, feature=0, label="x")
    with pytest.raises(AttributeError):
        lab.label = "y"  # type: ignore[misc]  # the frozen field is the point


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.tuples(st.integers(0, 40), st.integers(0, 10_000)),
                       st.text(min_size=1, max_size=30).map(str.strip).filter(bool), max_size=20))
def test_save_load_round_trip_is_exact(tmp_path_factory: pytest.TempPathFactory,
                                       table: dict[tuple[int, int], str]) -> None:
    path = tmp_path_factory.mktemp("rt") / "l.jsonl"
    save_labels([FeatureLabel(layer=k[0], feature=k[1], label=v, top_contexts=(v,)) for k, v in table.items()], path)
    back = load_labels(path)
    assert {k: (v.label, v.top_contexts) for k, v in back.items()} == {k: (v, (v,)) for k, v in table.items()}

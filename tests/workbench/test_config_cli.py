"""The CLI's configs: a field's refusal names the flag the user typed."""

import re

import pytest

from tracer.errors import WorkbenchError
from workbench.config_cli import naming_flags, plain_help


def test_a_config_refusal_names_its_flag() -> None:
    flags = {"n_workers": "--workers", "max_feature_nodes": "--max-feature-nodes", "max": "--max"}
    with pytest.raises(WorkbenchError, match=r"^--workers must be an integer >= 1 or None; got 0\.$"):
        with naming_flags(flags):
            raise ValueError("n_workers must be an integer >= 1 or None; got 0.")
    with pytest.raises(WorkbenchError) as info:  # the longest name wins; a hint for the same field is dropped
        with naming_flags(flags):
            err = WorkbenchError("max_feature_nodes must be >= 1; got 0.")
            err.fields = ("max_feature_nodes", "adjacency_dtype")
            raise err
    assert str(info.value) == "--max-feature-nodes must be >= 1; got 0." and info.value.fields == ("adjacency_dtype",)
    with pytest.raises(TypeError, match="^k must be an integer"):  # not one of the flags: unchanged
        with naming_flags(flags):
            raise TypeError("k must be an integer; got 'x'.")
    with pytest.raises(ValueError, match="^maximum must be"):  # a prefix of a longer word is not the field
        with naming_flags(flags):
            raise ValueError("maximum must be finite.")
    with pytest.raises(KeyError):
        with naming_flags(flags):
            raise KeyError("n_workers")


def test_help_texts_read_as_plain_text(capsys):
    """QA pass 30: reST markup (``x``, :class:`...`) showed in --help, a one-word field read as a flag
    ("Histogram --irr-bins per axis"), and a boolean's doc-stated default was followed by "(default: False)"."""
    from workbench.cli import build_parser

    commands = [["families"], ["cluster"], ["manifold", "fit"], ["manifold", "discover"], ["manifold", "steer"],
                ["trace"], ["activations"], ["intervene"], ["demo"], ["bench"], ["world", "build"]]
    for argv in commands:
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for bad in ("``", ":class:", ":mod:", ":func:", "Histogram --irr-bins"):
            assert bad not in text, (argv, bad)
        assert not re.search(r"\(default[^)]*\)\. \(default", text), argv
    assert plain_help(":class:`~a.b.C` and :mod:`a.b` say ``x``") == "C and a.b say x"
    with pytest.raises(SystemExit):  # every option shows its default (some did not)
        build_parser(["trace"]).parse_args(["trace", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "sets the re-ranking chunk (default: 256)" in text and "(slow reference) (default: fast)" in text

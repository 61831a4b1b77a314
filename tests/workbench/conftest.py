"""Fixtures shared by the workbench command tests."""

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_models import random_tokens, save_model, save_transcoders, tiny_model, tiny_transcoders
from tracer.attribution import attribute
from tracer.config import AttributionConfig
from workbench import cli


@pytest.fixture
def bench_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`workbench --quiet bench ARGS...` through the real entry point; returns (status, stdout, stderr)."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"bench": "workbench.bench.cli"})

    def _run(*argv: str) -> tuple[int, str, str]:
        status = cli.main(["--quiet", "bench", *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return _run


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`workbench --quiet ARGS...` with graph tools, cluster and families; returns (status, stdout, stderr). (Modules
    with a ``run`` of their own use theirs.)"""
    monkeypatch.setattr(cli, "SUBCOMMANDS", {k: v for k, v in cli.SUBCOMMANDS.items()
                                             if v in ("workbench.cmd_graphtools", "workbench.cmd_cluster",
                                                      "workbench.cmd_families")})

    def _run(*argv: str) -> tuple[int, str, str]:
        status = cli.main(["--quiet", *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return _run


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Qwen3 with PLT and CLT folders, and a PLT graph traced through it."""
    root = tmp_path_factory.mktemp("cluster")
    loaded = tiny_model("qwen3")
    plt = tiny_transcoders(loaded, "plt", d_transcoder=64)
    graph = attribute(loaded, plt, random_tokens(7), AttributionConfig(verbose=False))
    graph = dataclasses.replace(graph, model_id="")  # no tokenizer lookup
    other = tiny_model("qwen3", num_hidden_layers=2)
    return {"model": save_model(loaded, root / "model"), "plt": save_transcoders(plt, root / "plt"),
            "clt": save_transcoders(tiny_transcoders(loaded, "clt", d_transcoder=64), root / "clt"),
            "two_layer": save_transcoders(tiny_transcoders(other, "plt", d_transcoder=64), root / "plt2"),
            "graph": graph.save(root / "g.safetensors")}

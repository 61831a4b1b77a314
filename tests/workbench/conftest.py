"""Fixtures shared by the workbench command tests."""

from typing import Any

import pytest

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

"""Types of the benchmark's JSON records (what ``run`` collects and ``report`` summarises).

The leaf records come from child processes (``ours_runner``, ``ct_runner``, ``workbench trace
--stats``) as parsed JSON, so their fields are typed ``Any``; the containers the benchmark builds
itself have fixed keys and are TypedDicts.
"""

from typing import Any, TypedDict

from workbench.bench.procs import GemmPeak

JSONRecord = dict[str, Any]
"""One parsed JSON object written by a child process (its fields are that runner's)."""

SummaryRow = dict[str, Any]
"""One summary row: each of ``report.SUMMARY_KEYS`` -> a JSON scalar (str, int, float, bool or None)."""


class OursRuns(TypedDict):
    """Our repeats of one case: the ``workbench trace`` process records and the runner records."""

    trace: list[JSONRecord]
    runner: list[JSONRecord]


class CtRuns(TypedDict):
    """circuit-tracer's repeats of one case with one back end."""

    runs: list[JSONRecord]
    error: str | None


class _CaseKeys(TypedDict):
    transcoder: str
    n_tokens: int
    token_ids: list[int]
    dir: str


class Case(_CaseKeys, total=False):
    """All repeats of one (transcoder, n_tokens) cell; the measurements are added as they run."""

    ours: OursRuns
    ct: dict[str, CtRuns]
    comparison: dict[str, JSONRecord | None]
    ours_error: str


class BenchReport(TypedDict):
    """The JSON report of one ``workbench bench`` run (see :func:`workbench.bench.run.run_benchmark`)."""

    schema_version: int
    kind: str
    created: str
    argv: list[str] | None
    config: object
    model_spec: dict[str, Any]
    machine: dict[str, object]
    gemm_peak: GemmPeak
    model: dict[str, object]
    baseline: dict[str, object] | None
    run_dir: str
    summary: list[SummaryRow]
    scaling: dict[str, dict[str, object]]
    cases: list[Case]
    errors: list[str]

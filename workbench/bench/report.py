"""The benchmark's summary: one row per (transcoder, n_tokens, baseline back end), scaling fits,
and the text table the CLI prints. Pure functions of the raw measurements in the run JSON.

Definitions (every time is the median over repeats; all values stay in the JSON):

* ``ours_attribute_s``: :func:`tracer.attribution.attribute` alone (``ours_runner``);
  ``ours_whole_process_s``: the whole ``workbench trace`` process (start-up, imports, loading,
  attribution, writing the graph), split into ``ours_import_s`` (process start to the end of the
  imports), ``ours_load_s``, ``ours_trace_attribute_s`` (the rows are streamed into the output file
  during it), ``ours_save_s`` (completing the file) and ``ours_exit_s`` (the rest, to the process's
  end); see :func:`workbench.bench.run.trace_phases`;
* ``ct_attribute_s``: circuit-tracer's ``attribute()`` call alone;
* ``speedup_whole_process`` = ct_attribute_s / ours_whole_process_s (conservative: our every cost
  against only circuit-tracer's attribution); ``speedup_attribute`` = ct_attribute_s / ours_attribute_s;
* ``*_peak_rss_mb``: max of the peak RSS during attribute and during prune_graph (each measured
  from a reset of the kernel's counter, so it includes what the process held before: model,
  transcoders, and during pruning the graph); ``memory_ratio`` = ct / ours;
  ``ours_trace_max_rss_mb``: the whole ``workbench trace`` process's peak RSS;
  ``ct_peak_rss_attribute_mb``: circuit-tracer's peak during ``attribute()``;
  ``trace_rss_vs_ct_attribute`` = ours_trace_max_rss_mb / ct_peak_rss_attribute_mb;
* ``flops``: the engine's count of its sweep (``graph.extra["flops"]``), or an analytic estimate
  (``flops_source`` says which); ``ours_gflops_per_s`` = flops / ours_attribute_s, next to the
  GEMM peak measured in the same run.
"""

import math
from statistics import median
from typing import Any

import numpy as np

from workbench.bench.records import Case, CtRuns, JSONRecord, SummaryRow

SUMMARY_KEYS = (
    "transcoder", "n_tokens", "backend", "n_active_features", "active_per_token_layer", "n_selected_features",
    "n_nodes",
    "ours_attribute_s", "ours_trace_attribute_s", "ours_whole_process_s", "ours_import_s", "ours_load_s",
    "ours_save_s", "ours_exit_s", "ours_peak_rss_mb", "ours_trace_max_rss_mb", "ours_cuda_peak_mb", "flops",
    "flops_source", "ours_gflops_per_s",
    "gemm_peak_gflops", "fraction_of_gemm_peak", "ours_seconds_per_node",
    "ct_attribute_s", "ct_whole_process_s", "ct_peak_rss_mb", "ct_peak_rss_attribute_mb", "ct_cuda_peak_mb",
    "speedup_whole_process", "speedup_attribute", "memory_ratio", "trace_rss_vs_ct_attribute",
    "graph_equal", "same_node_set", "same_node_order", "max_rel_diff",
    "prune_node_mask_equal", "prune_edges_equal", "replacement_ours", "completeness_ours",
    "replacement_delta", "completeness_delta",
)


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(median(vals)) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _peak(runs: list[JSONRecord], prefix: str) -> float | None:
    """Median over runs of max(peak during attribute, peak during prune)."""
    peaks: list[float | None] = []
    for r in runs:
        mem = r.get("memory", {})
        got = [mem.get(f"{prefix}_attribute_mb"), mem.get(f"{prefix}_prune_mb")]
        vals = [v for v in got if v is not None]
        peaks.append(max(vals) if vals else None)
    return med(peaks)


def analytic_flops(dims: dict[str, int], kind: str, nodes: JSONRecord, n_pos: int) -> float:
    """Rough FLOPs of our explicit backward when the engine did not count them.

    Features spread evenly over layers and positions 1..P-1; a row at (layer l, position p)
    crosses attention l..0 on positions <= p (W_O, pattern, W_V) and meets each layer's sources
    (decoder rows, errors; a CLT's layer gets every earlier layer's decoders) at those positions.
    """
    L, d, H, KV, hd = dims["n_layers"], dims["d_model"], dims["n_heads"], dims["n_kv_heads"], dims["head_dim"]
    F, K, P = nodes["n_selected_features"], nodes["n_logits"], n_pos
    per_cell = F / max(L * (P - 1), 1)
    n = np.arange(1, P + 1, dtype=np.float64)  # positions 0..p -> n = p + 1

    def row_cost(top_layer: int, n_pos_row: np.ndarray) -> np.ndarray:
        cost = np.zeros_like(n_pos_row)
        for layer in range(top_layer + (0 if top_layer == L else 1)):
            sources = (F / L) * ((layer + 1) if kind == "clt" else 1) / P + 1  # per position
            cost += (2 * n_pos_row * d * (H + KV) * hd + 2 * H * n_pos_row**2 * hd
                     + 2 * n_pos_row * d * sources)
        return cost

    total = sum(float(row_cost(layer, n[1:]).sum()) * per_cell for layer in range(L))
    return total + K * float(row_cost(L, n[-1:])[0])


def _ours(case: Case) -> dict[str, Any]:
    ours = case["ours"]
    trace, runner = ours.get("trace", []), ours.get("runner", [])
    stats = [t.get("stats") or {} for t in trace]
    phases = [t.get("phases") or {} for t in trace]
    nodes = (runner[0].get("nodes") if runner else None) or (stats[0] if stats else {})
    return {
        "attribute_s": med([r["seconds"]["attribute"] for r in runner]),
        "trace_attribute_s": med([(s.get("seconds") or {}).get("attribute") for s in stats]),
        **{f"{k}_s": med([p.get(k) for p in phases]) for k in ("import", "load", "save", "exit")},
        "whole_s": med([t.get("wall_s") for t in trace]),
        "trace_rss": med([t.get("max_rss_mb") for t in trace]),
        "peak": _peak(runner, "peak_rss"), "cuda": _peak(runner, "cuda_peak"), "nodes": nodes or {},
        "flops": next((r.get("flops") for r in runner if r.get("flops")), None)
        or next((s.get("flops") for s in stats if s.get("flops")), None),
        "scores": runner[0].get("scores") if runner else None,
    }


def summary_rows(case: Case, dims: dict[str, int], gemm_gflops: float | None) -> list[SummaryRow]:
    """One row per baseline back end (one row with null baseline fields if none ran)."""
    o = _ours(case)
    nodes = o["nodes"]
    flops, source = o["flops"], "engine"
    if flops is None and nodes.get("n_selected_features") is not None:
        flops = analytic_flops(dims, case["transcoder"], nodes, case["n_tokens"])
        source = "analytic"
    gflops = ratio(flops / 1e9 if flops else None, o["attribute_s"])
    base: SummaryRow = {
        "transcoder": case["transcoder"], "n_tokens": case["n_tokens"], "backend": None,
        "n_active_features": nodes.get("n_active_features"),
        "active_per_token_layer": ratio(nodes.get("n_active_features"),
                                        (case["n_tokens"] - 1) * dims["n_layers"]),  # BOS has none
        "n_selected_features": nodes.get("n_selected_features"), "n_nodes": nodes.get("n_nodes"),
        "ours_attribute_s": o["attribute_s"], "ours_trace_attribute_s": o["trace_attribute_s"],
        "ours_whole_process_s": o["whole_s"], "ours_import_s": o["import_s"], "ours_load_s": o["load_s"],
        "ours_save_s": o["save_s"], "ours_exit_s": o["exit_s"], "ours_peak_rss_mb": o["peak"],
        "ours_trace_max_rss_mb": o["trace_rss"], "ours_cuda_peak_mb": o["cuda"],
        "flops": flops, "flops_source": source if flops else None, "ours_gflops_per_s": gflops,
        "gemm_peak_gflops": gemm_gflops, "fraction_of_gemm_peak": ratio(gflops, gemm_gflops),
        "ours_seconds_per_node": ratio(o["attribute_s"], nodes.get("n_nodes")),
        "replacement_ours": (o["scores"] or {}).get("replacement"),
        "completeness_ours": (o["scores"] or {}).get("completeness"),
    }
    rows: list[SummaryRow] = []
    for backend, ct in (case.get("ct") or {}).items():
        rows.append({**base, **_ct_fields(backend, ct, case, o)})
    if not rows:
        rows.append(dict(base))
    return [{k: row.get(k) for k in SUMMARY_KEYS} for row in rows]


def _ct_fields(backend: str, ct: CtRuns, case: Case, o: dict[str, Any]) -> SummaryRow:
    runs = ct.get("runs") or []
    ct_attr = med([r["seconds"]["attribute"] for r in runs])
    ct_peak = _peak(runs, "peak_rss")
    ct_attr_peak = med([(r.get("memory") or {}).get("peak_rss_attribute_mb") for r in runs])
    comp = (case.get("comparison") or {}).get(backend) or {}
    graph, prune, deltas = comp.get("graph") or {}, comp.get("prune") or {}, comp.get("scores_delta") or {}
    return {
        "backend": backend, "ct_attribute_s": ct_attr,
        "ct_whole_process_s": med([r.get("wall_s") for r in runs]),
        "ct_peak_rss_mb": ct_peak, "ct_peak_rss_attribute_mb": ct_attr_peak,
        "ct_cuda_peak_mb": _peak(runs, "cuda_peak"),
        "speedup_whole_process": ratio(ct_attr, o["whole_s"]),
        "speedup_attribute": ratio(ct_attr, o["attribute_s"]),
        "memory_ratio": ratio(ct_peak, o["peak"]),
        "trace_rss_vs_ct_attribute": ratio(o["trace_rss"], ct_attr_peak),
        "graph_equal": graph.get("equal"),
        "same_node_set": graph.get("same_node_set"), "same_node_order": graph.get("same_node_order"),
        "max_rel_diff": graph.get("max_rel_diff"), "prune_node_mask_equal": prune.get("node_mask_equal"),
        "prune_edges_equal": prune.get("edges_equal"), "replacement_delta": deltas.get("replacement"),
        "completeness_delta": deltas.get("completeness"),
    }


def _exponent(x: list[float], y: list[float]) -> float | None:
    """Slope of log y against log x (least squares); None with fewer than two distinct x."""
    pts = [(a, b) for a, b in zip(x, y, strict=True) if a and b and a > 0 and b > 0]
    if len({a for a, _ in pts}) < 2:
        return None
    lx, ly = np.log([a for a, _ in pts]), np.log([b for _, b in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def _series(rows: list[SummaryRow], seconds_key: str, memory_key: str) -> dict[str, object]:
    rows = [r for r in rows if r.get(seconds_key) is not None]
    rows.sort(key=lambda r: int(r["n_tokens"]))
    n_tok = [float(r["n_tokens"]) for r in rows]
    n_nodes = [float(r["n_nodes"] or 0) for r in rows]
    secs = [float(r[seconds_key]) for r in rows]
    mem = [r.get(memory_key) for r in rows]
    return {
        "n_tokens": [int(v) for v in n_tok], "n_nodes": [int(v) for v in n_nodes], "seconds": secs,
        "seconds_per_node": [s / n if n else None for s, n in zip(secs, n_nodes, strict=True)],
        "peak_rss_mb": mem,
        "exponent_seconds_vs_n_tokens": _exponent(n_tok, secs),
        "exponent_seconds_vs_n_nodes": _exponent(n_nodes, secs),
        "exponent_peak_rss_vs_n_nodes": _exponent(n_nodes, [float(m) if m else 0.0 for m in mem]),
    }


def scaling(rows: list[SummaryRow]) -> dict[str, dict[str, object]]:
    """Per transcoder kind: ours (attribute and whole process) and each baseline back end."""
    out: dict[str, dict[str, object]] = {}
    for kind in sorted({str(r["transcoder"]) for r in rows}):
        kind_rows = [r for r in rows if r["transcoder"] == kind]
        first = {int(r["n_tokens"]): r for r in kind_rows}.values()
        entry: dict[str, object] = {
            "ours_attribute": _series(list(first), "ours_attribute_s", "ours_peak_rss_mb"),
            "ours_whole_process": _series(list(first), "ours_whole_process_s", "ours_trace_max_rss_mb"),
        }
        for backend in sorted({str(r["backend"]) for r in kind_rows if r["backend"]}):
            backend_rows = [r for r in kind_rows if r["backend"] == backend]
            entry[f"ct_{backend}"] = _series(backend_rows, "ct_attribute_s", "ct_peak_rss_mb")
        out[kind] = entry
    return out


# ----------------------------------------------------------------------------- text table
def _fmt(value: object, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return format(value, spec)
    return str(value)


_COLUMNS = (
    ("kind", "transcoder", ""), ("tok", "n_tokens", ""), ("nodes", "n_nodes", ""),
    ("feat", "n_active_features", ""),
    ("ours s", "ours_attribute_s", ".3g"), ("proc s", "ours_whole_process_s", ".3g"),
    ("ours MB", "ours_peak_rss_mb", ".0f"), ("GF/s", "ours_gflops_per_s", ".3g"),
    ("%peak", "fraction_of_gemm_peak", ".1%"), ("backend", "backend", ""), ("ct s", "ct_attribute_s", ".3g"),
    ("x proc", "speedup_whole_process", ".3g"), ("x attr", "speedup_attribute", ".3g"),
    ("ct MB", "ct_peak_rss_mb", ".0f"), ("x mem", "memory_ratio", ".3g"), ("proc MB", "ours_trace_max_rss_mb", ".0f"),
    ("proc/ct-attr", "trace_rss_vs_ct_attribute", ".3g"), ("equal", "graph_equal", ""),
    ("rel diff", "max_rel_diff", ".1e"), ("prune=", "prune_edges_equal", ""),
)


def format_table(rows: list[SummaryRow]) -> str:
    """A fixed-width table of the summary rows."""
    header = [c[0] for c in _COLUMNS]
    body = [[_fmt(r.get(key), spec) if spec else _fmt(r.get(key)) for _, key, spec in _COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)

"""The benchmark's figures: latency summaries, workload JSON, targets, pass/fail checks and the table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.interactive import ClosedLoop

# An error rate above this fails the run: a benchmark that errs measures something else.
ERROR_BUDGET = 0.001
NOISE_CORES = 0.1

# The known targets on a 2-core machine: (figure path, comparison, bound).
TARGETS: list[tuple[str, str, float]] = [
    ("W1.jobs_per_s", ">=", 1500),
    ("W1.latency_ms.p99", "<=", 100),
    ("ratios.W1_jobs_per_s_over_N_jobs_per_s", ">=", 10),
    ("W2.latency_ms.p50", "<=", 5),
    ("W2.latency_ms.p99", "<=", 15),
    ("W3.rows_per_s", ">=", 400_000),
    ("W4.lost", "<=", 0),
    ("W4.redis.bytes_per_retained_job", "<=", 2048),
    ("memory.api_peak_rss_mb", "<=", 80),
    ("memory.worker_peak_rss_mb", "<=", 300),
]


def percentile(values: Sequence[float], q: float) -> float:
    """Return the nearest-rank percentile q (0-100) of the values, or nan when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency(values: Sequence[float]) -> dict[str, float | None]:
    """Return p50, p90, p99, max and mean of millisecond values, rounded for the report."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    figures = {f"p{q}": percentile(values, q) for q in (50, 90, 99)}
    figures.update({"max": max(values), "mean": sum(values) / len(values)})
    return {name: round(value, 2) for name, value in figures.items()}


def ratio(top: float | None, bottom: float | None) -> float | None:
    """Return top over bottom rounded for the report, or None when either is missing or zero."""
    return round(top / bottom, 3) if top and bottom else None


def closed_loop_figures(run: ClosedLoop) -> dict[str, Any]:
    """Return the JSON of a closed-loop workload."""
    return {
        "clients": run.clients,
        "jobs": run.attempted,
        "succeeded": run.succeeded,
        "seconds": round(run.seconds, 3),
        "jobs_per_s": round(run.succeeded / run.seconds, 1) if run.seconds > 0 else None,
        "latency_ms": latency(run.latencies_ms),
        "server_ms": {name: latency(values) for name, values in sorted(run.server_ms.items())},
        "accepted": len(run.accepted),
        "answered_by_submit": run.answered_by_submit,
        "errors": sum(run.errors.values()),
        "error_kinds": dict(run.errors),
        "lost": len(run.lost),
        "lost_ids": run.lost[:10],
    }


def noise(document: dict[str, Any]) -> dict[str, Any]:
    """Return how much CPU other programs took while the workloads ran, as cores, overall and per workload."""
    meters = [
        (name, w[key])
        for name, w in document["workloads"].items()
        for key in ("cpu_s", "drain_cpu_s")
        if key in w
    ]
    by_workload: dict[str, float] = {}
    for name, meter in meters:
        by_workload[name] = by_workload.get(name, 0.0) + meter["others"]
    wall = sum(meter["wall_s"] for _, meter in meters)
    others = sum(meter["others"] for _, meter in meters)
    return {
        "others_cores": round(others / wall, 2) if wall else None,
        "others_cpu_s": {name: round(value, 1) for name, value in by_workload.items()},
        # A run where other programs took a tenth of a core or more is not a clean measurement.
        "clean": bool(wall) and others / wall < NOISE_CORES,
    }


def cpu_ceiling(figures: dict[str, Any], cores: int, api_processes: int) -> dict[str, float | None]:
    """Return the jobs/s the measured CPU per job allows: on all cores, and for the API's processes alone."""
    per_job = figures.get("cpu_ms_per_job") or {}
    total = sum(per_job.values())
    api = per_job.get("api", 0.0)
    return {
        "all_cores_jobs_per_s": round(cores * 1000 / total) if total else None,
        "api_processes_jobs_per_s": round(min(cores, api_processes) * 1000 / api) if api else None,
    }


def lookup(document: dict[str, Any], path: str) -> Any:
    """Return the value at a dotted path of the document, or None when any part is missing."""
    found: Any = document
    for part in path.split("."):
        if not isinstance(found, dict) or part not in found:
            return None
        found = found[part]
    return found


def targets(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each known target with the measured figure and whether it was met."""
    rows = []
    for path, comparison, bound in TARGETS:
        whole = path.startswith(("memory.", "ratios."))
        measured = lookup(document if whole else document["workloads"], path)
        met = None
        if isinstance(measured, int | float) and not math.isnan(measured):
            met = measured >= bound if comparison == ">=" else measured <= bound
        rows.append({"figure": path, "target": f"{comparison} {bound:g}", "measured": measured, "met": met})
    return rows


def failures(document: dict[str, Any]) -> list[str]:
    """Return why the run failed: jobs lost, errors over budget, a model library inside the API."""
    found = []
    for name, figures in document["workloads"].items():
        lost = figures.get("lost", 0) or figures.get("rows_lost", 0)
        if lost:
            found.append(f"{name}: {lost} lost")
        if figures.get("error"):
            found.append(f"{name}: {figures['error']}")
        attempted = figures.get("jobs") or figures.get("submitted") or 0
        errors = figures.get("errors", 0)
        if attempted and errors / attempted > ERROR_BUDGET:
            found.append(f"{name}: {errors} errors in {attempted} jobs, over the {ERROR_BUDGET:.1%} budget")
    for process in document.get("memory", {}).get("api", []):
        if process.get("model_libraries"):
            found.append(f"API process {process['pid']} has {process['model_libraries']} mapped")
    return found


def _cell(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.1f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def _speed(figures: dict[str, Any]) -> str:
    return f"{_cell(figures['jobs_per_s'], ' jobs/s')} p99 {_cell(figures['latency_ms']['p99'], ' ms')}"


def table(document: dict[str, Any]) -> str:
    """Return a short human summary of the run, one line a workload and a line a target."""
    lines = [f"benchmark on {document['machine']['cores']} cores, {document['config']['shape']}"]
    for name, w in document["workloads"].items():
        if "skipped" in w:
            lines.append(f"  {name:<4} skipped: {w['skipped']}")
        elif "seconds_to_first_served" in w:
            before, during = (w[part]["latency_ms"]["p99"] for part in ("before_rollout", "during_rollout"))
            lines.append(
                f"  {name:<4} {w['new_version']} first served {_cell(w['seconds_to_first_served'], ' s')} "
                f"after its upload began  p99 {_cell(before, ' ms')} before, {_cell(during, ' ms')} during "
                f"the rollout  errors {w['errors']}  lost {w['lost']}"
            )
        elif "streams" in w:
            bare, beside = (_speed(w[part]) for part in ("without_streams", "with_streams"))
            lines.append(
                f"  {name:<4} {_cell(w['streams']['opened'])} streams open: {beside}; none open: {bare}  "
                f"errors {w['errors']}  lost {w['lost']}"
            )
        elif "latency_ms" in w:
            lat = w["latency_ms"]
            lines.append(
                f"  {name:<4} {_cell(w['jobs'])} jobs  {_cell(w['jobs_per_s'], ' jobs/s')}  "
                f"p50 {_cell(lat['p50'], ' ms')}  p99 {_cell(lat['p99'], ' ms')}  "
                f"errors {w['errors']}  lost {w['lost']}"
            )
        elif "rows_per_s" in w:
            phases = ", ".join(f"{part} {_cell(s, ' s')}" for part, s in w.get("phases_s", {}).items())
            rss = w.get("api_rss_mb", {})
            lines.append(
                f"  {name:<4} {_cell(w['rows'])} rows  {_cell(w['rows_per_s'], ' rows/s')}  "
                f"in {_cell(w['seconds'], ' s')} ({phases})  lost {_cell(w.get('rows_lost'))}  "
                f"API {_cell(rss.get('upload_and_accept'), ' MB')} RSS through the upload "
                f"({_cell(rss.get('before'), ' MB')} before)"
            )
        elif "accept_rate_per_s" in w:
            lines.append(
                f"  {name:<4} {_cell(w['accepted'])} jobs  accept {_cell(w['accept_rate_per_s'], '/s')}  "
                f"drain {_cell(w['drain_rate_per_s'], '/s')}  lost {w['lost']}  "
                f"redis {_cell(w['redis']['bytes_per_retained_job'], ' B/job')}"
            )
        elif "seconds_without_service" in w:
            lines.append(
                f"  {name:<4} {_cell(w['accepted'])} jobs accepted  master {w['killed']} killed, "
                f"{w['failover'].get('new_master', 'none')} promoted after "
                f"{_cell(w['failover'].get('promoted_after_s'), ' s')}  without service "
                f"{_cell(w['seconds_without_service'], ' s')}  lost {w['lost']}  run twice {w['run_twice']}"
            )
        else:
            lines.append(f"  {name:<4} {w.get('error', 'no figures')}")
    if document.get("noise"):
        found = document["noise"]
        seconds = ", ".join(f"{name} {value:.1f} s" for name, value in found["others_cpu_s"].items())
        verdict = "clean" if found["clean"] else "NOISY: other programs skewed these figures"
        lines.append(f"  other programs used {found['others_cores']} cores meanwhile ({seconds}): {verdict}")
    for name, figures in document.get("limit", {}).items():
        lines.append(
            f"  L    {name}: {_cell(figures['batched_rows_per_s'], ' rows/s')} in batches of "
            f"{figures['batch']:,}; {_cell(figures['single_record_calls_per_s'], ' calls/s')} of one record"
        )
    for row in document["targets"]:
        mark = {True: "met", False: "MISSED", None: "n/a"}[row["met"]]
        lines.append(f"  target {row['figure']} {row['target']}: {_cell(row['measured'])} {mark}")
    for reason in document["failures"]:
        lines.append(f"  FAILED {reason}")
    return "\n".join(lines)

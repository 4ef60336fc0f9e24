"""F failover: W1's load at half its rate while the Redis master is SIGKILLed and Sentinel promotes a replica.

Half of W1's closed-loop clients each submit one breast-cancer record and wait for it, for a bounded
time; part way through, the master is killed. Afterwards every job the API accepted (200 or 202) is
read back until it ends. Reported: jobs accepted; lost (accepted, yet not succeeded in the end:
must be 0); run twice (an accepted job whose end was recorded again: its completion time or its
progress changed after a client first saw it end); seconds without service (the longest gap
between two answers accepting a job); the failover as the sentinels saw it; the 503s (refused,
and "maybe accepted" when no replica confirmed a job in time).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.client import Connection, HttpError
from bench.data import breast_cancer_rows
from bench.jobs import TERMINAL, Target, job_body, submit, wait_job
from bench.service import Shape, start_service
from tools.sentinel import DOWN_AFTER_MS, SentinelStack

# W1 runs 64 clients: half its rate is half of them.
HALF_W1_CLIENTS = 32
WAIT_S = 30
# How long an accepted job may take to end, counted from the end of the load, before it counts as lost.
AUDIT_S = 90
# The drill's stack finds a lost message fast: a held message comes back after 4 s, one neither
# queued nor held is published again within 3 s (the shipped defaults are 60 s and 30 s).
DRILL_SETTINGS = {
    "INFER_VISIBILITY_TIMEOUT_S": "4",
    "INFER_RESTORE_INTERVAL_S": "1",
    "INFER_REDELIVERY_S": "3",
}
# What one client learns of one job: (id, completed_at and progress when it first saw the job end).
Seen = dict[str, tuple[str | None, Any]]


@dataclass
class DrillRun:
    """What the clients saw during the drill."""

    accepted: list[str] = field(default_factory=list)
    seen_ended: Seen = field(default_factory=dict)
    # perf_counter times of the answers that accepted a job, in the order they came.
    accepted_at: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    maybe_accepted: list[str] = field(default_factory=list)


def _failover_watch(master: Callable[[], str | None], stop: threading.Event) -> dict[str, Any]:
    """Poll who the sentinels call master until it changes (or stop is set); return when and to whom."""
    started = time.perf_counter()
    first = master()
    found: dict[str, Any] = {"old_master": first}
    while not stop.wait(0.05):
        now = master()
        if now is not None and now != first:
            found.update(new_master=now, promoted_after_s=round(time.perf_counter() - started, 3))
            break
    return found


async def _client(target: Target, model: str, bodies: list[bytes], run: DrillRun, stop_at: float) -> None:
    conn = target.connect()
    try:
        turn = 0
        while time.perf_counter() < stop_at:
            turn += 1
            await _one(conn, target, model, bodies[turn % len(bodies)], run)
    finally:
        await conn.close()


async def _one(conn: Connection, target: Target, model: str, body: bytes, run: DrillRun) -> None:
    try:
        answer = await submit(conn, target, model, body, WAIT_S)
    except (HttpError, OSError) as exc:
        run.answers[f"submit {type(exc).__name__}"] += 1
        await asyncio.sleep(0.05)  # the API is away: do not spin
        return
    if answer.status not in (200, 202):
        error = answer.json().get("error", {}) if answer.body.startswith(b"{") else {}
        details = error.get("details") or []
        if answer.status == 503 and details and details[0].get("field") == "id":
            run.answers["503 maybe accepted"] += 1
            run.maybe_accepted.append(str(details[0]["reason"]))
        else:
            run.answers[f"HTTP {answer.status}"] += 1
        await asyncio.sleep(0.05)
        return
    run.accepted_at.append(time.perf_counter())
    job: dict[str, Any] = answer.json()
    run.accepted.append(job["id"])
    run.answers["accepted"] += 1
    if job["status"] not in TERMINAL:
        try:
            found = await wait_job(conn, target, job["id"], WAIT_S)
        except (HttpError, OSError):
            return  # the audit reads it later
        if found is None:
            return
        job = found
    run.seen_ended[job["id"]] = (job["completed_at"], job["progress"])


async def _audit(target: Target, run: DrillRun, seconds: float) -> dict[str, Any]:
    """Read every accepted job until it ends (or the time is up); return lost and run-twice jobs."""
    deadline = time.monotonic() + seconds
    final: dict[str, dict[str, Any] | None] = {}
    conn = target.connect()
    try:
        for job_id in run.accepted:
            left = max(1.0, deadline - time.monotonic())
            try:
                final[job_id] = await wait_job(conn, target, job_id, left)
            except (HttpError, OSError):
                final[job_id] = None
    finally:
        await conn.close()
    lost = [i for i, job in final.items() if job is None or job["status"] != "succeeded"]
    twice = [
        i for i, job in final.items()
        if job is not None and i in run.seen_ended
        and (job["completed_at"], job["progress"]) != run.seen_ended[i]
    ]  # fmt: skip
    statuses = Counter(job["status"] if job else "unknown" for job in final.values())
    return {"lost": lost, "run_twice": twice, "statuses": dict(statuses)}


def _longest_gap(times: list[float], start: float, end: float) -> float:
    """Return the longest stretch within [start, end] with no accepting answer."""
    marks = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(marks))


def _per_second(times: list[float], start: float, end: float) -> list[int]:
    """Return how many jobs were accepted in each second of the run."""
    counts = [0] * (int(end - start) + 1)
    for moment in times:
        counts[min(len(counts) - 1, max(0, int(moment - start)))] += 1
    return counts


def _recovered_after(times: list[float], start: float, killed: float, end: float) -> float | None:
    """Return how long after the kill a whole second first accepted half the jobs a second before it did."""
    before = sorted(_per_second([t for t in times if t < killed], start, killed)[:-1]) or [0]
    wanted = max(1, before[len(before) // 2] // 2)
    moment = killed
    while moment + 1 <= end:
        if sum(moment <= t < moment + 1 for t in times) >= wanted:
            return round(moment - killed, 3)
        moment += 0.1
    return None


async def failover_drill(
    target: Target,
    stack: SentinelStack,
    model: str,
    rows: list[Any],
    *,
    clients: int = HALF_W1_CLIENTS,
    seconds: float = 25.0,
    kill_after_s: float = 8.0,
    audit_s: float = AUDIT_S,
) -> dict[str, Any]:
    """Run the load, SIGKILL the master kill_after_s into it, audit every accepted job; return the figures."""
    assert stack.group is not None, "the stack must run on Sentinel"
    group = stack.group
    run = DrillRun()
    bodies = [job_body(row) for row in rows]
    started = time.perf_counter()
    stop_at = started + seconds
    load = asyncio.gather(*(_client(target, model, bodies, run, stop_at) for _ in range(clients)))
    await asyncio.sleep(kill_after_s)
    stop_watch = threading.Event()
    killed_at = time.perf_counter()
    killed = await asyncio.to_thread(stack.kill_master)
    watch = asyncio.create_task(asyncio.to_thread(_failover_watch, group.master, stop_watch))
    await load
    ended = time.perf_counter()
    stop_watch.set()
    failover = await watch
    audit = await _audit(target, run, audit_s)
    accepted_after_kill = [t for t in run.accepted_at if t > killed_at]
    return {
        "model": model,
        "clients": clients,
        "seconds": round(ended - started, 3),
        "killed": killed,
        "killed_after_s": round(killed_at - started, 3),
        "failover": failover,
        "accepted": len(run.accepted),
        "accepted_after_kill": len(accepted_after_kill),
        "lost": len(audit["lost"]),
        "lost_ids": audit["lost"][:10],
        "run_twice": len(audit["run_twice"]),
        "run_twice_ids": audit["run_twice"][:10],
        "seconds_without_service": round(_longest_gap(run.accepted_at, started, ended), 3),
        "first_accepted_after_kill_s": (
            round(accepted_after_kill[0] - killed_at, 3) if accepted_after_kill else None
        ),
        "recovered_after_s": _recovered_after(run.accepted_at, started, killed_at, ended),
        "accepted_each_second": _per_second(run.accepted_at, started, ended),
        "answers": dict(run.answers),
        "maybe_accepted": len(run.maybe_accepted),
        "final_statuses": audit["statuses"],
    }


def measure(
    registry: Path, run_dir: Path, shape: Shape, seconds: float, kill_after_s: float
) -> dict[str, Any]:
    """Start the service on a Sentinel-managed Redis, run the drill on it, stop it; return the figures."""
    service = start_service(run_dir, registry, shape, sentinel=True, overrides=DRILL_SETTINGS)
    try:
        target = Target("127.0.0.1", service.port, service.key)
        figures = asyncio.run(
            failover_drill(
                target, cast(SentinelStack, service.stack), "breast-cancer", breast_cancer_rows(),
                seconds=seconds, kill_after_s=kill_after_s,
            )
        )  # fmt: skip
    finally:
        service.stop()
    figures["settings"] = {**DRILL_SETTINGS, "down_after_ms": DOWN_AFTER_MS}
    return figures

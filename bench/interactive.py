"""Closed-loop clients (W1 interactive, W2 quiet): each submits one record, waits for its result, repeats."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.client import Connection, HttpError
from bench.jobs import TERMINAL, Target, job_body, submit, wait_job

WAIT_S = 30
# How long an accepted job may take to finish before the benchmark calls it lost.
LOST_AFTER_S = 120


# What a workload learns of each succeeded job: (job, perf_counter time sent, latency ms).
Observer = Callable[[dict[str, Any], float, float], None]


@dataclass
class ClosedLoop:
    """What a closed-loop run saw: per-job latencies, the server's own timings, errors and lost jobs."""

    clients: int
    attempted: int = 0
    succeeded: int = 0
    answered_by_submit: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    # Every job the API accepted (200 or 202), so a run can be audited for jobs that never ended.
    accepted: list[str] = field(default_factory=list)
    # Called with each succeeded job, the perf_counter time it was sent, and its latency in ms.
    observe: Observer | None = None


# One job of a client: (connection, target, model, body, result, unresolved ids) -> its id if it succeeded.
OneJob = Callable[[Connection, Target, str, bytes, "ClosedLoop", list[str]], Awaitable[str | None]]


async def closed_loop(
    target: Target,
    model: str,
    records: list[Any],
    clients: int,
    jobs: int,
    seconds: float,
    one: OneJob | None = None,
    stop: asyncio.Event | None = None,
    observe: Observer | None = None,
) -> ClosedLoop:
    """Run clients that each send one record and wait for it, until jobs are sent, time is up or stop set."""
    one = one or _one
    result = ClosedLoop(clients=clients, observe=observe)
    bodies = [job_body(record) for record in records]
    tickets = iter(range(jobs))
    unresolved: list[str] = []
    started = time.perf_counter()
    stop_at = started + seconds
    last_done = [started]

    async def client() -> None:
        conn = target.connect()
        try:
            for ticket in tickets:
                if time.perf_counter() >= stop_at or (stop is not None and stop.is_set()):
                    break
                result.attempted += 1
                job_id = await one(conn, target, model, bodies[ticket % len(bodies)], result, unresolved)
                if job_id:
                    last_done[0] = time.perf_counter()
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = last_done[0] - started
    await _resolve(target, unresolved, result)
    return result


async def _one(
    conn: Connection, target: Target, model: str, body: bytes, result: ClosedLoop, unresolved: list[str]
) -> str | None:
    """Submit one job, wait for it, record its latency or why it failed; return its id if it succeeded."""
    sent = time.perf_counter()
    try:
        answer = await submit(conn, target, model, body, WAIT_S)
    except (HttpError, OSError) as exc:
        result.errors[f"submit {type(exc).__name__}"] += 1
        return None
    if answer.status not in (200, 202):
        result.errors[f"submit HTTP {answer.status}"] += 1
        return None
    job: dict[str, Any] = answer.json()
    job_id = str(job["id"])
    result.accepted.append(job_id)
    if job["status"] in TERMINAL:
        result.answered_by_submit += 1
    else:
        try:
            found = await wait_job(conn, target, job_id, LOST_AFTER_S)
        except (HttpError, OSError):
            unresolved.append(job_id)
            return None
        if found is None:
            result.lost.append(job_id)
            return None
        job = found
    elapsed_ms = (time.perf_counter() - sent) * 1000
    if job["status"] != "succeeded" or len(job.get("outputs") or []) != 1:
        result.errors[f"job {job['status']}"] += 1
        return None
    result.succeeded += 1
    result.latencies_ms.append(elapsed_ms)
    if result.observe is not None:
        result.observe(job, sent, elapsed_ms)
    for name, value in (job.get("metrics") or {}).items():
        if isinstance(value, int | float):
            result.server_ms.setdefault(name, []).append(float(value))
    return job_id


async def _resolve(target: Target, unresolved: list[str], result: ClosedLoop) -> None:
    """Find out how accepted jobs whose wait broke off ended: succeeded, or lost."""
    if not unresolved:
        return
    conn = target.connect()
    try:
        for job_id in unresolved:
            job = await wait_job(conn, target, job_id, LOST_AFTER_S)
            if job is None:
                result.lost.append(job_id)
            elif job["status"] == "succeeded":
                result.succeeded += 1
            else:
                result.errors[f"job {job['status']}"] += 1
        result.errors["wait broke off (job then checked)"] += len(unresolved)
    finally:
        await conn.close()

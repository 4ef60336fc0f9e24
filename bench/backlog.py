"""W4 backlog: one-record jobs submitted open-loop as fast as the API takes them, then drained and audited.

The workers are stopped while the jobs are submitted, so the whole backlog builds up and the accept
rate is the API's alone; then they start again and the drain rate is the workers' alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.client import HttpError
from bench.jobs import TERMINAL, Target, job_body, submit
from shared.settings import hash_api_key

LIST_PAGE = 500
REDIS_BATCH = 5_000
SAMPLE_EVERY_S = 0.5


@dataclass
class Submitted:
    """The jobs the API accepted during the open-loop phase, and what it refused."""

    ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    peak_backlog: int = 0


async def open_loop(
    target: Target,
    model: str,
    records: list[Any],
    connections: int,
    jobs: int,
    seconds: float,
    client: redis.Redis,
) -> Submitted:
    """Submit jobs without waiting for them over many connections, sampling the queue depth meanwhile."""
    result = Submitted()
    bodies = [job_body(record) for record in records]
    tickets = iter(range(jobs))
    started = time.perf_counter()
    stop_at = started + seconds

    async def sender() -> None:
        conn = target.connect()
        try:
            for ticket in tickets:
                if time.perf_counter() >= stop_at:
                    break
                try:
                    answer = await submit(conn, target, model, bodies[ticket % len(bodies)])
                except (HttpError, OSError) as exc:
                    result.errors[f"submit {type(exc).__name__}"] += 1
                    continue
                # 200 is an accepted job that had already finished when the API answered.
                if answer.status in (200, 202):
                    result.ids.append(str(answer.json()["id"]))
                else:
                    result.errors[f"submit HTTP {answer.status}"] += 1
        finally:
            await conn.close()

    async def sampler(done: asyncio.Event) -> None:
        while not done.is_set():
            result.peak_backlog = max(result.peak_backlog, int(client.zcard(f"queued:{model}")))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), SAMPLE_EVERY_S)

    done = asyncio.Event()
    watch = asyncio.create_task(sampler(done))
    await asyncio.gather(*(sender() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    done.set()
    await watch
    return result


def _fields(client: redis.Redis, ids: list[str], names: list[str]) -> list[list[str | None]]:
    found: list[list[str | None]] = []
    for start in range(0, len(ids), REDIS_BATCH):
        pipe = client.pipeline(transaction=False)
        for job_id in ids[start : start + REDIS_BATCH]:
            pipe.hmget(f"job:{job_id}", names)
        found += pipe.execute()
    return found


def drain(client: redis.Redis, model: str, ids: list[str], timeout_s: float) -> dict[str, Any]:
    """Wait until every accepted job is terminal, then return how they ended, read from Redis."""
    deadline = time.monotonic() + timeout_s
    remaining = list(ids)
    while remaining and time.monotonic() < deadline:
        if int(client.zcard(f"queued:{model}")) == 0:
            statuses = _fields(client, remaining, ["status"])
            remaining = [i for i, (s,) in zip(remaining, statuses, strict=True) if s not in TERMINAL]
        if remaining:
            time.sleep(SAMPLE_EVERY_S)
    rows = _fields(client, ids, ["status", "started_at", "completed_at"])
    ended = Counter(str(row[0]) for row in rows)
    started = [float(row[1]) for row in rows if row[1]]
    completed = [float(row[2]) for row in rows if row[2]]
    return {
        "statuses": dict(ended),
        "not_succeeded": [i for i, row in zip(ids, rows, strict=True) if row[0] != "succeeded"],
        "first_started": min(started, default=0.0),
        "last_completed": max(completed, default=0.0),
    }


async def listed_statuses(target: Target, wanted: set[str], max_pages: int) -> dict[str, str]:
    """Page through GET /v1/jobs, newest first, until every wanted id is seen; return their statuses."""
    found: dict[str, str] = {}
    conn = target.connect()
    cursor = ""
    try:
        for _ in range(max_pages):
            query = f"/v1/jobs?limit={LIST_PAGE}" + (f"&cursor={cursor}" if cursor else "")
            answer = await conn.request("GET", query, target.headers())
            if answer.status != 200:
                raise HttpError(f"GET /v1/jobs answered {answer.status}")
            page = answer.json()
            found.update({job["id"]: job["status"] for job in page["jobs"] if job["id"] in wanted})
            cursor = page["next_cursor"] or ""
            if not cursor or len(found) == len(wanted):
                break
    finally:
        await conn.close()
    return found


def redis_footprint(client: redis.Redis, key: str, queue: str, sample_id: str | None) -> dict[str, Any]:
    """Return Redis's memory, the jobs it retains for the key and what is left in the broker queue."""
    info = client.info("memory")
    retained = int(client.zcard(f"jobs:{hash_api_key(key)[:32]}"))
    used = int(info["used_memory"])
    sample: dict[str, int] = {}
    if sample_id:
        for name in (f"job:{sample_id}", f"job:{sample_id}:out"):
            sample[name.replace(sample_id, "{id}")] = int(client.memory_usage(name) or 0)
    return {
        "used_memory_bytes": used,
        "retained_jobs": retained,
        "bytes_per_retained_job": round(used / retained) if retained else None,
        "sample_job_key_bytes": sample,
        "queue_left": int(client.llen(queue)),
        "unacked_left": int(client.hlen("unacked")),
    }

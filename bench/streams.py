"""S streams: W1's load with and without 1,000 idle event streams held open on the same API, in one run.

The streams follow queued jobs of a second user key. To keep those jobs queued for as long as the
workload needs, without a worker spending a moment on them, they are submitted through a second,
short-lived API process whose queue no worker consumes (INFER_QUEUE_NAME); each is a real job,
accepted through the one door and kept in the same Redis. The API under test then serves a stream
of each: its state at once, then nothing but a keep-alive every 15 s. W1's load runs once before the
streams open and once while they are open. At the end the jobs are canceled through the API under
test, and every stream must deliver that terminal event and close: a stream that did not open, or
ended without it, fails the run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from bench import memory
from bench.client import Connection, HttpError
from bench.interactive import ClosedLoop, closed_loop
from bench.jobs import TERMINAL, Target, job_body, submit
from bench.report import closed_loop_figures, ratio
from bench.service import EVENTS_MAX_S, MAX_OPEN_REQUESTS_PER_KEY, Service
from tools.stack import Stack, free_port

if TYPE_CHECKING:
    from bench.run import Sizes

MODEL = "breast-cancer"
PARKED_MODEL = "iris"
PARKED_QUEUE = "bench-parked"
# Connections that submit and cancel the parked jobs; streams are opened this many at a time.
CONNECTIONS = 16
OPEN_BATCH = 100
OPEN_TIMEOUT_S = 120
CLOSE_TIMEOUT_S = 120

Item = TypeVar("Item")


def split_events(buffer: bytes) -> tuple[list[dict[str, str]], bytes]:
    """Return the complete Server-Sent Events in the buffer (field name to value) and the incomplete rest.

    Comments (a line starting with ':') are skipped; several data lines are joined with newlines.
    """
    *blocks, rest = buffer.split(b"\n\n")
    events = []
    for block in blocks:
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value
        if fields:
            events.append(fields)
    return events, rest


@dataclass
class Streams:
    """The event streams held open: how many opened, saw the terminal event, or ended early and why."""

    requested: int
    opened: int = 0
    events: int = 0
    ended: int = 0
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    open_seconds: float | None = None
    _waiting: int = field(default=0, init=False)
    _all_open: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def _settled(self) -> None:
        """Count one stream as settled (opened, or failed before it did); set the event after the last."""
        self._waiting -= 1
        if self._waiting <= 0:
            self._all_open.set()

    async def follow(self, target: Target, job_id: str) -> None:
        """Hold one job's events stream until its terminal event, then count how it went."""
        conn = target.connect()
        stream = conn.stream("GET", f"/v1/jobs/{job_id}/events", target.headers(Accept="text/event-stream"))
        opened = terminal = False
        buffer = b""
        try:
            async for status, piece in stream:
                if status != 200:
                    self.errors[f"HTTP {status}"] += 1
                    break
                found, buffer = split_events(buffer + piece)
                for event in found:
                    if event.get("event") != "job":
                        continue
                    self.events += 1
                    if not opened:
                        opened = True
                        self.opened += 1
                        self._settled()
                    terminal = orjson.loads(event["data"])["status"] in TERMINAL
        except (HttpError, OSError) as exc:
            self.errors[type(exc).__name__] += 1
        finally:
            await stream.aclose()
            await conn.close()
            if not opened:
                self._settled()
        if terminal:
            self.ended += 1
        else:
            self.dropped += 1

    async def open(self, target: Target, job_ids: list[str]) -> list[asyncio.Task[None]]:
        """Open a stream of each job, a batch at a time; return their tasks once each had its first event."""
        started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for batch in _batches(job_ids, OPEN_BATCH):
            self._waiting, self._all_open = len(batch), asyncio.Event()
            tasks += [asyncio.create_task(self.follow(target, job_id)) for job_id in batch]
            try:
                await asyncio.wait_for(self._all_open.wait(), OPEN_TIMEOUT_S)
            except TimeoutError:
                self.errors[f"a batch not open within {OPEN_TIMEOUT_S} s"] += 1
                break
        self.open_seconds = round(time.perf_counter() - started, 3)
        return tasks

    def figures(self) -> dict[str, Any]:
        """Return the streams' part of the report."""
        return {
            "requested": self.requested,
            "opened": self.opened,
            "open_seconds": self.open_seconds,
            "events": self.events,
            "ended_with_terminal_event": self.ended,
            "dropped": self.dropped,
            "errors": dict(self.errors),
        }


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _each(
    target: Target, items: Sequence[Item], send: Callable[[Connection, Item], Awaitable[str]]
) -> Counter[str]:
    """Run send(conn, item) for every item over a few connections; return the count of each outcome."""
    outcomes: Counter[str] = Counter()
    todo = iter(items)

    async def worker() -> None:
        conn = target.connect()
        try:
            for item in todo:
                try:
                    outcomes[await send(conn, item)] += 1
                except (HttpError, OSError) as exc:
                    outcomes[type(exc).__name__] += 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return outcomes


async def _park(service: Service, rows: list[Any], count: int) -> tuple[list[str], Counter[str]]:
    """Submit count jobs of the second key through an API whose queue no worker reads; return their ids."""
    env = {**service.stack.env, "INFER_QUEUE_NAME": PARKED_QUEUE}
    parking = Stack(service.stack.run_dir / "parking", env)
    port = free_port()
    await asyncio.to_thread(parking.start_api, port)
    target = Target("127.0.0.1", port, service.other_key)
    ids: list[str] = []
    bodies = [job_body(record) for record in rows]

    async def send(conn: Connection, index: int) -> str:
        answer = await submit(conn, target, PARKED_MODEL, bodies[index % len(bodies)])
        if answer.status == 202:
            ids.append(str(answer.json()["id"]))
        return f"HTTP {answer.status}"

    try:
        outcomes = await _each(target, range(count), send)
    finally:
        await asyncio.to_thread(parking.stop)
    return ids, outcomes


async def _cancel(target: Target, job_ids: list[str]) -> Counter[str]:
    async def send(conn: Connection, job_id: str) -> str:
        answer = await conn.request("POST", f"/v1/jobs/{job_id}/cancel", target.headers())
        return f"HTTP {answer.status}"

    return await _each(target, job_ids, send)


async def _load(
    service: Service, target: Target, rows: list[Any], sizes: Sizes
) -> tuple[ClosedLoop, dict[str, Any]]:
    with memory.cpu_meter(service.roles) as cpu:
        run = await closed_loop(target, MODEL, rows, sizes.w1_clients, sizes.w1_jobs, sizes.s_seconds)
    figures = closed_loop_figures(run)
    figures["cpu_s"] = cpu
    return run, figures


def _api_memory(service: Service) -> list[dict[str, float]]:
    """Return the memory of the API's arbiter, then of each of its worker processes."""
    return [memory.memory_mb(pid) for pid in service.api_pids()]


async def beside_streams(
    service: Service, target: Target, cancer: list[Any], iris: list[Any], sizes: Sizes
) -> dict[str, Any]:
    """Run W1's load without, then with, sizes.s_streams idle event streams open; return S's figures."""
    with memory.cpu_meter(service.roles) as cpu:
        parked, submitted = await _park(service, iris, sizes.s_streams)
        without_run, without = await _load(service, target, cancer, sizes)
        streams = Streams(requested=len(parked))
        watcher = Target(target.host, target.port, service.other_key)
        api_memory = {"before_streams": _api_memory(service)}
        tasks = await streams.open(watcher, parked)
        api_memory["with_streams"] = _api_memory(service)
        with_run, beside = await _load(service, target, cancer, sizes)
        canceled = await _cancel(watcher, parked)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            for task in pending:
                task.cancel()
    found = streams.figures()
    problems = (
        [f"{len(parked)} of {sizes.s_streams} parked jobs accepted"] if len(parked) < sizes.s_streams else []
    )
    if streams.opened < len(parked) or streams.ended < len(parked):
        problems.append(
            f"{streams.opened} of {len(parked)} streams opened and {streams.ended} delivered their job's end"
        )
    figures: dict[str, Any] = {
        "model": MODEL,
        "clients": sizes.w1_clients,
        "streams": found,
        "settings": {
            "INFER_MAX_OPEN_REQUESTS_PER_KEY": MAX_OPEN_REQUESTS_PER_KEY,
            "INFER_EVENTS_MAX_S": EVENTS_MAX_S,
        },
        "parked_submits": dict(submitted),
        "cancels": dict(canceled),
        "api_memory": api_memory,
        "without_streams": without,
        "with_streams": beside,
        "jobs_per_s_with_over_without": ratio(beside["jobs_per_s"], without["jobs_per_s"]),
        "p99_with_over_without": ratio(beside["latency_ms"]["p99"], without["latency_ms"]["p99"]),
        "jobs": without_run.attempted + with_run.attempted,
        "errors": without["errors"] + beside["errors"],
        "lost": without["lost"] + beside["lost"],
        "cpu_s": cpu,
    }
    if problems:
        figures["error"] = "; ".join(problems)
    return figures

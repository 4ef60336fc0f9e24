"""Running the workloads against a started service, in an order that keeps each one's figures its own."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import redis

from bench import data, memory
from bench.backlog import drain, listed_statuses, open_loop, redis_footprint
from bench.bulk import bulk
from bench.interactive import closed_loop
from bench.jobs import Target
from bench.profile import Profiler
from bench.publish import rollout
from bench.report import closed_loop_figures
from bench.service import Service
from bench.streams import beside_streams
from shared.settings import Settings

QUEUE = Settings.model_fields["queue_name"].default
WARM_UP_JOBS_PER_PROCESS = 20


@dataclass(frozen=True)
class Sizes:
    """How much each workload does, and the time bound of each."""

    w1_jobs: int
    w1_clients: int
    w1_seconds: float
    w2_jobs: int
    w2_seconds: float
    w3_rows: int
    w3_seconds: float
    w4_jobs: int
    w4_connections: int
    w4_seconds: float
    drain_seconds: float
    limit_seconds: float
    # P: W1's load for p_before_s, then the rollout, then p_after_s more once the new version served
    # a job, all within p_seconds; the new version is a forest of p_trees trees.
    p_before_s: float
    p_after_s: float
    p_seconds: float
    p_trees: int
    # S: idle event streams held open, and the time bound of each of its two W1 loads.
    s_streams: int
    s_seconds: float
    # N: W1's clients against the tutorial-style app for this long (it serves about 50 jobs a second).
    n_seconds: float
    # F: half of W1's clients for f_seconds on a Sentinel-managed Redis, the master killed f_kill_after_s in.
    f_seconds: float
    f_kill_after_s: float

    def as_dict(self) -> dict[str, Any]:
        """Return the sizes for the report."""
        return asdict(self)


FULL = Sizes(
    w1_jobs=20_000, w1_clients=64, w1_seconds=900, w2_jobs=2_000, w2_seconds=300,
    w3_rows=1_000_000, w3_seconds=900, w4_jobs=50_000, w4_connections=32, w4_seconds=600,
    drain_seconds=900, limit_seconds=2.0, p_before_s=20, p_after_s=20, p_seconds=600, p_trees=100,
    s_streams=1_000, s_seconds=900, n_seconds=60, f_seconds=60, f_kill_after_s=20,
)  # fmt: skip
QUICK = Sizes(
    w1_jobs=20_000, w1_clients=64, w1_seconds=5, w2_jobs=2_000, w2_seconds=3,
    w3_rows=20_000, w3_seconds=120, w4_jobs=2_000, w4_connections=32, w4_seconds=30,
    drain_seconds=120, limit_seconds=0.3, p_before_s=3, p_after_s=2, p_seconds=60, p_trees=20,
    s_streams=1_000, s_seconds=3, n_seconds=5, f_seconds=20, f_kill_after_s=6,
)  # fmt: skip


def _per_job(cpu: dict[str, float], jobs: int) -> dict[str, float]:
    roles = ("api", "worker_main", "worker_pool", "redis", "bench")
    return {role: round(cpu[role] * 1000 / jobs, 3) for role in roles if role in cpu} if jobs else {}


def process_memory(service: Service) -> dict[str, Any]:
    """Return the current and peak resident memory of every API and worker process."""
    api = [
        {"pid": pid, "role": "arbiter" if i == 0 else "worker", **memory.memory_mb(pid),
         "model_libraries": memory.mapped_libraries(pid)}
        for i, pid in enumerate(service.api_pids())
    ]  # fmt: skip
    workers = [
        {"pid": pid, "worker": name, "role": "main" if i == 0 else "pool", **memory.memory_mb(pid)}
        for name, pids in service.worker_pids().items()
        for i, pid in enumerate(pids)
    ]
    return {
        "api": api,
        "workers": workers,
        "api_peak_rss_mb": max((p["peak_rss_mb"] for p in api), default=None),
        "worker_peak_rss_mb": max((p["peak_rss_mb"] for p in workers), default=None),
    }


async def _model_features(target: Target, model: str) -> list[str]:
    conn = target.connect()
    try:
        answer = await conn.request("GET", f"/v1/models/{model}", target.headers())
    finally:
        await conn.close()
    if answer.status != 200:
        raise RuntimeError(f"GET /v1/models/{model} answered {answer.status}")
    features: list[str] = answer.json()["features"]
    return features


async def _closed(
    service: Service, target: Target, model: str, rows: list[Any], clients: int, jobs: int, seconds: float
) -> dict[str, Any]:
    with memory.cpu_meter(service.roles) as cpu:
        run = await closed_loop(target, model, rows, clients, jobs, seconds)
    figures = closed_loop_figures(run)
    figures.update({"model": model, "cpu_s": cpu, "cpu_ms_per_job": _per_job(cpu, run.succeeded)})
    return figures


async def _backlog(
    service: Service, target: Target, rows: list[Any], sizes: Sizes, profiler: Profiler | None
) -> dict[str, Any]:
    """Submit with the workers stopped, so the whole backlog builds up, then start them and time the drain."""
    client = redis.Redis.from_url(service.redis_url, decode_responses=True)
    used_before = int(client.info("memory")["used_memory"])
    paused = await asyncio.to_thread(service.pause_workers)
    try:
        with _profiling(profiler, "W4-submit", service), memory.cpu_meter(service.roles) as cpu:
            sent = await open_loop(
                target, "iris", rows, sizes.w4_connections, sizes.w4_jobs, sizes.w4_seconds, client
            )
    finally:
        await asyncio.to_thread(service.resume_workers, paused)
    with _profiling(profiler, "W4-drain", service), memory.cpu_meter(service.roles) as drain_cpu:
        ended = await asyncio.to_thread(drain, client, "iris", sent.ids, sizes.drain_seconds)
    listed = await listed_statuses(target, set(sent.ids), max_pages=4 * len(sent.ids) // 500 + 10)
    unlisted = [i for i in sent.ids if listed.get(i) != "succeeded"]
    lost = sorted(set(ended["not_succeeded"]) | set(unlisted))
    footprint = redis_footprint(client, target.key, QUEUE, sent.ids[-1] if sent.ids else None)
    footprint["delta_bytes_per_accepted_job"] = (
        round((footprint["used_memory_bytes"] - used_before) / len(sent.ids)) if sent.ids else None
    )
    accepted = len(sent.ids)
    busy = ended["last_completed"] - ended["first_started"]
    errors = sum(sent.errors.values())
    return {
        "model": "iris",
        "connections": sizes.w4_connections,
        "submitted": accepted + errors,
        "accepted": accepted,
        "errors": errors,
        "error_kinds": dict(sent.errors),
        "submit_seconds": round(sent.seconds, 3),
        "accept_rate_per_s": round(accepted / sent.seconds, 1) if sent.seconds else None,
        "peak_backlog": sent.peak_backlog,
        "drain_rate_per_s": round(accepted / busy, 1) if busy > 0 else None,
        "drain_seconds": round(busy, 3),
        "statuses": ended["statuses"],
        "api_listing": {"seen": len(listed), "succeeded": sum(s == "succeeded" for s in listed.values())},
        "lost": len(lost),
        "lost_ids": lost[:10],
        "redis": footprint,
        "cpu_s": cpu,
        "cpu_ms_per_job": _per_job(cpu, accepted),
        "drain_cpu_s": drain_cpu,
        "drain_cpu_ms_per_job": _per_job(drain_cpu, accepted),
    }


async def _bulk(service: Service, target: Target, rows: list[list[float]], sizes: Sizes) -> dict[str, Any]:
    features = await _model_features(target, "breast-cancer")
    body = data.csv_body(features, rows, sizes.w3_rows)
    with memory.cpu_meter(service.roles) as cpu:
        figures = await bulk(
            target, "breast-cancer", body, sizes.w3_rows, sizes.w3_seconds, service.api_pids()
        )
    del body
    figures["cpu_s"] = cpu
    figures["worker_peak_rss_mb"] = process_memory(service)["worker_peak_rss_mb"]
    return figures


def _profiling(
    profiler: Profiler | None, workload: str, service: Service
) -> contextlib.AbstractContextManager[None]:
    if profiler is None:
        return contextlib.nullcontext()
    roots = {"api": service.stack.procs["api"].pid}
    roots.update({name: pids[0] for name, pids in service.worker_pids().items()})
    return profiler.record(workload, roots)


async def run_workloads(
    service: Service, sizes: Sizes, only: set[str], profiler: Profiler | None = None
) -> dict[str, Any]:
    """Warm the service up, then run W2, W1, W4 and W3 (the bulk job sets memory peaks), then S and P.

    S (its streams raise the API's memory) and P (its new version the workers') come after the
    memory figures are read, so those stay the service's own with the example models.
    """
    target = Target("127.0.0.1", service.port, service.key)
    cancer = data.breast_cancer_rows(await _model_features(target, "breast-cancer"))
    iris = data.iris_rows(await _model_features(target, "iris"))
    texts = [[text] for text in data.email_texts()]
    processes = service.shape.workers * service.shape.concurrency
    for model, rows in (("iris", iris), ("breast-cancer", cancer), ("scam-email", texts)):
        warm = await closed_loop(target, model, rows, 2 * processes, WARM_UP_JOBS_PER_PROCESS * processes, 60)
        if warm.succeeded == 0:
            raise RuntimeError(f"warm-up: no {model} job succeeded: {dict(warm.errors)}")
    results: dict[str, Any] = {"workloads": {}}
    found = results["workloads"]
    if "W2" in only:
        with _profiling(profiler, "W2", service):
            found["W2"] = await _closed(service, target, "iris", iris, 1, sizes.w2_jobs, sizes.w2_seconds)
    if "W1" in only:
        with _profiling(profiler, "W1", service):
            found["W1"] = await _closed(
                service, target, "breast-cancer", cancer, sizes.w1_clients, sizes.w1_jobs, sizes.w1_seconds
            )
    if "W4" in only:
        found["W4"] = await _backlog(service, target, iris, sizes, profiler)
    results["memory_before_bulk"] = process_memory(service)
    if "W3" in only:
        with _profiling(profiler, "W3", service):
            found["W3"] = await _bulk(service, target, cancer, sizes)
    results["memory"] = process_memory(service)
    if "S" in only:
        with _profiling(profiler, "S", service):
            found["S"] = await beside_streams(service, target, cancer, iris, sizes)
    if "P" in only:
        with _profiling(profiler, "P", service):
            found["P"] = await rollout(service, target, sizes)
    if profiler is not None:
        results["profiles"] = profiler.summaries
    return results

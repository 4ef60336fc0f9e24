"""N naive: W1's load against the tutorial-style Flask + Celery app, its clients polling every 20 ms."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import data, memory
from bench.client import Connection, HttpError
from bench.interactive import LOST_AFTER_S, ClosedLoop, closed_loop
from bench.jobs import Target
from bench.report import closed_loop_figures
from bench.service import ROOT
from tools.stack import BIN, Stack, free_port, http_status, wait_until

POLL_S = 0.02
WARM_UP_JOBS = 200


class NaiveStack(Stack):
    """The project's Stack, starting the tutorial-style app and its Celery worker instead of the service."""

    def start_naive_worker(self, concurrency: int) -> None:
        """Start the tutorial app's Celery worker with a pool of processes."""
        argv = [str(BIN / "celery"), "-A", "bench.naive.app", "worker", "--loglevel", "WARNING",
                "--concurrency", str(concurrency), "--hostname", "naive@%h"]  # fmt: skip
        self._spawn("worker-naive", argv)

    def start_naive_api(self, port: int, processes: int) -> str:
        """Start the tutorial app under gunicorn's default sync workers and return its base URL."""
        argv = [str(BIN / "gunicorn"), "--workers", str(processes), "--bind", f"127.0.0.1:{port}",
                "bench.naive.app:create_app()"]  # fmt: skip
        self._spawn("api", argv)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(base + "/result/none") in (200, 202), 30, "the naive app")
        return base


async def _poll_one(
    conn: Connection, target: Target, model: str, body: bytes, result: ClosedLoop, unresolved: list[str]
) -> str | None:
    """Submit one request and poll its result every 20 ms; record its latency or why it failed."""
    sent = time.perf_counter()
    try:
        answer = await conn.request(
            "POST", f"/predict/{model}", target.headers(Content_Type="application/json"), body
        )
        if answer.status != 202:
            result.errors[f"submit HTTP {answer.status}"] += 1
            return None
        task_id = str(answer.json()["id"])
        deadline = sent + LOST_AFTER_S
        while time.perf_counter() < deadline:
            await asyncio.sleep(POLL_S)
            polled = await conn.request("GET", f"/result/{task_id}", target.headers())
            found: dict[str, Any] = polled.json()
            if polled.status == 200:
                break
        else:
            result.lost.append(task_id)
            return None
    except (HttpError, OSError) as exc:
        result.errors[f"{type(exc).__name__}"] += 1
        return None
    if found["status"] != "SUCCESS" or len(found.get("outputs") or []) != 1:
        result.errors[f"task {found['status']}"] += 1
        return None
    result.succeeded += 1
    result.latencies_ms.append((time.perf_counter() - sent) * 1000)
    return task_id


def measure(
    registry: Path, *, runtime: str, concurrency: int, api_processes: int, clients: int, jobs: int,
    seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """Start the naive app on a private Redis, run W1's closed loop against it and return its figures."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-naive-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFER_", "NAIVE_"))}
    env.update({"PYTHONPATH": str(ROOT), "NAIVE_REGISTRY": str(registry.resolve()), "NAIVE_RUNTIME": runtime})
    stack = NaiveStack(run_dir, env)
    try:
        stack.env["NAIVE_REDIS_URL"] = stack.start_redis(free_port())
        stack.start_naive_worker(concurrency)
        port = free_port()
        stack.start_naive_api(port, api_processes)
        target = Target("127.0.0.1", port, "")
        cancer = data.breast_cancer_rows()
        asyncio.run(closed_loop(target, "breast-cancer", cancer, 8, WARM_UP_JOBS, 120, _poll_one))
        roles = {"api": [stack.procs["api"].pid, *memory.descendants(stack.procs["api"].pid)]}
        worker = stack.procs["worker-naive"].pid
        roles.update({"workers": [worker, *memory.descendants(worker)], "redis": [stack.procs["redis"].pid]})
        with memory.cpu_meter(lambda: roles) as cpu:
            run = asyncio.run(closed_loop(target, "breast-cancer", cancer, clients, jobs, seconds, _poll_one))
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    figures = closed_loop_figures(run)
    figures.update({"runtime": runtime, "poll_ms": POLL_S * 1000, "cpu_s": cpu})
    figures["shape"] = {"api_processes": api_processes, "concurrency": concurrency}
    return figures

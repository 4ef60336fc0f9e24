"""The service under test: the project's own Stack on loopback, with an environment fit for the workloads."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from bench import memory
from shared.settings import hash_api_key
from tools.sentinel import SentinelStack
from tools.stack import Stack, free_port, http_status, wait_until

ROOT = Path(__file__).resolve().parents[1]
# W4 queues 50,000 jobs on one model. W3's million 30-feature rows (about 200 MB of CSV) fit the
# shipped bulk body limit, so no body limit is set here.
MAX_QUEUED_PER_MODEL = 100_000
READY_TIMEOUT_S = 90
# S holds 1,000 event streams of one key open in one API process beside W1's 64 long-polls: the
# per-key cap on open requests (256 shipped) must let them all in, and no stream may reach the
# events time limit (300 s shipped) before the workload closes it.
MAX_OPEN_REQUESTS_PER_KEY = 2_048
EVENTS_MAX_S = 3_600


@dataclass(frozen=True)
class Shape:
    """How many of each process the stack runs."""

    workers: int
    concurrency: int
    api_processes: int


@dataclass
class Service:
    """A running stack and what a client needs to reach it."""

    stack: Stack
    port: int
    key: str
    shape: Shape
    # An admin key (P publishes and routes with it) and a second user key (S's event streams).
    admin_key: str
    other_key: str

    @property
    def redis_url(self) -> str:
        """Return the URL of the stack's private Redis."""
        return self.stack.env["INFER_REDIS_URL"]

    def api_pids(self) -> list[int]:
        """Return the gunicorn arbiter's id followed by its workers' ids."""
        master = self.stack.procs["api"].pid
        return [master, *memory.descendants(master)]

    def worker_pids(self) -> dict[str, list[int]]:
        """Return each Celery worker's main process id followed by its pool processes' ids."""
        return {
            name: [self.stack.procs[name].pid, *memory.descendants(self.stack.procs[name].pid)]
            for name in self.stack.workers()
        }

    def roles(self) -> dict[str, list[int]]:
        """Return the process ids of the API, the workers' consumers, their pools and Redis."""
        workers = self.worker_pids().values()
        return {
            "api": self.api_pids(),
            "worker_main": [pids[0] for pids in workers],
            "worker_pool": [pid for pids in workers for pid in pids[1:]],
            "redis": [self.stack.procs["redis"].pid],
        }

    def pause_workers(self) -> list[str]:
        """Stop every worker warmly, so jobs submitted now wait in the queue; return their names."""
        names = self.stack.workers()
        for name in names:
            self.stack.stop_worker(name)
        return names

    def resume_workers(self, names: list[str]) -> None:
        """Start the named workers again and return once each has its pool of processes."""
        for name in names:
            self.stack.start_worker(name, self.shape.concurrency)
        wait_until(lambda: _pools_started(self), READY_TIMEOUT_S, "every pool process")

    def stop(self) -> None:
        """Stop every process of the stack."""
        self.stack.stop()


def service_env(registry: Path, key: str, admin_key: str, other_key: str) -> dict[str, str]:
    """Return the environment of the stack's processes: this one's, less any INFER_ setting, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(
        {
            "INFER_REGISTRY_PATH": str(registry),
            "INFER_API_KEY_HASHES": f"{hash_api_key(key)},{hash_api_key(other_key)}",
            "INFER_ADMIN_KEY_HASHES": hash_api_key(admin_key),
            "INFER_MAX_OPEN_REQUESTS_PER_KEY": str(MAX_OPEN_REQUESTS_PER_KEY),
            "INFER_EVENTS_MAX_S": str(EVENTS_MAX_S),
            "INFER_MAX_QUEUED_PER_MODEL": str(MAX_QUEUED_PER_MODEL),
            "INFER_RATE_LIMIT_PER_S": "0",
            "INFER_MAX_WAIT_S": "60",
        }
    )
    return env


def start_service(
    run_dir: Path,
    registry: Path,
    shape: Shape,
    sentinel: bool = False,
    overrides: dict[str, str] | None = None,
) -> Service:
    """Start Redis, the workers and the API on loopback and return once a worker consumes.

    sentinel: on a Sentinel-managed Redis (a master, two replicas, three sentinels) instead of one
    redis-server. overrides: settings of the environment to change.
    """
    key, admin_key, other_key = (secrets.token_urlsafe(24) for _ in range(3))
    env = {**service_env(registry, key, admin_key, other_key), **(overrides or {})}
    stack = SentinelStack(run_dir, env) if sentinel else Stack(run_dir, env)
    service = Service(
        stack=stack, port=free_port(), key=key, shape=shape, admin_key=admin_key, other_key=other_key
    )
    try:
        if isinstance(stack, SentinelStack):
            stack.start_sentinel_redis(secrets.token_urlsafe(16), secrets.token_urlsafe(16))
        else:
            stack.start_redis(free_port())
        for index in range(1, shape.workers + 1):
            stack.start_worker(f"worker{index}", shape.concurrency)
        base = stack.start_api(service.port, shape.api_processes)
        wait_until(lambda: http_status(base + "/readyz") == 200, READY_TIMEOUT_S, "a consuming worker")
        wait_until(lambda: _pools_started(service), READY_TIMEOUT_S, "every pool process")
    except BaseException:
        stack.stop()
        raise
    return service


def _pools_started(service: Service) -> bool:
    return all(len(pids) > service.shape.concurrency for pids in service.worker_pids().values())

"""The real parts: a redis-server, Celery worker subprocesses and the API under gunicorn, on loopback."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from shared.settings import Settings
from shared.store import JobStore, connect
from tools.stack import Stack, free_port, http_status, wait_until

KEY = "test-key-alpha"
OTHER_KEY = "test-key-beta"
# The one admin key of the test stacks: it may also publish, route and retire model versions.
ADMIN_KEY = "test-key-admin"
# Short enough that a killed worker's message comes back within the test's patience.
VISIBILITY_TIMEOUT_S = 4
RESTORE_INTERVAL_S = 1
# A lost message (neither queued nor held) is published again within this long.
REDELIVERY_S = 3


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def error_of(status_code: int, body: Any, text: str, status: int, code: str) -> dict[str, Any]:
    """Check an answer is the error body of the contract with this status and code; return the error."""
    assert status_code == status, text
    assert isinstance(body, dict), text
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    error: dict[str, Any] = body["error"]
    return error


class Api:
    """A client of one running API process, with the test's key unless told otherwise."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def request(self, method: str, path: str, key: str | None = KEY, **kwargs: Any) -> requests.Response:
        """Send a request with the Bearer key and return the response."""
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.session.request(method, self.base + path, headers=headers, timeout=90, **kwargs)

    def submit(
        self,
        model: str,
        inputs: list[Any],
        wait: float | None = None,
        key: str | None = KEY,
        headers: dict[str, str] | None = None,
        **body: Any,
    ) -> requests.Response:
        """Submit a JSON job (extra keyword arguments go into the body) and return the response."""
        sent = {"Prefer": f"wait={wait:g}"} if wait is not None else {}
        sent.update(headers or {})
        path = f"/v1/models/{model}/jobs"
        return self.request("POST", path, key=key, json={"inputs": inputs, **body}, headers=sent)

    def wait_job(self, job_id: str, seconds: float = 30) -> dict[str, Any]:
        """Long-poll a job until it ends and return it."""
        body: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}?wait={seconds}").json()
        return body


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start one real redis-server for the session and return its URL."""
    stack = Stack(tmp_path_factory.mktemp("redis"))
    url = stack.start_redis(free_port())
    yield url
    stack.stop()


def stack_env(redis_url: str, registry_path: Path, **overrides: str) -> dict[str, str]:
    """Return the environment of the service's processes in tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFER_")}
    env.update(
        {
            "INFER_REDIS_URL": redis_url,
            "INFER_REGISTRY_PATH": str(registry_path),
            "INFER_API_KEY_HASHES": f"{_hash(KEY)},{_hash(OTHER_KEY)}",
            "INFER_ADMIN_KEY_HASHES": _hash(ADMIN_KEY),
            "INFER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            "INFER_RESTORE_INTERVAL_S": str(RESTORE_INTERVAL_S),
            "INFER_REDELIVERY_S": str(REDELIVERY_S),
            "INFER_MAX_WAIT_S": "60",
        }
    )
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def stack_factory(
    redis_url: str, registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Stack]]:
    """Make stacks of extra processes on the session's Redis, stopping them all at the end."""
    made: list[Stack] = []

    def make(**overrides: str) -> Stack:
        stack = Stack(tmp_path_factory.mktemp("stack"), stack_env(redis_url, registry_path, **overrides))
        made.append(stack)
        return stack

    yield make
    # All at once: a stack whose Redis went away first waits out its workers' stop timeout alone.
    with ThreadPoolExecutor(max(1, len(made))) as pool:
        list(pool.map(Stack.stop, made))


@pytest.fixture(scope="session")
def service(stack_factory: Callable[..., Stack]) -> Stack:
    """Start one worker of two processes and the API under gunicorn for the session."""
    stack = stack_factory()
    stack.start_worker("worker-main", 2)
    stack.start_api(free_port())
    return stack


@pytest.fixture(scope="session")
def api_base(service: Stack) -> str:
    """Return the base URL of the session's API, once a worker consumes."""
    base = service.urls["api"]
    wait_until(lambda: http_status(base + "/readyz") == 200, 60, "a consuming worker")
    return base


@pytest.fixture
def api(api_base: str, clean_redis: redis.Redis) -> Api:
    """Return a client of the session's API with Redis emptied of jobs."""
    return Api(api_base)


@pytest.fixture
def clean_redis(redis_url: str) -> redis.Redis:
    """Delete every job key, keeping the broker's bindings, so each test starts empty."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = [k for k in client.scan_iter(count=1000) if not k.startswith("_kombu")]
    if keys:
        client.delete(*keys)
    return client


@pytest.fixture
def store(redis_url: str, clean_redis: redis.Redis) -> JobStore:
    """Return the job store on the session's Redis."""
    settings = Settings(redis_url=redis_url)
    return JobStore(connect(settings), settings)

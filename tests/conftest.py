"""Session-wide fixtures: the example models trained once, and the one real service all test folders share."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from models.train import train_breast_cancer, train_iris, train_scam_email
from shared.registry import Registry
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import JobStore, connect
from tests import scheduling
from tests.service import Api, stack_env
from tools.stack import Stack, free_port, http_status, wait_until

# The service (a redis-server, Celery workers, the API under gunicorn, on loopback) is defined here, not in
# a folder's conftest: a fixture defined in two conftests starts twice, once for each folder's tests.


@dataclass
class _Stacks:
    """The stacks stack_factory made, and who owns the ones being made now."""

    made: list[Stack] = field(default_factory=list)
    # The fixture being set up or the test being run, innermost last: a stack ends with its owner.
    owners: list[list[Stack]] = field(default_factory=list)
    by_fixture: dict[pytest.FixtureDef[Any], list[Stack]] = field(default_factory=dict)


_STACKS = pytest.StashKey[_Stacks]()
_TEST_STACKS = pytest.StashKey[list[Stack]]()


def pytest_configure(config: pytest.Config) -> None:
    """Spread whole files over pytest-xdist's processes when `-n` asks for them (tests/scheduling.py)."""
    config.pluginmanager.register(scheduling, "tests-scheduling")


def _stacks(config: pytest.Config) -> _Stacks:
    return config.stash.setdefault(_STACKS, _Stacks())


@pytest.fixture(scope="session")
def registry_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train and publish the three example models into a registry of the test session's own."""
    root = tmp_path_factory.mktemp("registry")
    for train in (train_iris, train_breast_cancer, train_scam_email):
        train(root)
    return root


@pytest.fixture(scope="session")
def registry(registry_path: Path) -> Registry:
    """Return a registry reading the session's trained models."""
    found = Registry(LocalStorage(registry_path))
    found.refresh()
    return found


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start one real redis-server for the session and return its URL."""
    stack = Stack(tmp_path_factory.mktemp("redis"))
    url = stack.start_redis(free_port())
    yield url
    stack.stop()


def _kill(stacks: list[Stack]) -> None:
    """End every process of the stacks at once: no test looks at them any more, so nothing waits."""
    for stack in stacks:
        stack.concurrency.clear()  # a supervisor must not start again what is being ended
    procs = [proc for stack in stacks for proc in stack.procs.values() if proc.poll() is None]
    for proc in procs:  # each was started in a session of its own: its group holds its children
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()
    for stack in stacks:
        stack.procs.clear()


@contextlib.contextmanager
def _owning(config: pytest.Config, own: list[Stack]) -> Iterator[None]:
    """Put the stacks made meanwhile in own (the innermost owner wins)."""
    owners = _stacks(config).owners
    owners.append(own)
    try:
        yield
    finally:
        owners.pop()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Iterator[Any]:
    """Make the fixture being set up the owner of the stacks it makes."""
    with _owning(request.config, _stacks(request.config).by_fixture.setdefault(fixturedef, [])):
        return (yield)


def pytest_fixture_post_finalizer(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
    """End a fixture's stacks once it is torn down: a module's with the module, a test's with the test."""
    _kill(_stacks(request.config).by_fixture.pop(fixturedef, []))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Make the test being run the owner of the stacks it makes."""
    with _owning(item.config, item.stash.setdefault(_TEST_STACKS, [])):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """End the stacks the test made once its fixtures are torn down."""
    try:
        return (yield)
    finally:
        _kill(item.stash.get(_TEST_STACKS, []))


@pytest.fixture(scope="session")
def stack_factory(
    pytestconfig: pytest.Config, redis_url: str, registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Stack]]:
    """Make stacks of processes on the session's Redis, each ending with the test or fixture that made it."""
    stacks = _stacks(pytestconfig)

    def make(**overrides: str) -> Stack:
        stack = Stack(tmp_path_factory.mktemp("stack"), stack_env(redis_url, registry_path, **overrides))
        stacks.made.append(stack)
        if stacks.owners:
            stacks.owners[-1].append(stack)
        return stack

    yield make
    _kill(stacks.made)  # whatever is left, all at once


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

"""How `make test` spreads the suite over pytest-xdist's processes: whole files, the longest first.

A file's tests stay in one process, so a module's stack (or a session fixture the file needs) starts
once. Files that share a costly session fixture go to the same process. Each file's time in the last
run (pytest's cache, written by the controller) decides the order: the longest start first, so no
process is left alone with a long file at the end. A test marked `quiet` (a bound in fractions of a
second that a busy machine could break) runs while no other process runs a test.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

# Files that share one session fixture too slow to start twice (SeaweedFS, s3_server): one process.
_TOGETHER = {
    "tests/integration/test_registry_s3.py": "s3-server",
    "tests/integration/test_publish.py": "s3-server",
}
_SECONDS = "tests/seconds-by-file"


def _unit(nodeid: str) -> str:
    """Return what must run in one process: the test's file, or the group its file belongs to."""
    path = nodeid.split("::", 1)[0]
    return _TOGETHER.get(path, path)


class FileScheduling(LoadScopeScheduling):
    """Hand out whole files (or groups of them) in the order the processes collected them."""

    def _split_scope(self, nodeid: str) -> str:
        return _unit(nodeid)


def _last_seconds(config: pytest.Config) -> dict[str, float]:
    """Return each unit's seconds in the last run, or nothing without pytest's cache."""
    cache = getattr(config, "cache", None)
    found = cache.get(_SECONDS, {}) if cache is not None else {}
    return found if isinstance(found, dict) else {}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> FileScheduling:
    """Schedule by file; with the last run's times the processes' order is kept, not xdist's by count."""
    if _last_seconds(config):
        config.option.loadscopereorder = False
    return FileScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist process, put the files the last run found longest first, each file's tests in order."""
    seconds = _last_seconds(config)
    if not hasattr(config, "workerinput") or not seconds:
        return
    first_seen = {unit: index for index, unit in reversed(list(enumerate(_unit(i.nodeid) for i in items)))}
    items.sort(key=lambda item: (-seconds.get(_unit(item.nodeid), 0.0), first_seen[_unit(item.nodeid)]))


class _Clock:
    """Add up each unit's seconds in this run and keep them in pytest's cache at its end."""

    def __init__(self) -> None:
        self.spent: defaultdict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Count a phase of a test (the controller sees every process's reports)."""
        self.spent[_unit(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Merge this run's times into the last ones: a run of a few files changes only theirs."""
        cache = getattr(session.config, "cache", None)
        if cache is not None and self.spent:
            cache.set(
                _SECONDS, {**_last_seconds(session.config), **{u: round(s, 1) for u, s in self.spent.items()}}
            )


def pytest_configure(config: pytest.Config) -> None:
    """Time the files in the process that sees every report: the controller, or the only process."""
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Clock(), "tests-file-clock")


@contextlib.contextmanager
def _locked(path: Path, mode: int) -> Iterator[None]:
    """Hold an flock on the file (shared or exclusive) while the block runs."""
    with path.open("a") as file:
        fcntl.flock(file, mode)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


@contextlib.contextmanager
def _turn(item: pytest.Item) -> Iterator[None]:
    """Run a test beside others, or, marked quiet, alone: the others' current tests end, none starts.

    Every test holds the run's lock shared; a quiet one holds it alone. Whoever takes it passes the
    gate first, which a quiet test keeps closed while it waits, so the others cannot starve it.
    """
    factory = getattr(item.config, "_tmp_path_factory", None)
    if not hasattr(item.config, "workerinput") or factory is None:
        yield  # one process: nothing runs beside the test
        return
    shared = factory.getbasetemp().parent  # each process's base folder is in the run's one
    mode = fcntl.LOCK_EX if item.get_closest_marker("quiet") else fcntl.LOCK_SH
    with contextlib.ExitStack() as held:
        with _locked(shared / "tests-gate.lock", fcntl.LOCK_EX):
            held.enter_context(_locked(shared / "tests-running.lock", mode))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """Run each test's setup, call and teardown in its turn (tests/scheduling.py's quiet tests)."""
    with _turn(item):
        return (yield)

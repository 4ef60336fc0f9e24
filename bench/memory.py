"""Reading processes from /proc: their descendants, resident memory, CPU time and mapped libraries."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PROC = Path("/proc")
# Libraries whose presence in a process's memory map shows a model runtime was imported.
MODEL_LIBRARIES = ("sklearn", "onnxruntime", "scipy")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    """Return the ids of a process's direct children."""
    found: list[int] = []
    for task in (PROC / str(pid) / "task").glob("*"):
        found += [int(child) for child in _read(task / "children").split()]
    return found


def descendants(pid: int) -> list[int]:
    """Return the ids of a process's children, their children and so on."""
    found: list[int] = []
    pending = children(pid)
    while pending:
        child = pending.pop()
        found.append(child)
        pending += children(child)
    return found


def status_kib(pid: int) -> dict[str, int]:
    """Return the kB figures of /proc/<pid>/status (VmRSS, VmHWM, ...), empty once the process is gone."""
    figures: dict[str, int] = {}
    for line in _read(PROC / str(pid) / "status").splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            figures[name] = int(parts[0])
    return figures


def _pss_kib(pid: int) -> int:
    for line in _read(PROC / str(pid) / "smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def memory_mb(pid: int) -> dict[str, float]:
    """Return a process's resident, peak resident and proportional (shared pages split) memory in MB."""
    figures = status_kib(pid)
    return {
        "rss_mb": round(figures.get("VmRSS", 0) * 1024 / 1e6, 1),
        "peak_rss_mb": round(figures.get("VmHWM", 0) * 1024 / 1e6, 1),
        "pss_mb": round(_pss_kib(pid) * 1024 / 1e6, 1),
    }


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds a process has used, 0 once it is gone."""
    raw = _read(PROC / str(pid) / "stat")
    if not raw:
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5), counted after the ')' that closes the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command(pid: int) -> str:
    """Return a process's command line, shortened, for the report."""
    return _read(PROC / str(pid) / "cmdline").replace("\0", " ").strip()[:120]


def mapped_libraries(pid: int, names: Iterable[str] = MODEL_LIBRARIES) -> list[str]:
    """Return which of the named libraries have a file mapped into a process's memory."""
    maps = _read(PROC / str(pid) / "maps")
    return [name for name in names if f"/{name}/" in maps or f"/{name}." in maps]


def cpu_by_role(roles: Mapping[str, list[int]]) -> dict[str, float]:
    """Return the CPU seconds used so far by each role's processes."""
    return {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in roles.items()}


def busy_fraction(seconds: float) -> float:
    """Return the fraction of all cores the machine kept busy over the next few seconds."""
    busy_before, total_before = machine_busy_seconds()
    time.sleep(seconds)
    busy, total = machine_busy_seconds()
    return round((busy - busy_before) / max(1e-9, total - total_before), 3)


def machine_busy_seconds() -> tuple[float, float]:
    """Return (busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in _read(PROC / "stat").splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


@contextmanager
def cpu_meter(roles: Callable[[], dict[str, list[int]]]) -> Iterator[dict[str, float]]:
    """Yield a dict that, when the block ends, holds the CPU seconds each role and this process used in it."""
    pids = {**roles(), "bench": [os.getpid()]}
    before = cpu_by_role(pids)
    busy_before, total_before = machine_busy_seconds()
    started = time.monotonic()
    figures: dict[str, float] = {}
    yield figures
    after = cpu_by_role(pids)
    busy, total = machine_busy_seconds()
    figures.update({role: round(max(0.0, after[role] - before[role]), 2) for role in pids})
    figures["wall_s"] = round(time.monotonic() - started, 2)
    figures["machine_busy_fraction"] = round((busy - busy_before) / max(1e-9, total - total_before), 3)
    # CPU that no process of the benchmark used: other work on a shared machine skews the figures.
    ours = sum(after[role] - before[role] for role in pids)
    figures["others"] = round(max(0.0, busy - busy_before - ours), 2)

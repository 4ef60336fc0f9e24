"""Sampling profiles of the stack's processes with py-spy while a workload runs, summarised for the report."""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RATE_HZ = 100
TOP = 12
STOP_TIMEOUT_S = 30
PROJECT_PACKAGES = ("api", "shared", "worker")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE = re.compile(r"(?:site|dist)-packages/(?P<package>[A-Za-z0-9_]+)")
_STDLIB = re.compile(r"/lib/python3\.\d+/(?P<module>[A-Za-z0-9_]+)")
_PROJECT = re.compile(r"/(?P<path>(?:" + "|".join(PROJECT_PACKAGES) + r")/[^/]+(?:/[^/]+)*)$")
_PROCESS = re.compile(r"^process (?P<pid>\d+):")


def _frame(raw: str) -> tuple[str, str, bool]:
    """Return the function with its short file name, its package or module, and whether it is ours."""
    match = _FRAME.match(raw)
    if match is None:
        return raw, raw, False
    path = match["file"]
    short = "/".join(path.split("/")[-2:])
    site, stdlib, ours = _SITE.search(path), _STDLIB.search(path), _PROJECT.search(path)
    if site:
        return f"{match['function']} ({short})", site["package"], False
    if stdlib:
        return f"{match['function']} ({short})", f"stdlib:{stdlib['module']}", False
    if ours:
        return f"{match['function']} ({ours['path']})", ours["path"].split("/")[0], True
    return f"{match['function']} ({short})", short, False


def summarise(collapsed: str, top: int = TOP) -> dict[str, Any]:
    """Return sample counts by process, top self-time functions, and inclusive shares of ours and packages."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    project: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw = stack.split(";")
        pids = [m["pid"] for m in map(_PROCESS.match, raw) if m]
        frames = [_frame(f) for f in raw if not _PROCESS.match(f)]
        if not frames:
            continue
        total += count
        processes[pids[-1] if pids else "?"] += count
        own[frames[-1][0]] += count
        for package in {package for _, package, _ in frames}:
            packages[package] += count
        for function in {function for function, _, ours in frames if ours}:
            project[function] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "process_pct": dict(share(processes)),
        "top_self_pct": share(own),
        "package_inclusive_pct": share(packages),
        "project_inclusive_pct": share(project),
    }


class Profiler:
    """Runs py-spy on each role's processes (children included) for the length of a block."""

    def __init__(self, py_spy: str, out_dir: Path) -> None:
        self.py_spy = py_spy
        self.out_dir = out_dir
        self.summaries: dict[str, dict[str, Any]] = {}

    @contextmanager
    def record(self, workload: str, roots: dict[str, int]) -> Iterator[None]:
        """Sample each root process and its descendants while the block runs, then summarise the samples."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for role, pid in roots.items():
            out = self.out_dir / f"{workload}-{role}.txt"
            argv = [self.py_spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
                    "--full-filenames", "--rate", str(RATE_HZ), "--format", "raw",
                    "--output", str(out)]  # fmt: skip
            spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running[role] = (spy, out)
        try:
            yield
        finally:
            for proc, _ in running.values():
                proc.send_signal(signal.SIGINT)
            for role, (proc, out) in running.items():
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if out.is_file():
                    self.summaries.setdefault(workload, {})[role] = summarise(out.read_text())

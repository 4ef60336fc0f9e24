"""``python -m bench``: start a private stack on loopback, run the workloads, print one JSON document."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from bench import data, limit, memory, report
from bench.failover import measure as measure_failover
from bench.naive.run import measure as measure_naive
from bench.profile import Profiler
from bench.run import FULL, QUICK, run_workloads
from bench.service import ROOT, Shape, start_service

WORKLOADS = ("L", "W1", "W2", "W3", "W4", "S", "P", "N", "F")
EXAMPLES = ("iris", "breast-cancer", "scam-email")
LIMIT_BATCH = 5_000
# Another load on the machine skews every figure: how idle counts as idle, sampled over how long.
QUIET_BUSY_FRACTION = 0.1
QUIET_SAMPLE_S = 2.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="run each workload for a few seconds (CI)")
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--workers", type=int, default=1, help="Celery workers (default 1)")
    parser.add_argument(
        "--concurrency", type=int, default=os.cpu_count() or 1, help="pool processes a worker"
    )
    parser.add_argument("--api-processes", type=int, default=1, help="gunicorn workers (default 1)")
    parser.add_argument("--registry", type=Path, help="default: models/registry, else trained")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads to run")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs, Redis data)")
    parser.add_argument(
        "--wait-quiet", type=float, default=0, help="first wait up to this many seconds for an idle machine"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the stack, stacks into this folder")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="the py-spy program")
    args = parser.parse_args(argv)
    if args.profile and not args.py_spy:
        parser.error("--profile needs py-spy: pip install py-spy, or name it with --py-spy")
    args.only = {name.strip().upper() for name in args.only.split(",") if name.strip()}
    if not args.only <= set(WORKLOADS):
        parser.error(f"--only takes some of {', '.join(WORKLOADS)}")
    return args


def _registry(wanted: Path | None, run_dir: Path) -> Path:
    """Return a registry holding the example models, training them into the run folder when none has them."""
    for root in (wanted, ROOT / "models" / "registry"):
        if root is not None and all((root / name / "default").is_file() for name in EXAMPLES):
            return root.resolve()
    root = run_dir / "registry"
    print(f"training the example models into {root}…", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "models.train", "--registry", str(root)], cwd=ROOT, check=True)
    return root


def _machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.machine(),
    )  # fmt: skip
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    # Uncommitted service code is measured too: name it, so a figure can be traced to what ran.
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "api", "shared", "worker"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout.splitlines()  # fmt: skip
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": platform.python_version(),
        "redis": next((w.removeprefix("v=") for w in redis_version if w.startswith("v=")), None),
        "commit": commit or None,
        "uncommitted_service_files": [line[3:] for line in changed],
    }


def _wait_quiet(seconds: float) -> float:
    """Wait until the machine is mostly idle, or the seconds pass; return how busy it was last."""
    deadline = time.monotonic() + seconds
    busy = memory.busy_fraction(QUIET_SAMPLE_S)
    while busy > QUIET_BUSY_FRACTION and time.monotonic() < deadline:
        busy = memory.busy_fraction(QUIET_SAMPLE_S)
    return busy


def _ratios(document: dict[str, Any]) -> dict[str, float | None]:
    """Return how close the served figures come to the in-process limit."""
    cores = document["machine"]["cores"]
    cancer = document["limit"].get("breast-cancer/onnx", {})
    w1 = report.lookup(document["workloads"], "W1.jobs_per_s")
    w3 = report.lookup(document["workloads"], "W3.rows_per_s")
    single, batched = cancer.get("single_record_calls_per_s"), cancer.get("batched_rows_per_s")
    naive = report.lookup(document["workloads"], "N.jobs_per_s")
    return {
        "W1_jobs_per_s_over_N_jobs_per_s": round(w1 / naive, 2) if w1 and naive else None,
        "W1_jobs_per_s_over_L_single_record_calls_per_s_x_cores": (
            round(w1 / (single * cores), 4) if w1 and single else None
        ),
        # BENCHMARKS.md's ratio: W3 end to end against one core of L.
        "W3_rows_per_s_over_L_batched_rows_per_s": round(w3 / batched, 3) if w3 and batched else None,
        "W3_rows_per_s_over_L_batched_rows_per_s_x_cores": (
            round(w3 / (batched * cores), 4) if w3 and batched else None
        ),
    }


def _stop_on_sigterm(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and return 0, or 1 when a job was lost or errors went over budget."""
    args = _arguments(argv)
    sizes = QUICK if args.quick else FULL
    shape = Shape(workers=args.workers, concurrency=args.concurrency, api_processes=args.api_processes)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    busy = _wait_quiet(args.wait_quiet)
    document: dict[str, Any] = {
        "benchmark": "python -m bench" + (" --quick" if args.quick else ""),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**_machine(), "busy_fraction_before_start": busy},
        "config": {
            "shape": vars(shape),
            "sizes": sizes.as_dict(),
            "workloads": sorted(args.only),
            # py-spy takes CPU from the stack: a profiled run's speed figures are not comparable.
            "profiled": bool(args.profile),
        },
    }
    ok = False
    try:
        registry = _registry(args.registry, run_dir)
        if "P" in args.only and not registry.is_relative_to(run_dir):
            # P publishes a version: into a copy, so the registry it was given stays as it was.
            registry = Path(shutil.copytree(registry, run_dir / "registry"))
        document["config"]["registry"] = str(registry)
        document["limit"] = {}
        if "L" in args.only:
            rows: dict[str, list[Any]] = {
                "breast-cancer": data.breast_cancer_rows(),
                "iris": data.iris_rows(),
            }
            rows["scam-email"] = data.email_texts()
            print("L: predicting in this process…", file=sys.stderr)
            document["limit"] = limit.measure(registry, rows, LIMIT_BATCH, sizes.limit_seconds)
        print(f"starting the stack ({shape}) in {run_dir}…", file=sys.stderr)
        service = start_service(run_dir / "stack", registry, shape)
        try:
            print("running the workloads…", file=sys.stderr)
            profiler = Profiler(args.py_spy, args.profile) if args.profile else None
            document.update(asyncio.run(run_workloads(service, sizes, args.only, profiler)))
        finally:
            service.stop()
        if "N" in args.only:
            # After the service stopped, so the baseline has the machine to itself as W1 had.
            print("N: W1's load against the tutorial-style app…", file=sys.stderr)
            document["workloads"]["N"] = measure_naive(
                registry, runtime="sklearn", concurrency=shape.concurrency * shape.workers,
                api_processes=2 * (os.cpu_count() or 1) + 1, clients=sizes.w1_clients, jobs=sizes.w1_jobs,
                seconds=sizes.n_seconds,
            )  # fmt: skip
        if "F" in args.only:
            # On a stack of its own (a Sentinel-managed Redis), whose master it kills.
            print("F: half of W1's load while the Redis master is killed…", file=sys.stderr)
            document["workloads"]["F"] = measure_failover(
                registry, run_dir / "failover", shape, sizes.f_seconds, sizes.f_kill_after_s
            )
        document["ratios"] = _ratios(document)
        document["noise"] = report.noise(document)
        for name in ("W1", "W4"):
            if name in document["workloads"]:
                document["workloads"][name]["cpu_ceiling"] = report.cpu_ceiling(
                    document["workloads"][name], document["machine"]["cores"], shape.api_processes
                )
        document["targets"] = report.targets(document)
        document["failures"] = report.failures(document)
        ok = not document["failures"]
        document["ok"] = ok
    finally:
        if ok and not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"logs and Redis data kept in {run_dir}", file=sys.stderr)
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(report.table(document), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

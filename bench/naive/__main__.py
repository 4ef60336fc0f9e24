"""``python -m bench.naive``: W1 against the tutorial-style app alone (``python -m bench`` runs it as N)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from bench.naive.run import measure
from bench.service import ROOT


def main(argv: list[str] | None = None) -> int:
    """Run W1 against the naive app and print its figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__)
    parser.add_argument("--registry", type=Path, default=ROOT / "models" / "registry")
    parser.add_argument("--runtime", default="sklearn", choices=["sklearn", "onnx"])
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--api-processes", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=900)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    figures = measure(
        args.registry, runtime=args.runtime, concurrency=args.concurrency, api_processes=args.api_processes,
        clients=args.clients, jobs=args.jobs, seconds=args.seconds,
    )  # fmt: skip
    text = orjson.dumps({"naive_W1": figures}, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    lat = figures["latency_ms"]
    print(
        f"naive W1 ({args.runtime}): {figures['jobs_per_s']} jobs/s  p50 {lat['p50']} ms  "
        f"p99 {lat['p99']} ms  errors {figures['errors']}  lost {figures['lost']}",
        file=sys.stderr,
    )
    return 1 if figures["lost"] or figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

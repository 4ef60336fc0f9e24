"""``make run``: start Redis if none answers, the workers, the API and Flower; print how to use them."""

from __future__ import annotations

import io
import os
import secrets
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from shared.settings import hash_api_key
from tools.stack import REDIS_MAXMEMORY, Stack, free_port, http_status, redis_answers, wait_until

RUN_DIR = Path(".run")
PID_FILE = RUN_DIR / "stack.pid"


def _port(variable: str, default: int) -> int:
    return int(os.environ.get(variable, default))


def main() -> int:
    """Run the whole service in the foreground until Ctrl-C, scaling workers on SIGUSR1 and SIGUSR2."""
    # To a file or a pipe, Python buffers whole blocks: the banner (the key) would wait for the exit.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    stack = Stack(RUN_DIR)
    # One key of each scope: a user key submits and reads its jobs; an admin key also ships models.
    key = os.environ.get("INFER_API_KEY") or secrets.token_urlsafe(24)
    admin_key = os.environ.get("INFER_ADMIN_KEY") or secrets.token_urlsafe(24)
    stack.env["INFER_API_KEY_HASHES"] = hash_api_key(key)
    stack.env["INFER_ADMIN_KEY_HASHES"] = hash_api_key(admin_key)
    stack.env.setdefault("INFER_REGISTRY_PATH", str(Path("models/registry").resolve()))
    workers = int(os.environ.get("WORKERS", "1"))
    concurrency = int(os.environ.get("CONCURRENCY", str(os.cpu_count() or 1)))
    flower_password = os.environ.get("FLOWER_PASSWORD") or secrets.token_urlsafe(12)
    try:
        url = stack.env.get("INFER_REDIS_URL", "redis://localhost:6379/0")
        if stack.env.get("INFER_REDIS_SENTINELS"):  # every process follows the master they name
            print(f"following the Redis sentinels at {stack.env['INFER_REDIS_SENTINELS']}")
        elif redis_answers(url):
            print(f"using the Redis at {url}")
            stack.env["INFER_REDIS_URL"] = url
        else:
            maxmemory = os.environ.get("REDIS_MAXMEMORY", REDIS_MAXMEMORY)
            url = stack.start_redis(free_port(), password=secrets.token_urlsafe(16), maxmemory=maxmemory)
            print(
                f"started a private redis-server with a password and maxmemory {maxmemory} "
                f"(data in {RUN_DIR}/redis)"
            )
        for index in range(1, workers + 1):
            stack.start_worker(f"worker{index}", concurrency)
        # Two processes, as compose and Kubernetes run it; /metrics sums their counters.
        base = stack.start_api(_port("API_PORT", 8000), processes=int(os.environ.get("API_PROCESSES", "2")))
        flower = stack.start_flower(_port("FLOWER_PORT", 5555), "admin", flower_password)
        wait_until(lambda: http_status(base + "/readyz") == 200, 90, "a consuming worker")
    except (RuntimeError, TimeoutError) as exc:
        print(f"could not start: {exc}; logs are in {RUN_DIR}/", file=sys.stderr)
        stack.stop()
        return 1

    def scale(signum: int, _: FrameType | None) -> None:
        names = stack.workers()
        if signum == signal.SIGUSR1:
            stack.start_worker(f"worker{len(names) + 1}", concurrency)
            print(f"added worker{len(names) + 1}: {len(names) + 1} workers")
        elif len(names) > 1:
            stack.stop_worker(names[-1])
            print(f"stopped {names[-1]} (warm shutdown): {len(names) - 1} workers")

    def interrupt(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt

    # A shell that starts this in the background ignores SIGINT for it: take it back, and SIGTERM too.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGUSR1, scale)
    signal.signal(signal.SIGUSR2, scale)
    PID_FILE.write_text(str(os.getpid()))
    without_curl = (
        f"KEY={shlex.quote(key)} API={base} .venv/bin/python -m tools.call POST /v1/models/iris/jobs "
        """'{"inputs": [[5.1, 3.5, 1.4, 0.2]]}' -H 'Prefer: wait=5'"""
    )
    print(f"""
  API        {base}          (docs: {base}/docs)
  Flower     {flower}          (user admin, password {flower_password})
  Workers    {workers} x {concurrency} processes   (make scale-up / make scale-down)
  API key    {key}   (user: submits and reads its jobs)
  Admin key  {admin_key}   (also publishes, routes and retires model versions)

  Try it:
    curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
         -H 'Prefer: wait=5' -d '{{"inputs": [[5.1, 3.5, 1.4, 0.2]]}}' \\
         {base}/v1/models/iris/jobs
  or without curl (one line):
    {without_curl}

  Ctrl-C stops everything this command started.""")
    try:
        while all(p.poll() is None for n, p in stack.procs.items() if n not in stack.concurrency):
            for name in stack.restart_exited_workers():  # as compose's restart policy would
                print(f"{name} exited; started it again", file=sys.stderr)
            time.sleep(0.5)
        print("a process exited; stopping", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping…")
    finally:
        PID_FILE.unlink(missing_ok=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

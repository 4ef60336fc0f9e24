"""Start and stop the service's processes on this machine: redis-server, workers, the API and Flower."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import redis

from shared.settings import Settings

BIN = Path(sys.executable).parent
# What `make run`'s private redis-server may hold (REDIS_MAXMEMORY overrides it there).
REDIS_MAXMEMORY = "1gb"


def write_private(path: Path, text: str) -> None:
    """Write a file that only its owner can read or write, whatever its mode was before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _redis_quoted(value: str) -> str:
    """Return the value as a double-quoted string of redis.conf's syntax."""
    escaped = "".join(
        f"\\{char}" if char in '"\\' else char if char.isprintable() else _hex_bytes(char) for char in value
    )
    return f'"{escaped}"'


def _hex_bytes(char: str) -> str:
    return "".join(f"\\x{byte:02x}" for byte in char.encode())


def free_port() -> int:
    """Return a TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str) -> bool:
    """Tell whether a Redis server answers a ping at the URL."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll check() until it is true, or raise after the timeout."""
    deadline = time.monotonic() + timeout
    pause = 0.01  # soon at first, for what is nearly there; then every 0.1 s, not to load the machine
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(pause)
        pause = min(pause * 1.5, 0.1)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def http_status(url: str) -> int:
    """Return the HTTP status of a GET, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URLs we built)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@dataclass
class Stack:
    """The processes of one local deployment, all started with the same INFER_ environment."""

    run_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    concurrency: dict[str, int] = field(default_factory=dict)
    # Processes whose log this stack has opened: a second start of one (a restart) appends to it.
    _logged: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _open_log(self, name: str) -> BinaryIO:
        """Open NAME.log, fresh at this stack's first start of it; the last run's is kept as NAME.log.1."""
        path = self.run_dir / f"{name}.log"
        if name in self._logged:
            return path.open("ab")
        self._logged.add(name)
        if path.exists():
            path.replace(path.with_name(f"{name}.log.1"))
        return path.open("wb")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self._open_log(name) as log:  # the process holds its own copy of the file
            self.procs[name] = subprocess.Popen(
                argv,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the launcher, which stops each in order
            )

    def start_redis(
        self,
        port: int,
        password: str | None = None,
        tls: Path | None = None,
        maxmemory: str = REDIS_MAXMEMORY,
    ) -> str:
        """Start a private redis-server with an append-only file and bounded memory; return its URL.

        Its settings, the password among them, go in a file only this user can read, never on its
        command line. With tls, a folder holding ca.crt, server.crt and server.key, it speaks only TLS.
        """
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed: run 'make redis' or install it")
        data = self.run_dir / "redis"
        data.mkdir(exist_ok=True)
        # noeviction: past maxmemory Redis refuses writes (the API answers 503) rather than drop jobs.
        config = {"port": str(port), "bind": "127.0.0.1", "dir": str(data), "appendonly": "yes", "save": "",
                  "maxmemory": maxmemory, "maxmemory-policy": "noeviction"}  # fmt: skip
        if password:
            config["requirepass"] = password
        query = ""
        if tls:
            config.update({"port": "0", "tls-port": str(port), "tls-auth-clients": "no",
                           "tls-cert-file": str(tls / "server.crt"), "tls-key-file": str(tls / "server.key"),
                           "tls-ca-cert-file": str(tls / "ca.crt")})  # fmt: skip
            query = f"?ssl_cert_reqs=required&ssl_ca_certs={tls / 'ca.crt'}"
        path = self.run_dir / "redis.conf"
        write_private(path, "".join(f"{name} {_redis_quoted(value)}\n" for name, value in config.items()))
        self._spawn("redis", [server, str(path)])
        auth = f":{password}@" if password else ""
        url = f"{'rediss' if tls else 'redis'}://{auth}127.0.0.1:{port}/0{query}"
        wait_until(lambda: redis_answers(url), 15, "redis-server")
        self.env["INFER_REDIS_URL"] = url
        return url

    def start_worker(self, name: str, concurrency: int) -> None:
        """Start one Celery worker with its own pool of processes."""
        argv = [str(BIN / "celery"), "-A", "worker.main", "worker", "--loglevel", "INFO",
                "--concurrency", str(concurrency), "--hostname", f"{name}@%h", "--without-mingle",
                "--without-gossip"]  # fmt: skip
        self.concurrency[name] = concurrency
        self._spawn(name, argv)

    def restart_exited_workers(self) -> list[str]:
        """Start again every worker whose process has exited, as a container's restart policy would."""
        running = dict(self.procs)  # a snapshot: the stack may be changed from another thread
        exited = [n for n, p in running.items() if n in self.concurrency and p.poll() is not None]
        for name in exited:
            self.start_worker(name, self.concurrency[name])
        return exited

    def supervise(self, interval: float = 0.5) -> threading.Thread:
        """Keep the workers running from a background thread until the stack stops."""

        def loop() -> None:
            while self.procs:
                self.restart_exited_workers()
                time.sleep(interval)

        thread = threading.Thread(target=loop, name="supervisor", daemon=True)
        thread.start()
        return thread

    def stop_worker(self, name: str, timeout: float = 30) -> None:
        """Stop one worker warmly: it finishes its current tasks, then exits."""
        proc = self.procs.pop(name)
        self.concurrency.pop(name, None)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def workers(self) -> list[str]:
        """Return the names of the running workers, in start order."""
        return [name for name in list(self.procs) if name.startswith("worker")]

    def start_api(self, port: int, processes: int = 1, extra: list[str] | None = None) -> str:
        """Start the API under gunicorn with its shipped settings (api/server.py); return its base URL."""
        argv = [str(BIN / "gunicorn"), "--config", "python:api.server", "--workers", str(processes),
                "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10", *(extra or []),
                "api.app:create_app()"]  # fmt: skip
        # Its processes keep their counters here, so /metrics sums them whichever one answers.
        self._spawn("api", argv, {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.run_dir / "api-metrics")})
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(base + "/healthz") == 200, 30, "the API")
        self.urls["api"] = base
        return base

    def start_flower(self, port: int, user: str, password: str) -> str:
        """Start Flower on the broker with basic auth on every route and return its URL.

        The broker's URL and the credentials reach it by environment, never on its command line.
        """
        env = {**self.env, "CELERY_BROKER_URL": self.env.get("INFER_REDIS_URL", ""),
               "FLOWER_BASIC_AUTH": f"{user}:{password}"}  # fmt: skip
        # --db names a shelve, to which dbm adds its own suffix: .run/flower.db with Berkeley DB's
        # (Debian's Python), as the image's /data/flower.db.
        argv = [sys.executable, "-m", "tools.flower_server", f"--port={port}", "--address=127.0.0.1",
                "--persistent=True", f"--db={self.run_dir / 'flower'}"]  # fmt: skip
        self._spawn("flower", argv, env)
        return f"http://127.0.0.1:{port}"

    def settings(self) -> Settings:
        """Return the settings the stack's processes read from their INFER_ environment."""
        prefix = "INFER_"
        found = {k.removeprefix(prefix).lower(): v for k, v in self.env.items() if k.startswith(prefix)}
        return Settings.model_validate(found)

    def stop(self) -> None:
        """Stop every process, Redis and its sentinels last so workers can record what they finish."""
        self.concurrency.clear()  # a supervisor must not start again what is being stopped
        last = [n for n in self.procs if n == "redis" or n.startswith(("redis-", "sentinel-"))]
        for group in ([n for n in self.procs if n not in last], last):
            for name in group:
                if self.procs[name].poll() is None:
                    self.procs[name].send_signal(signal.SIGTERM)
            for name in group:
                try:
                    self.procs[name].wait(30)
                except subprocess.TimeoutExpired:
                    self.procs[name].kill()
                    self.procs[name].wait()
        self.procs.clear()

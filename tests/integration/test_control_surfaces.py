"""Control surfaces under abuse: no secret in argv, Flower closed, readiness truthful, Redis bounded."""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.celery_app import make_celery
from shared.settings import Settings
from tools.stack import Stack, free_port, http_status, wait_until

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "surfaces"
WORKER = f"worker-surfaces@{socket.gethostname()}"  # the name Celery gives it (%h)
REDIS_PASSWORD = "redis-" + secrets.token_urlsafe(16)
FLOWER_USER = "ops"
FLOWER_PASSWORD = "flower-" + secrets.token_urlsafe(16)
# Every kind of Flower route: pages, the JSON API, a control command, metrics, health, static, login.
FLOWER_PATHS = ("/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks", "/api/queues/length",
                "/metrics", "/healthcheck", "/static/css/flower.css", "/favicon.ico", "/login",
                "/no-such-page")  # fmt: skip
SECRET_VARIABLES = (
    "REDIS_PASSWORD",
    "FLOWER_PASSWORD",
    "FLOWER_USER",
    "INFER_API_KEY_HASHES",
    "INFER_ADMIN_KEY_HASHES",
    "INFER_S3_SECRET_KEY",
    "REDIS_SENTINEL_PASSWORD",
    "INFER_REDIS_PASSWORD",
    "INFER_REDIS_SENTINEL_PASSWORD",
)


@dataclass
class Surfaces:
    """A stack of its own: a password'd Redis, one worker on its own queue, the API and Flower."""

    stack: Stack
    api: str
    flower: str
    redis_url: str


def _status(url: str, auth: tuple[str, str] | None = None, method: str = "GET") -> int:
    try:
        return requests.request(method, url, auth=auth, timeout=30).status_code
    except requests.ConnectionError:
        return 0


@pytest.fixture(scope="module")
def surfaces(stack_factory: Callable[..., Stack]) -> Iterator[Surfaces]:
    """Start the module's stack and wait until the API is ready and Flower answers."""
    stack = stack_factory(INFER_QUEUE_NAME=QUEUE)
    url = stack.start_redis(free_port(), password=REDIS_PASSWORD, maxmemory="64mb")
    stack.start_worker(WORKER.split("@")[0], 1)
    api = stack.start_api(free_port())
    flower = stack.start_flower(free_port(), FLOWER_USER, FLOWER_PASSWORD)
    wait_until(lambda: http_status(api + "/readyz") == 200, 60, "a worker consuming the queue")
    wait_until(lambda: _status(flower + "/healthcheck", (FLOWER_USER, FLOWER_PASSWORD)) == 200, 60, "Flower")
    yield Surfaces(stack, api, flower, url)
    stack.stop()


def _assert_refused_without_password(port: int) -> None:
    no_retry = Retry(NoBackoff(), 0)  # redis-py retries an authentication error by default
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_timeout=5, retry=no_retry).set("probe", "1")


def _descendants(pid: int) -> list[int]:
    """Return the process and all its descendants, skipping any that exit meanwhile."""
    found = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
        for child in children:
            found += _descendants(child)
    return found


def test_no_secret_is_on_any_command_line(surfaces: Surfaces) -> None:
    """Neither Redis's nor Flower's password is in any process's argv; Redis's config file is 0600."""
    stack = surfaces.stack
    for name, proc in stack.procs.items():
        argv = " ".join(map(str, proc.args))  # type: ignore[arg-type]
        assert REDIS_PASSWORD not in argv, name
        assert FLOWER_PASSWORD not in argv, name
    pids = [pid for proc in stack.procs.values() for pid in _descendants(proc.pid)]
    assert len(pids) >= 6, pids  # redis, the worker and its pool, gunicorn and its worker, Flower
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        assert REDIS_PASSWORD.encode() not in cmdline, cmdline
        assert FLOWER_PASSWORD.encode() not in cmdline, cmdline
    config = stack.run_dir / "redis.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    port = int(surfaces.redis_url.rsplit(":", 1)[1].split("/")[0])
    _assert_refused_without_password(port)


def test_every_flower_route_needs_the_credentials(surfaces: Surfaces) -> None:
    """Without (or with wrong) credentials every Flower path is 401; with them pages, API, metrics are 200."""
    base = surfaces.flower
    for path in FLOWER_PATHS:
        refused = requests.get(base + path, timeout=30)
        assert refused.status_code == 401, path
        assert refused.headers.get("WWW-Authenticate", "").startswith("Basic"), path
        assert _status(base + path, (FLOWER_USER, "wrong")) == 401, path
    # A control command without credentials is refused before it reaches any worker.
    assert _status(f"{base}/api/worker/queue/cancel-consumer/{WORKER}?queue={QUEUE}", method="POST") == 401
    for path in ("/", "/workers", "/api/workers", "/metrics", "/healthcheck", "/static/css/flower.css"):
        assert _status(base + path, (FLOWER_USER, FLOWER_PASSWORD)) == 200, path
    assert http_status(surfaces.api + "/readyz") == 200


def test_the_containers_flower_health_check_sends_the_credentials(surfaces: Surfaces) -> None:
    """`python -m tools.flower_server --healthcheck PORT` passes with FLOWER_BASIC_AUTH, fails without."""
    port = surfaces.flower.rsplit(":", 1)[1]
    argv = [sys.executable, "-m", "tools.flower_server", "--healthcheck", port]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    good = {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    assert subprocess.run(argv, env=good, cwd=ROOT, timeout=30, check=False).returncode == 0
    bad = {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:wrong"}
    assert subprocess.run(argv, env=bad, cwd=ROOT, timeout=30, check=False).returncode == 1
    refused = subprocess.run([sys.executable, "-m", "tools.flower_server"], env=env, cwd=ROOT, timeout=30,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert refused.returncode == 2
    assert "FLOWER_BASIC_AUTH" in refused.stderr


def _readyz(api: str) -> requests.Response:
    return requests.get(api + "/readyz", timeout=30)


def test_readyz_is_503_while_no_worker_consumes_the_queue(surfaces: Surfaces) -> None:
    """A worker told to stop consuming still answers pings, yet /readyz turns 503 naming the queue."""
    settings = Settings(redis_url=surfaces.redis_url, queue_name=QUEUE)
    worker = [WORKER]
    with make_celery(settings) as app:
        assert _readyz(surfaces.api).status_code == 200
        assert app.control.cancel_consumer(QUEUE, destination=worker, reply=True, timeout=5)
        try:
            wait_until(lambda: _readyz(surfaces.api).status_code == 503, 30, "/readyz 503")
            answer = _readyz(surfaces.api).json()
            assert answer["error"]["code"] == "unavailable"
            assert f"No worker consumes queue '{QUEUE}'" in answer["error"]["message"]
            assert app.control.ping(destination=worker, timeout=5), "the worker no longer answers a ping"
        finally:
            app.control.add_consumer(QUEUE, destination=worker, reply=True, timeout=5)
        wait_until(lambda: _readyz(surfaces.api).status_code == 200, 30, "/readyz 200 again")
    assert _readyz(surfaces.api).json() == {"status": "ready", "workers": 1}


def test_redis_started_by_the_stack_has_bounded_memory_and_never_evicts(
    surfaces: Surfaces, redis_url: str
) -> None:
    """`make run`'s redis-server (Stack.start_redis) holds 1gb at most by default, or what it is told."""
    for url, expected in ((redis_url, 1024**3), (surfaces.redis_url, 64 * 1024**2)):
        config = redis.Redis.from_url(url, decode_responses=True).config_get("maxmemory*")
        assert int(str(config["maxmemory"])) == expected, url
        assert config["maxmemory-policy"] == "noeviction", url


def test_readyz_is_503_not_500_when_redis_refuses_writes(surfaces: Surfaces, tmp_path: Path) -> None:
    """With Redis out of memory, a fresh API process's /readyz is 503 with the error body, never 500."""
    client = redis.Redis.from_url(surfaces.redis_url, decode_responses=True)
    limit = str(client.config_get("maxmemory")["maxmemory"])
    fresh = Stack(tmp_path, dict(surfaces.stack.env))
    client.config_set("maxmemory", 1)  # below what it holds: every write is refused with OOM
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("probe", "1")
        api = fresh.start_api(free_port())
        answer = _readyz(api)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "unavailable"
        assert "maxmemory" in answer.json()["error"]["message"]
    finally:
        client.config_set("maxmemory", limit)
        fresh.stop()
    wait_until(lambda: _readyz(surfaces.api).status_code == 200, 30, "/readyz 200 again")


# The shipped configurations, read as files: docker-compose.yml and deploy/k8s.


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _k8s_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            pod = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                yield f"{path.name}:{container['name']}", container


def _argv_parts(container: dict[str, Any]) -> list[str]:
    """Return what Kubernetes expands $(VAR) in: command, args, and the probes' commands."""
    parts = list(container.get("command", [])) + list(container.get("args", []))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        parts += container.get(probe, {}).get("exec", {}).get("command", [])
    return [str(part) for part in parts]


def test_shipped_configurations_put_no_secret_on_a_command_line() -> None:
    """No compose command interpolates a secret; no Kubernetes command, args or probe expands one."""
    for name, service in _compose()["services"].items():
        texts = [service.get("command", []), service.get("entrypoint", []), service.get("healthcheck", {})]
        text = yaml.safe_dump(texts).replace("$$", "")  # $$ is a literal $, for the container's shell
        for variable in SECRET_VARIABLES:
            assert not re.search(rf"\$\{{?{variable}\b", text), f"compose {name} puts {variable} in argv"
    for name, container in _k8s_containers():
        env = container.get("env", [])
        secret = {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
        secret |= {e["name"] for e in env if any(f"$({s})" in e.get("value", "") for s in secret)}
        for part in _argv_parts(container):
            for variable in secret:
                assert f"$({variable})" not in part, f"{name} expands {variable} into its command line"


def _redis_scripts() -> tuple[str, str, dict[str, Any]]:
    """Return the compose and Kubernetes redis scripts as their shells see them, and the k8s container."""
    service = _compose()["services"]["redis"]
    assert service["command"][:2] == ["sh", "-c"]
    compose_script = str(service["command"][2]).replace("$$", "$")
    container = dict(_k8s_containers())["redis.yaml:redis"]
    assert container["command"] == ["sh", "-c"]
    k8s_script = str(container["args"][0])
    assert "$(" not in k8s_script  # nothing for Kubernetes to expand
    assert "$$" not in k8s_script
    return compose_script, k8s_script, container


def _bytes(size: str) -> int:
    """Return a size of redis.conf (384mb) or Kubernetes (512Mi) in bytes."""
    number, unit = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", size).groups()  # type: ignore[union-attr]
    units = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "ki": 1024, "mi": 1024**2,
             "gi": 1024**3, "k": 1000, "m": 1000**2, "g": 1000**3}  # fmt: skip
    return int(number) * units[unit.lower()]


def test_kubernetes_redis_maxmemory_is_below_its_memory_limit() -> None:
    """The redis container's maxmemory leaves room under its memory limit; compose bounds it too."""
    _, _, container = _redis_scripts()
    maxmemory = next(e["value"] for e in container["env"] if e["name"] == "REDIS_MAXMEMORY")
    limit = container["resources"]["limits"]["memory"]
    assert _bytes(maxmemory) < _bytes(limit), (maxmemory, limit)
    compose_env = _compose()["services"]["redis"]["environment"]
    assert compose_env["REDIS_MAXMEMORY"] == "${REDIS_MAXMEMORY:-1gb}"


@pytest.mark.parametrize("image", ["with the image's entrypoint", "without an entrypoint"])
def test_the_shipped_redis_command_starts_bounded_with_the_password(tmp_path: Path, image: str) -> None:
    """Compose's and Kubernetes's redis script (one script) gives redis-server its settings on stdin."""
    compose_script, k8s_script, _ = _redis_scripts()
    assert compose_script == k8s_script
    port = free_port()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Stand-ins for what the container provides: its entrypoint (official image) or a bare
    # redis-server (the podman stand-in); each adds this test's port, loopback and data folder.
    loopback = f'--port {port} --bind 127.0.0.1 --dir "{tmp_path}"'
    if image == "with the image's entrypoint":
        stub = bin_dir / "docker-entrypoint.sh"
        stub.write_text(f'#!/bin/sh\n[ "$1" = redis-server ] && shift\nexec redis-server {loopback} "$@"\n')
    else:
        stub = bin_dir / "redis-server"
        real = subprocess.run(["sh", "-c", "command -v redis-server"], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        stub.write_text(f'#!/bin/sh\nexec {real} {loopback} "$@"\n')
    stub.chmod(0o755)
    password = "pw-" + secrets.token_urlsafe(16)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "REDIS_PASSWORD": password, "REDIS_MAXMEMORY": "96mb"}
    log = (tmp_path / "redis.log").open("wb")
    proc = subprocess.Popen(["sh", "-c", k8s_script], env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        client = redis.Redis(port=port, password=password, decode_responses=True, socket_timeout=5)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, 15, "the shipped redis command")
        config = client.config_get("*")
        assert (config["maxmemory"], config["maxmemory-policy"]) == (str(96 * 1024**2), "noeviction")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "everysec")
        _assert_refused_without_password(port)
        # The shell and the entrypoint exec'd: redis-server itself is the process (PID 1 in a container).
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "redis-server"
        assert password.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()

"""The container stack end to end: `make test-containers` (skipped unless CONTAINERS_TEST=1).

It builds the images of docker-compose.yml (Dockerfile.api for the API and Flower, Dockerfile.worker),
brings the stack up under a project name of its own with secrets it makes up, submits jobs through
the API container, scales to three workers and shows that each one served jobs, checks that Flower
refuses a request without credentials and lists the three workers with them, stops two workers
while jobs are in flight and shows that every job still succeeds, and finally removes every
container, volume and network it made.

With a Docker engine it drives `docker compose`. Without one (as on these machines) it drives
podman and podman-compose, after ../shared/containers/standin-images.sh has installed podman and
built local stand-ins for the two public base images. All its traffic goes to ports it published
on 127.0.0.1, and every wait is bounded.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
STANDIN_IMAGES = ROOT.parent / "shared" / "containers" / "standin-images.sh"
PROJECT = "inferct"
PODMAN_COMPOSE = "1.6.0"
IMAGES = {
    "api": "inference-api:latest",
    "worker": "inference-worker:latest",
    "flower": "inference-flower:latest",
}
# The variables docker-compose.yml reads: the test's env file alone decides them, not the caller's shell.
COMPOSE_VARIABLES = (
    "REDIS_PASSWORD", "REDIS_MAXMEMORY", "INFER_API_KEY_HASHES", "INFER_ADMIN_KEY_HASHES", "FLOWER_USER",
    "FLOWER_PASSWORD", "API_BIND", "API_PORT", "FLOWER_BIND", "FLOWER_PORT", "API_PROCESSES",
    "WORKER_CONCURRENCY", "MODEL_REGISTRY", "INFER_REGISTRY_URL", "INFER_S3_ENDPOINT_URL",
    "INFER_S3_ACCESS_KEY", "INFER_S3_SECRET_KEY", "INFER_S3_REGION", "INFER_WEBHOOK_SECRET",
    "COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES",
)  # fmt: skip
IRIS_HEADER = "sepal_length,sepal_width,petal_length,petal_width\n"
IRIS_ROWS = "5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n"
# Each bulk job is split into chunks of 5,000 records, one message each: eight jobs of 100,000
# records queue 160 messages, several seconds of work for three single-process workers.
IN_FLIGHT_JOBS = 8
IN_FLIGHT_RECORDS = 200_000
TERMINAL = {"succeeded", "failed", "canceled", "expired"}

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("CONTAINERS_TEST") != "1",
        reason="builds images and runs the container stack: run `make test-containers`",
    ),
    # Builds dominate: about 4 minutes from a cold cache on 2 cores.
    pytest.mark.timeout(1500),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    pytest.fail(f"{what} within {timeout:.0f} s")


@dataclass
class Engine:
    """The container tool (docker or podman), its compose command and the environment for both."""

    tool: str
    compose: list[str]
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the container tool and return what it did; fail the test if asked and it failed."""
        return _run([self.tool, *args], self.env, timeout, check)


def _run(
    argv: list[str], env: dict[str, str], timeout: float, check: bool
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(argv[:6])} … exited {done.returncode}:\n{_tail(done.stdout + done.stderr)}")
    return done


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _podman_compose(env: dict[str, str]) -> list[str]:
    """Return the podman-compose command, installing the pinned version beside pytest if needed."""
    exe = Path(sys.executable).with_name("podman-compose")
    if exe.exists():
        found = _run([str(exe), "--version"], env, 60, check=False).stdout
        if f"podman-compose version {PODMAN_COMPOSE}" in found:
            return [str(exe)]
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", f"podman-compose=={PODMAN_COMPOSE}"],
        env,
        600,
        True,
    )
    return [str(exe)]


@pytest.fixture(scope="module")
def engine(measured: list[str]) -> Engine:
    """Return docker with its engine, or else podman with the stand-in base images in place."""
    env = dict(os.environ)
    if _docker_engine_answers():
        return Engine("docker", ["docker", "compose"], env)
    if not STANDIN_IMAGES.is_file():
        pytest.fail(f"no Docker engine and no {STANDIN_IMAGES} to set up podman with")
    started = time.monotonic()
    _run(["bash", str(STANDIN_IMAGES)], env, 900, check=True)
    env["CONTAINERS_CONF"] = _run(["bash", str(STANDIN_IMAGES), "--conf"], env, 60, True).stdout.strip()
    # podman writes OCI images by default, which drop HEALTHCHECK; Docker's format keeps it.
    env["BUILDAH_FORMAT"] = "docker"
    compose = _podman_compose(env)
    measured.append(f"podman and the stand-in base images ready in {time.monotonic() - started:.0f} s")
    return Engine("podman", compose, env)


@dataclass
class Project:
    """One compose project of the test: its command line, secrets and published ports."""

    engine: Engine
    env_file: Path
    key: str
    admin_key: str
    flower_auth: tuple[str, str]
    api: str
    flower: str
    log_dir: Path
    session: requests.Session = field(default_factory=requests.Session)

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a compose command on the test's project."""
        argv = [*self.engine.compose, "--env-file", str(self.env_file), "-p", PROJECT]
        argv += ["-f", str(ROOT / "docker-compose.yml"), *args]
        env = {k: v for k, v in self.engine.env.items() if k not in COMPOSE_VARIABLES}
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        with (self.log_dir / "compose.log").open("a") as log:
            log.write(f"$ {' '.join(args)}\n{done.stdout}{done.stderr}\n")
        if check and done.returncode != 0:
            pytest.fail(
                f"compose {' '.join(args)} exited {done.returncode}:\n{_tail(done.stdout + done.stderr)}"
            )
        return done

    def containers(self, service: str | None = None, running_only: bool = False) -> list[str]:
        """Return the names of the project's containers (of one service), by replica number."""
        args = ["ps", "--filter", f"label=com.docker.compose.project={PROJECT}"]
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        if not running_only:
            args.append("-a")
        args += ["--format", '{{.Names}} {{index .Labels "com.docker.compose.container-number"}}']
        rows = [line.split() for line in self.engine.run(*args).stdout.splitlines() if line.strip()]
        return [row[0] for row in sorted(rows, key=lambda row: int(row[1]) if len(row) > 1 else 0)]

    def healthy(self, name: str) -> bool:
        """Tell whether a container's HEALTHCHECK passes now."""
        if self.engine.tool == "podman":
            # podman schedules health checks with systemd timers, absent here: run the check itself.
            return self.engine.run("healthcheck", "run", name, timeout=60, check=False).returncode == 0
        state = self.engine.run("inspect", "--format", "{{.State.Health.Status}}", name, check=False)
        return state.stdout.strip() == "healthy"

    def inspect(self, name: str, template: str) -> str:
        """Return one field of a container's inspection."""
        return self.engine.run("inspect", "--format", template, name).stdout.strip()

    def worker_name(self, container: str) -> str:
        """Return the Celery name a worker container runs under (worker@<its hostname>)."""
        return "worker@" + self.inspect(container, "{{.Config.Hostname}}")

    def queue_length(self) -> int:
        """Return how many messages wait in the `inference` list in Redis."""
        redis = self.containers("redis")[0]
        script = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli llen inference'
        return int(self.engine.run("exec", redis, "sh", "-c", script).stdout.strip())

    def request(self, method: str, path: str, key: str | None = "", **kwargs: Any) -> requests.Response:
        """Send a request to the API container through its published port."""
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key or self.key}"
        return self.session.request(method, self.api + path, headers=headers, timeout=90, **kwargs)

    def submit_csv(self, rows: int) -> str:
        """Submit an iris bulk job of the given number of records and return its id."""
        body = IRIS_HEADER + IRIS_ROWS * (rows // 2)
        sent = self.request("POST", "/v1/models/iris/jobs", data=body, headers={"Content-Type": "text/csv"})
        assert sent.status_code in (200, 202), sent.text[:300]
        return str(sent.json()["id"])

    def finished(self, job_id: str, patience: float = 120, key: str = "") -> dict[str, Any]:
        """Long-poll a job (of the user key unless another is named) until it ends and return it."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}?wait=20", key=key).json()
            if job["status"] in TERMINAL:
                return job
        pytest.fail(f"job {job_id} did not finish within {patience:.0f} s")

    def flower_get(self, path: str, auth: tuple[str, str] | None = None) -> requests.Response:
        """GET a Flower page through its published port."""
        return self.session.get(self.flower + path, auth=auth, timeout=30)

    def served(self) -> dict[str, int]:
        """Return how many predict tasks each worker has run, as Flower reports it."""
        workers = self.flower_get("/api/workers?refresh=1", self.flower_auth).json()
        return {name: int(info.get("stats", {}).get("total", {}).get("infer.predict", 0))
                for name, info in workers.items()}  # fmt: skip

    def ready_workers(self) -> int:
        """Return how many workers the API's /readyz counts (0 when it is not ready)."""
        answer = self.request("GET", "/readyz", key=None)
        return int(answer.json().get("workers", 0)) if answer.status_code == 200 else 0

    def teardown(self) -> None:
        """Keep every container's log, then remove the project's containers, volumes and network."""
        names = self.containers()
        for name in names:
            logs = self.engine.run("logs", name, timeout=60, check=False)
            (self.log_dir / f"{name}.log").write_text(logs.stdout + logs.stderr)
        if names:
            self.engine.run("rm", "-f", *names, timeout=180, check=False)
        self.compose("down", "-v", "-t", "5", timeout=180, check=False)
        label = f"label=com.docker.compose.project={PROJECT}"
        volumes = self.engine.run("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
        if volumes:
            self.engine.run("volume", "rm", "-f", *volumes, check=False)
        networks = self.engine.run("network", "ls", "-q", "--filter", label, check=False).stdout.split()
        if networks:
            self.engine.run("network", "rm", *networks, check=False)


@pytest.fixture(scope="module")
def project(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory, measured: list[str]
) -> Iterator[Project]:
    """Make the project's secrets and ports, and remove whatever it leaves behind at the end."""
    folder = tmp_path_factory.mktemp("containers")
    key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    flower_auth = ("ops", secrets.token_urlsafe(12))
    api_port, flower_port = _free_port(), _free_port()
    settings = {
        "REDIS_PASSWORD": secrets.token_urlsafe(24),
        "INFER_API_KEY_HASHES": hashlib.sha256(key.encode()).hexdigest(),
        "INFER_ADMIN_KEY_HASHES": hashlib.sha256(admin_key.encode()).hexdigest(),
        "FLOWER_USER": flower_auth[0],
        "FLOWER_PASSWORD": flower_auth[1],
        "API_BIND": "127.0.0.1",
        "API_PORT": str(api_port),
        "FLOWER_BIND": "127.0.0.1",
        "FLOWER_PORT": str(flower_port),
        "API_PROCESSES": "2",
        "WORKER_CONCURRENCY": "1",
    }
    env_file = folder / "test.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    found = Project(
        engine=engine,
        env_file=env_file,
        key=key,
        admin_key=admin_key,
        flower_auth=flower_auth,
        api=f"http://127.0.0.1:{api_port}",
        flower=f"http://127.0.0.1:{flower_port}",
        log_dir=folder,
    )
    found.teardown()  # a previous run that was killed may have left its containers
    try:
        yield found
    finally:
        found.teardown()
        measured.append(f"containers' logs kept in {folder}")


@pytest.fixture(scope="module")
def images(project: Project, measured: list[str]) -> dict[str, int]:
    """Build the three images with the compose file's build sections; return their sizes in bytes."""
    sizes = {}
    for service in ("worker", "api", "flower"):
        started = time.monotonic()
        project.compose("build", service, timeout=1200)
        size = int(project.engine.run("image", "inspect", "--format", "{{.Size}}", IMAGES[service]).stdout)
        sizes[service] = size
        measured.append(f"{service} image built in {time.monotonic() - started:.0f} s: {size / 1e6:.0f} MB")
    return sizes


@pytest.fixture(scope="module")
def stack(project: Project, images: dict[str, int], measured: list[str]) -> Project:
    """Bring the stack up and wait until every container is healthy and the API is ready."""
    started = time.monotonic()
    project.compose("up", "-d")
    for service in ("redis", "worker", "api", "flower"):
        names = project.containers(service, running_only=True)
        assert len(names) == 1, f"{service}: {names}"
        _wait_for(lambda name=names[0]: project.healthy(name), 180, f"{names[0]} was not healthy", 2)
    _wait_for(lambda: project.ready_workers() >= 1, 120, "the API was not ready")
    measured.append(f"stack up and healthy in {time.monotonic() - started:.0f} s")
    return project


@pytest.fixture(scope="module")
def three_workers(stack: Project, measured: list[str]) -> list[str]:
    """Scale the workers to three and return their container names once each consumes."""
    started = time.monotonic()
    extra = ["--no-recreate"] if stack.engine.tool == "docker" else []
    stack.compose("up", "-d", "--scale", "worker=3", *extra)
    names = stack.containers("worker", running_only=True)
    assert len(names) == 3, names
    for name in names:
        _wait_for(lambda name=name: stack.healthy(name), 180, f"{name} was not healthy", 2)
    _wait_for(lambda: stack.ready_workers() == 3, 60, "the API did not count 3 workers")
    measured.append(f"scaled to 3 workers in {time.monotonic() - started:.0f} s")
    return names


def _image_field(engine: Engine, image: str, name: str) -> Any:
    """Return one field of an image's configuration (podman's `{{json .Config}}` leaves some out)."""
    return json.loads(
        engine.run("image", "inspect", "--format", f"{{{{json .Config.{name}}}}}", image).stdout
    )


def test_images_are_lean_unprivileged_and_check_their_health(
    project: Project, images: dict[str, int]
) -> None:
    """Each image runs as a non-root user, exec-form, with a HEALTHCHECK; the API holds no scikit-learn."""
    commands = {"api": ["gunicorn"], "worker": ["celery"], "flower": ["python", "-m", "tools.flower_server"]}
    for service, image in IMAGES.items():
        assert _image_field(project.engine, image, "User") == "app", service
        check = _image_field(project.engine, image, "Healthcheck") or {}
        assert check.get("Test", [""])[0] in ("CMD", "CMD-SHELL"), f"{service} has no HEALTHCHECK"
        entrypoint = _image_field(project.engine, image, "Entrypoint") or []
        argv = entrypoint + (_image_field(project.engine, image, "Cmd") or [])
        assert argv[: len(commands[service])] == commands[service], f"{service} is not exec form: {argv}"
        uid = project.engine.run("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
        assert uid == "10001", service
    for module in ("sklearn", "onnxruntime"):
        tried = project.engine.run(
            "run", "--rm", "--entrypoint", "python", IMAGES["api"], "-c", f"import {module}", check=False
        )
        assert tried.returncode != 0, f"the API image can import {module}"
        assert f"No module named '{module}'" in tried.stderr
    assert images["api"] < images["worker"]


def test_the_api_container_serves_the_example_models(stack: Project) -> None:
    """Jobs for the three example models, baked into the worker image, succeed through the API."""
    assert stack.request("GET", "/healthz", key=None).status_code == 200
    refused = stack.request("POST", "/v1/models/iris/jobs", key=None, json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    assert refused.status_code == 401
    wrong = stack.request("POST", "/v1/models/iris/jobs", key="not-the-key", json={"inputs": [[1, 2, 3, 4]]})
    assert wrong.status_code == 401
    features = len(stack.request("GET", "/v1/models/breast-cancer").json()["input_schema"]["required"])
    examples = {
        "iris": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
        "breast-cancer": [[1.0] * features],
        "scam-email": [["URGENT: you have won a prize, send your bank details to claim it today"]],
    }
    for model, inputs in examples.items():
        answer = stack.request(
            "POST", f"/v1/models/{model}/jobs", json={"inputs": inputs}, headers={"Prefer": "wait=30"}
        )
        assert answer.status_code == 200, answer.text[:300]
        job = answer.json()
        assert job["status"] == "succeeded", job
        assert len(job["outputs"]) == len(inputs)
        labels = stack.request("GET", f"/v1/models/{model}").json()["labels"]
        assert all(output["label"] in labels for output in job["outputs"])
        assert stack.request("GET", f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    assert stack.request("POST", "/v1/models/iris/jobs", json={"inputs": examples["iris"]},
                         headers={"Prefer": "wait=30"}).json()["outputs"][0]["label"] == "setosa"  # fmt: skip


def test_three_workers_each_serve_jobs(stack: Project, three_workers: list[str], measured: list[str]) -> None:
    """After scaling to three, every worker container runs some of the jobs' chunks."""
    names = [stack.worker_name(container) for container in three_workers]
    before = stack.served()
    counts: dict[str, int] = {}
    for _ in range(10):
        jobs = [stack.submit_csv(30_000) for _ in range(2)]
        assert all(stack.finished(job)["status"] == "succeeded" for job in jobs)
        after = stack.served()
        counts = {name: after.get(name, 0) - before.get(name, 0) for name in names}
        if all(count > 0 for count in counts.values()):
            break
    assert all(count > 0 for count in counts.values()), counts
    measured.append(f"chunks served per worker after scaling to 3: {sorted(counts.values())}")


def test_a_version_published_through_the_api_container_is_routed_and_served_by_every_worker(
    stack: Project, three_workers: list[str], tmp_path: Path, measured: list[str]
) -> None:
    """Publish iris 1.1.0 through the API container, send it 10 %, then all traffic, then roll back."""
    from tests.shipping import feature_names, small_forest

    artifact, reference = small_forest("iris", tmp_path)
    metadata = {"version": "1.1.0", "task": "classification",
                "features": [{"name": name, "type": "number"} for name in feature_names("iris")]}  # fmt: skip
    admin = {"key": stack.admin_key}
    with artifact.open("rb") as model, reference.open("rb") as rows:
        parts = {"artifact": ("iris.skops", model), "reference": ("iris.csv", rows)}
        sent = stack.request("POST", "/v1/models/iris/versions", files=parts,
                             data={"metadata": json.dumps(metadata)}, **admin)  # fmt: skip
    assert sent.status_code == 202, sent.text[:300]
    started = time.monotonic()
    publish = stack.finished(sent.json()["id"], key=stack.admin_key)
    assert (publish["kind"], publish["status"]) == ("publish", "succeeded"), publish
    measured.append(f"iris 1.1.0 published through the API container in {time.monotonic() - started:.1f} s")
    user_refused = stack.request("PUT", "/v1/models/iris/routing", json={"routes": {"1.0.0": 100}})
    assert user_refused.status_code == 403

    def route(routes: dict[str, int]) -> None:
        answer = stack.request("PUT", "/v1/models/iris/routing", json={"routes": routes}, **admin)
        assert answer.status_code == 200, answer.text[:300]
        assert stack.request("GET", "/v1/models/iris/routing").json()["routes"] == routes

    route({"1.0.0": 90, "1.1.0": 10})

    def served_by() -> str:
        answer = stack.request("POST", "/v1/models/iris/jobs", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]},
                               headers={"Prefer": "wait=30"}).json()  # fmt: skip
        assert answer["status"] == "succeeded", answer
        return str(answer["version"])

    versions = [served_by() for _ in range(100)]
    assert set(versions) == {"1.0.0", "1.1.0"}, versions  # 1.1.0 missing from 100 draws: p = 0.9^100
    route({"1.1.0": 100})
    names = [stack.worker_name(container) for container in three_workers]
    before = stack.served()
    counts: dict[str, int] = {}
    for _ in range(10):
        jobs = [stack.finished(stack.submit_csv(30_000)) for _ in range(2)]
        assert all((job["status"], job["version"]) == ("succeeded", "1.1.0") for job in jobs), jobs
        after = stack.served()
        counts = {name: after.get(name, 0) - before.get(name, 0) for name in names}
        if all(count > 0 for count in counts.values()):
            break
    assert all(count > 0 for count in counts.values()), counts
    route({"1.0.0": 100})
    assert served_by() == "1.0.0"


def test_flower_refuses_strangers_and_lists_the_workers(stack: Project, three_workers: list[str]) -> None:
    """Flower answers 401 on every route without (or with wrong) credentials and shows the workers online."""
    for path in ("/", "/workers", "/api/workers", "/metrics", "/healthcheck", "/static/css/flower.css"):
        assert stack.flower_get(path).status_code == 401, path
        assert stack.flower_get(path, (stack.flower_auth[0], "wrong")).status_code == 401, path
    assert stack.flower_get("/", stack.flower_auth).status_code == 200
    online = stack.flower_get("/api/workers?status=1", stack.flower_auth).json()
    names = {stack.worker_name(container) for container in three_workers}
    assert names <= {name for name, up in online.items() if up}, online


def test_scaling_down_with_jobs_in_flight_loses_none(
    stack: Project, three_workers: list[str], measured: list[str]
) -> None:
    """Two of three workers stopped mid-burst shut down warmly; every job still succeeds in full."""
    # Sent together, so their chunks wait together: sent one at a time, the workers finished each
    # job's chunks before the next upload was accepted, and nothing was in flight to stop.
    with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT_JOBS) as pool:
        jobs = list(pool.map(stack.submit_csv, [IN_FLIGHT_RECORDS] * IN_FLIGHT_JOBS))
    waiting = stack.queue_length()
    unfinished = sum(stack.request("GET", f"/v1/jobs/{job}").json()["status"] not in TERMINAL for job in jobs)
    assert waiting > 0, "the queue was empty before the workers could be stopped"
    assert unfinished > 0, "the jobs ended before the workers could be stopped"
    surplus = three_workers[1:]
    grace = "90"  # docker-compose.yml's stop_grace_period for the workers

    def stop(name: str) -> float:
        started = time.monotonic()
        stack.engine.run("stop", "-t", grace, name, timeout=150)
        return time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(len(surplus)) as pool:
        stop_seconds = list(pool.map(stop, surplus))
    restored = 0
    for name in surplus:
        assert stack.inspect(name, "{{.State.ExitCode}}") == "0", f"{name} did not exit cleanly"
        logs = stack.engine.run("logs", "-t", name)
        log = logs.stdout + logs.stderr
        (stack.log_dir / f"{name}.log").write_text(log)
        assert "Warm shutdown" in log, name
        restored += sum(int(n) for n in re.findall(r"Restoring (\d+) unacknowledged message", log))
    ended = [stack.finished(job) for job in jobs]
    assert [job["status"] for job in ended] == ["succeeded"] * IN_FLIGHT_JOBS, ended
    assert all(job["progress"] == {"done": IN_FLIGHT_RECORDS, "total": IN_FLIGHT_RECORDS} for job in ended)
    streamed = stack.request(
        "GET", f"/v1/jobs/{jobs[-1]}/outputs", headers={"Accept": "application/x-ndjson"}
    )
    assert streamed.status_code == 200
    assert len(streamed.text.splitlines()) == IN_FLIGHT_RECORDS
    _wait_for(lambda: stack.ready_workers() == 1, 60, "the API still counted the stopped workers")
    stack.engine.run("rm", *surplus)
    measured.append(
        f"scale-down to 1 with {waiting} messages queued and {unfinished}/{IN_FLIGHT_JOBS} jobs unfinished: "
        f"stops took {', '.join(f'{s:.1f}' for s in stop_seconds)} s, the stopped workers put "
        f"{restored} reserved messages back, all {IN_FLIGHT_JOBS} jobs succeeded in full"
    )


def test_flower_keeps_its_state_across_restarts(stack: Project) -> None:
    """The tasks Flower saw are still listed after its container restarts (its /data is a volume)."""
    before = stack.flower_get("/api/tasks", stack.flower_auth).json()
    assert before
    flower = stack.containers("flower")[0]
    stack.engine.run("restart", "-t", "20", flower, timeout=90)
    _wait_for(lambda: stack.healthy(flower), 60, "Flower did not come back", 2)
    after = stack.flower_get("/api/tasks", stack.flower_auth).json()
    assert set(before) <= set(after)

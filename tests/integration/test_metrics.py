"""What an operator watches: /metrics under two API processes, promtool, real Prometheus, Flower, alerts.

The API stacks here run on the session's Redis: two processes on the session worker's queue, or one
on a queue of its own that no worker consumes, so jobs stay queued as long as the test wants.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris

from shared.registry import Registry
from shared.store import PUBLISH_KIND, JobStore, NewJob, new_job_id
from tests.integration.conftest import ADMIN_KEY, KEY, Api
from tools.stack import Stack, free_port, http_status, wait_until

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "inference.json"
ROW = [5.1, 3.5, 1.4, 0.2]
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-metrics-password"
# The containers' /tmp, a tmpfs of their own (compose's hardening), named in the shipped files.
CONTAINER_TMP = "/tmp/"  # noqa: S108 (a path inside the containers, not used here)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(base: str) -> str:
    """GET /metrics on a connection of its own, so either API process may answer."""
    response = requests.get(base + "/metrics", headers={"Connection": "close"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _exposed_names(text: str) -> set[str]:
    """Return every sample name a scrape can hold, the families without samples yet included."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names


def _submit(base: str, model: str, rows: list[list[float]], wait: float | None = None) -> dict[str, Any]:
    """Submit a JSON job on a connection of its own and return the job."""
    headers = {"Authorization": f"Bearer {KEY}", "Connection": "close"}
    if wait is not None:
        headers["Prefer"] = f"wait={wait:g}"
    response = requests.post(
        f"{base}/v1/models/{model}/jobs", json={"inputs": rows}, headers=headers, timeout=90
    )
    assert response.status_code in (200, 202), response.text
    job: dict[str, Any] = response.json()
    return job


@pytest.fixture(scope="module")
def two_processes(stack_factory: Callable[..., Stack], api_base: str) -> Iterator[Stack]:
    """Start an API of two processes on the session worker's queue, as compose and Kubernetes run it."""
    stack = stack_factory()
    stack.start_api(free_port(), processes=2)
    yield stack
    stack.stop()


def test_counters_never_go_back_whichever_process_answers(
    two_processes: Stack, clean_redis: redis.Redis
) -> None:
    """40 scrapes answered by both processes: each counter only grows, /metrics's own by one a scrape."""
    base = two_processes.urls["api"]
    for _ in range(10):
        assert _submit(base, "iris", [ROW], wait=30)["status"] == "succeeded"
    scrapes = [_samples(_scrape(base)) for _ in range(40)]
    counters = [key for key in scrapes[0] if key[0].endswith(("_total", "_count", "_sum", "_bucket"))]
    assert len(counters) > 50
    for before, after in itertools.pairwise(scrapes):
        for key in counters:
            assert after.get(key, 0) >= before[key], (key, before[key], after.get(key))
    key = (
        "infer_http_requests_total",
        frozenset({"method": "GET", "route": "/metrics", "status": "200"}.items()),
    )
    answered = [s.get(key, 0.0) for s in scrapes]  # absent before the first scrape ended
    assert [b - a for a, b in itertools.pairwise(answered)] == [1] * 39
    # Each process kept its own count of the scrapes it answered: both answered some.
    files = sorted((two_processes.run_dir / "api-metrics").glob("counter_*.db"))
    per_process = []
    for path in files:
        metrics = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        per_process.append(
            sum(
                s.value
                for m in metrics
                for s in m.samples
                if s.name == "infer_http_requests_total" and s.labels.get("route") == "/metrics"
            )
        )
    assert len([n for n in per_process if n > 0]) == 2, per_process


def test_a_real_scrape_passes_promtool_and_counts_every_version_from_the_start(
    two_processes: Stack, clean_redis: redis.Redis, registry: Registry
) -> None:
    """Promtool finds nothing to say of a scrape; every published version's counters exist at zero."""
    text = _scrape(two_processes.urls["api"])
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""
    samples = _samples(text)
    for manifest in registry.all():
        version = {"model": manifest.name, "version": manifest.version}
        for outcome in ("succeeded", "failed", "canceled", "expired"):
            assert _value(samples, "infer_jobs_total", **version, outcome=outcome) == 0
        assert _value(samples, "infer_records_total", **version) == 0
        assert _value(samples, "infer_job_seconds_count", **version) == 0
        assert _value(samples, "infer_jobs_submitted_total", model=manifest.name) >= 0  # this API's own count
        assert _value(samples, "infer_jobs_queued", model=manifest.name) == 0
        assert _value(samples, "infer_oldest_queued_job_seconds", model=manifest.name) == 0
    # The master and its two workers, each with its own series.
    assert len({dict(labels)["pid"] for name, labels in samples if name == "process_cpu_seconds_total"}) == 3
    assert _value(samples, "infer_workers_consuming") >= 1
    assert _value(samples, "infer_queue_depth", queue="inference.shadow") == 0


def test_queued_jobs_and_the_oldest_ones_age_per_model(
    stack_factory: Callable[..., Stack], api_base: str, clean_redis: redis.Redis
) -> None:
    """Jobs on a queue no worker consumes: counted per model, the oldest ageing; a cancel counted once."""
    stack = stack_factory(INFER_QUEUE_NAME="metrics-idle")
    base = stack.start_api(free_port())
    started = time.monotonic()
    iris = [_submit(base, "iris", [ROW]) for _ in range(3)]
    _submit(base, "breast-cancer", [[0.1] * 30])
    wait_until(lambda: time.monotonic() - started > 2.5, 10, "two seconds and a half")
    samples = _samples(_scrape(base))
    waited = time.monotonic() - started
    assert _value(samples, "infer_jobs_queued", model="iris") == 3
    assert _value(samples, "infer_jobs_queued", model="breast-cancer") == 1
    assert _value(samples, "infer_jobs_queued", model="scam-email") == 0
    assert 2.0 < _value(samples, "infer_oldest_queued_job_seconds", model="iris") <= waited + 1
    assert _value(samples, "infer_oldest_queued_job_seconds", model="scam-email") == 0
    assert (
        _value(samples, "infer_queue_depth", queue="metrics-idle") >= 1
    )  # jobs submitted together share one
    assert _value(samples, "infer_workers_online") >= 1  # the session's worker answers, on its own queue
    assert _value(samples, "infer_workers_consuming") == 0
    api = Api(base)
    for _ in range(2):  # the second is refused: the job ended once
        api.request("POST", f"/v1/jobs/{iris[0]['id']}/cancel")
    samples = _samples(_scrape(base))
    assert _value(samples, "infer_jobs_queued", model="iris") == 2
    assert _value(samples, "infer_jobs_total", model="iris", version="1.0.0", outcome="canceled") == 1
    assert _value(samples, "infer_jobs_total", model="iris", version="1.0.0", outcome="succeeded") == 0


def test_a_job_is_counted_once_when_it_ends_and_a_publish_job_never(
    two_processes: Stack, store: JobStore
) -> None:
    """Ended twice, a job counts once under its outcome; a publish job's end adds no version's series."""
    for outcome in ("failed", "expired"):
        job_id = new_job_id()
        store.create(NewJob(id=job_id, owner="someone", model="iris", version="1.0.0", total=1, chunks=1))
        assert store.end(job_id, "iris", outcome, "internal", "ended by the test") == "ended"
        assert store.end(job_id, "iris", "canceled", "canceled", "ended again") == outcome
    published = new_job_id()
    store.create(
        NewJob(
            id=published, owner="admin", model="iris", version="7.0.0", total=0, chunks=0, kind=PUBLISH_KIND
        )
    )
    assert store.end(published, "iris", "failed", "invalid_model", "refused by the test") == "ended"
    samples = _samples(_scrape(two_processes.urls["api"]))
    version = {"model": "iris", "version": "1.0.0"}
    ended = {
        o: _value(samples, "infer_jobs_total", **version, outcome=o)
        for o in ("failed", "expired", "canceled")
    }
    assert ended == {"failed": 1, "expired": 1, "canceled": 0}
    assert not [key for key in samples if ("version", "7.0.0") in key[1]]


def test_drift_gauges_give_the_drift_routes_psi_and_threshold(
    stack_factory: Callable[..., Stack], api_base: str, clean_redis: redis.Redis
) -> None:
    """Iris with petal length + 2 cm: /metrics gives petal_length's PSI over its threshold, as the route."""
    stack = stack_factory()  # a fresh API: its first scrape computes the drift of the traffic below
    api = Api(stack.start_api(free_port()))
    shifted = load_iris().data.round(1)
    shifted[:, 2] += 2
    for part in (shifted[:50], shifted[50:100], shifted[100:]):
        assert api.submit("iris", part.tolist(), wait=60).json()["status"] == "succeeded"
    samples = _samples(api.request("GET", "/metrics", key=None).text)
    report = api.request("GET", "/v1/models/iris/versions/1.0.0/drift", key=ADMIN_KEY).json()
    version = {"model": "iris", "version": "1.0.0"}
    assert _value(samples, "infer_drift_window_records", **version) == 150
    drifting = set()
    for feature in report["features"]:
        psi = _value(samples, "infer_drift_psi", **version, feature=feature["name"])
        threshold = _value(samples, "infer_drift_psi_threshold", **version, feature=feature["name"])
        assert (psi, threshold) == (feature["psi"], feature["psi_threshold"])
        if psi >= threshold:
            drifting.add(feature["name"])
    assert drifting == {"petal_length"}
    assert _value(samples, "infer_drift_prediction_psi", **version) == report["prediction"]["psi"]


class Prometheus:
    """Debian's prometheus on loopback, scraping one API every second, with the shipped alert rules."""

    def __init__(self, folder: Path, target: str) -> None:
        shutil.copy(MONITORING / "alerts.yml", folder / "alerts.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "inference-api", "static_configs": [{"targets": [target]}]}],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.base = f"http://127.0.0.1:{free_port()}"
        argv = ["prometheus", f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={self.base.removeprefix('http://')}"]  # fmt: skip
        self._log = (folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(lambda: http_status(self.base + "/-/ready") == 200, 60, "Prometheus")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the result of an instant query."""
        answer = requests.get(self.base + "/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        """Return the one value of an instant query, or None when it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        """Stop the process and close its log."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def test_a_real_prometheus_answers_with_the_numbers_the_load_produced(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis, tmp_path: Path
) -> None:
    """Prometheus scraping two API processes sees the queue, the oldest age, then jobs, latency, rules."""
    stack = stack_factory(INFER_QUEUE_NAME="metrics-prometheus")
    base = stack.start_api(free_port(), processes=2)
    prometheus = Prometheus(tmp_path, base.removeprefix("http://"))
    try:
        with ThreadPoolExecutor(8) as pool:
            jobs = list(pool.map(lambda _: _submit(base, "iris", [ROW, ROW]), range(12)))
        last_submitted = time.monotonic()
        wait_until(
            lambda: prometheus.scalar('infer_jobs_queued{model="iris"}') == 12, 60, "12 iris jobs queued"
        )
        wait_until(
            lambda: (prometheus.scalar('infer_oldest_queued_job_seconds{model="iris"}') or 0) > 3,
            60,
            "an age",
        )
        stack.start_worker("worker-prometheus", 2)
        ran = time.monotonic() - last_submitted  # each job waited at least this long before a worker came
        succeeded = 'sum(infer_jobs_total{model="iris", version="1.0.0", outcome="succeeded"})'
        wait_until(lambda: prometheus.scalar(succeeded) == 12, 90, "12 succeeded jobs in Prometheus")
        assert all(Api(base).wait_job(job["id"])["status"] == "succeeded" for job in jobs)
        assert prometheus.scalar('infer_records_total{model="iris", version="1.0.0"}') == 24
        assert prometheus.scalar('infer_job_seconds_count{model="iris", version="1.0.0"}') == 12
        assert (prometheus.scalar('infer_job_seconds_sum{model="iris", version="1.0.0"}') or 0) >= 12 * ran
        p99 = 'histogram_quantile(0.99, sum by (le) (rate(infer_job_seconds_bucket{model="iris"}[1m])))'
        assert (prometheus.scalar(p99) or 0) >= ran
        assert (prometheus.scalar('sum(rate(infer_jobs_total{model="iris"}[1m]))') or 0) > 0
        wait_until(lambda: prometheus.scalar('infer_jobs_queued{model="iris"}') == 0, 30, "the queue emptied")
        assert prometheus.scalar('infer_jobs_total{model="scam-email", outcome="succeeded"}') == 0
        groups = requests.get(prometheus.base + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
        assert len(rules) == 4
        assert set(rules.values()) == {"ok"}, rules
    finally:
        prometheus.stop()


def _flower_tasks(flower: str, search: str) -> dict[str, dict[str, Any]]:
    response = requests.get(
        flower + "/api/tasks", params={"search": search}, auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=10
    )
    if response.status_code != 200:
        return {}
    tasks: dict[str, dict[str, Any]] = response.json()
    return tasks


def test_flower_finds_the_task_of_a_job_by_its_id(stack_factory: Callable[..., Stack]) -> None:
    """Flower's task list shows every job id a task carries, even when one task carries many jobs."""
    stack = stack_factory()
    # A Redis of its own: Flower switches task events on in every worker it reaches, and only this
    # stack's worker should send them.
    stack.start_redis(free_port())
    stack.start_worker("worker-flower", 1)
    base = stack.start_api(free_port())
    flower = stack.start_flower(free_port(), FLOWER_USER, FLOWER_PASSWORD)
    wait_until(lambda: http_status(base + "/readyz") == 200, 60, "a worker consuming the queue")

    def seen() -> bool:
        # Flower switches the workers' events on when it starts and every few seconds after.
        job = _submit(base, "iris", [ROW], wait=10)
        return bool(_flower_tasks(flower, job["id"]))

    wait_until(seen, 90, "Flower showing a job's task")
    with ThreadPoolExecutor(32) as pool:
        ids = [job["id"] for job in pool.map(lambda _: _submit(base, "iris", [ROW]), range(64))]
    api = Api(base)
    assert all(api.wait_job(job_id)["status"] == "succeeded" for job_id in ids)
    found: dict[str, dict[str, Any]] = {}

    def all_found() -> bool:
        for job_id in ids:
            if not any(job_id in task["args"] for task in found.values()):
                found.update(_flower_tasks(flower, job_id))
        return all(any(job_id in task["args"] for task in found.values()) for job_id in ids)

    wait_until(all_found, 60, "every job id in Flower")
    carried = {uuid: sum(job_id in task["args"] for job_id in ids) for uuid, task in found.items()}
    assert all(found[uuid]["name"] == "infer.predict" for uuid in carried)
    assert max(carried.values()) > 1, carried  # jobs submitted together travel in one task


def _exprs_of_the_dashboard() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _exprs_of_the_alerts() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_alert_rules_and_the_compose_prometheus_config_pass_promtool() -> None:
    """Promtool checks the rules, runs their unit tests and checks the monitoring profile's config."""
    for argv in (
        ["promtool", "check", "rules", "alerts.yml"],
        ["promtool", "test", "rules", "alerts.test.yml"],
        ["promtool", "check", "config", "prometheus.yml"],
    ):
        checked = subprocess.run(argv, cwd=MONITORING, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "SUCCESS" in checked.stdout


def test_the_dashboard_and_the_alerts_query_only_what_metrics_exposes(
    two_processes: Stack, tmp_path: Path
) -> None:
    """Every expression parses (promtool) and names only metrics a real scrape of /metrics holds."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {"prometheus"}
    sources = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert [source["uid"] for source in sources["datasources"]] == ["prometheus"]
    exprs = _exprs_of_the_dashboard()
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for shown in ("outcome", "p50", "p99", "queued", "oldest", "workers", "drift"):
        assert shown in titles
    # Grafana's variables as Prometheus would see them once Grafana filled them in.
    filled = [
        e.replace("$__rate_interval", "1m").replace("$model", ".*").replace("$version", ".*") for e in exprs
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"panel:{i}", "expr": e} for i, e in enumerate(filled)],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "dashboard.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    exposed = _exposed_names(_scrape(two_processes.urls["api"]))
    for expr in exprs + _exprs_of_the_alerts():
        for name in re.findall(r"\b(?:infer|process)_[a-z_]+\b", expr):
            assert name in exposed, f"{name} (in {expr!r}) is not in /metrics"


def test_compose_has_an_optional_monitoring_profile_and_every_api_counts_across_processes() -> None:
    """Prometheus and Grafana start only with the profile, from files that exist; API counters are shared."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for mount in services[name]["volumes"]:
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
        assert services[name]["ports"][0].startswith("${")  # loopback unless told otherwise
    # The service itself starts without a profile; every profile (monitoring, sentinel) is optional.
    assert {name for name, service in services.items() if "profiles" not in service} == {
        "redis", "worker", "api", "flower",
    }  # fmt: skip
    # Compose fills in every service's variables, profile or not: a profile may require none of its own
    # (a shell's "$${VAR:?}", which compose leaves alone, is checked when the container starts).
    required = {name: set(re.findall(r"(?<!\$)\$\{(\w+):\?", json.dumps(s))) for name, s in services.items()}
    always = set().union(*(required[name] for name, s in services.items() if "profiles" not in s))
    assert all(required[name] <= always for name, s in services.items() if "profiles" in s), required
    assert services["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"].startswith(
        CONTAINER_TMP
    )  # on its tmpfs
    api = next(
        d for d in yaml.safe_load_all((ROOT / "deploy/k8s/api.yaml").read_text()) if d["kind"] == "Deployment"
    )
    pod = api["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["PROMETHEUS_MULTIPROC_DIR"]]]


def test_the_compose_prometheus_script_writes_its_config_and_password(tmp_path: Path) -> None:
    """The monitoring profile's start script renders Flower's user into a config promtool accepts."""
    script = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]["command"][0]
    # The container's temporary folder first: the checkout itself may live under /tmp.
    script = script.replace("$$", "$").replace(CONTAINER_TMP, f"{tmp_path}/")
    script = script.replace("/etc/prometheus/infer/", f"{MONITORING}/")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A stand-in for the image's prometheus: check the config it is given, as Prometheus would read it.
    stub = bin_dir / "prometheus"
    stub.write_text('#!/bin/sh\nexec promtool check config "${1#--config.file=}"\n')
    stub.chmod(0o755)
    user = "ops/a&b"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FLOWER_USER": user, "FLOWER_PASSWORD": "pw secret"}
    ran = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    flower = next(job for job in config["scrape_configs"] if job["job_name"] == "flower")
    assert flower["basic_auth"]["username"] == user
    assert flower["basic_auth"]["password_file"] == CONTAINER_TMP + "flower-password"
    assert (tmp_path / "flower-password").read_text() == "pw secret"
    assert (tmp_path / "flower-password").stat().st_mode & 0o077 == 0

"""Faults: a worker killed with its job in hand, and a model that cannot load."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import redis

from shared.registry import Registry
from tests.integration.conftest import Api
from tools.stack import free_port, wait_until


def _pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def _models_loaded(log: Path) -> int:
    """Return how many model versions a worker's log says its pool processes have loaded."""
    return len(re.findall(r"\] loaded \S+ \S+ \(", log.read_text())) if log.exists() else 0


def test_a_killed_workers_job_finishes_on_another_worker(
    stack_factory: Any, registry: Registry, clean_redis: redis.Redis
) -> None:
    """A job delivered to a worker that is then SIGKILLed is redelivered and finished by another."""
    queue = "faults"
    stack = stack_factory(INFER_QUEUE_NAME=queue)
    api = Api(stack.start_api(free_port()))
    stack.start_worker("worker-doomed", 1)
    doomed = stack.procs["worker-doomed"]
    wait_until(lambda: len(_pool_children(doomed.pid)) == 1, 60, "the doomed worker's pool")
    # The pool process loads every model before it would take a task: freeze it only once it has.
    log = stack.run_dir / "worker-doomed.log"
    wait_until(lambda: _models_loaded(log) >= len(registry.all()), 60, "the pool's models")
    # Freeze the pool process so the delivered job stays in the worker's hands, unacknowledged.
    for child in _pool_children(doomed.pid):
        os.kill(child, signal.SIGSTOP)
    job_id = api.submit("iris", [[6.2, 2.9, 4.3, 1.3]]).json()["id"]
    wait_until(lambda: clean_redis.hlen("unacked") == 1 and clean_redis.llen(queue) == 0, 20, "delivery")
    assert api.request("GET", f"/v1/jobs/{job_id}").json()["status"] == "queued"
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    stack.procs.pop("worker-doomed")
    stack.start_worker("worker-rescuer", 1)
    job = api.wait_job(job_id, seconds=45)
    assert job["status"] == "succeeded"
    assert job["outputs"][0]["label"] == "versicolor"
    assert job["progress"] == {"done": 1, "total": 1}


def test_a_model_that_fails_to_load_fails_its_jobs_and_others_keep_serving(
    stack_factory: Any, registry_path: Path, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """A tampered artifact is refused at load; its jobs fail with a clear error, other models serve."""
    import shutil

    broken = tmp_path / "registry"
    shutil.copytree(registry_path, broken)
    artifact = broken / "iris" / "1.0.0" / "model.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    stack = stack_factory(INFER_QUEUE_NAME="broken", INFER_REGISTRY_PATH=str(broken))
    api = Api(stack.start_api(free_port()))
    stack.start_worker("worker-broken", 1)
    failed = api.submit("iris", [[6.2, 2.9, 4.3, 1.3]], wait=30).json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "model_unavailable"
    assert "sha256" in failed["error"]["message"]
    served = api.submit("scam-email", [["See you at lunch on Friday"]], wait=30).json()
    assert served["status"] == "succeeded"

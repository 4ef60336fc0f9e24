"""Publishing model versions over HTTP to a running stack: the upload, the publish job, and every refusal.

The tests run a stack of their own (its own registry folder, a copy of the session's, and its own
queue) so the versions they publish never reach the other tests' models.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import redis
import requests
import skops.io as sio
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier

from shared.publishing import lock_key
from shared.registry import Registry, file_sha256, make_registry
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import JobStore, NewJob, connect, new_job_id
from tests.integration.conftest import ADMIN_KEY, KEY, Api, error_of
from tests.integration.s3 import SeaweedS3
from tools.stack import Stack, free_port, http_status, wait_until

MODEL = "breast-cancer"
QUEUE = "publishing-tests"
MULTIPART_B = "multipart/form-data; boundary=b"
# Small enough that an upload a little over it is quick to send, large enough for every other upload.
UPLOAD_LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def published(
    stack_factory: Callable[..., Stack], registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, Path]]:
    """Start a worker and an API on a copy of the session's registry and a queue of their own."""
    root = tmp_path_factory.mktemp("publish") / "registry"
    shutil.copytree(registry_path, root)
    stack = stack_factory(INFER_REGISTRY_PATH=str(root), INFER_QUEUE_NAME=QUEUE,
                          INFER_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT))  # fmt: skip
    stack.start_worker("worker-publish", 2)
    base = stack.start_api(free_port())
    wait_until(lambda: http_status(base + "/readyz") == 200, 90, "a worker consuming the publishing queue")
    yield Api(base), root
    for name in [n for n in stack.workers()]:
        stack.stop_worker(name)


@dataclass(frozen=True)
class Publishing:
    """The publishing stack's client, its registry folder and the session's Redis."""

    api: Api
    root: Path
    redis: redis.Redis

    def upload(
        self, name: str, artifact: Path | None, metadata: dict[str, Any] | None,
        reference: Path | None = None, key: str = ADMIN_KEY,
    ) -> requests.Response:  # fmt: skip
        """Send a publish upload of these parts with an admin key (unless told otherwise)."""
        parts: dict[str, Any] = {}
        if metadata is not None:
            parts["metadata"] = (None, json.dumps(metadata), "application/json")
        if artifact is not None:
            parts["artifact"] = (artifact.name, artifact.read_bytes(), "application/octet-stream")
        if reference is not None:
            parts["reference"] = (reference.name, reference.read_bytes(), "text/csv")
        return self.api.request("POST", f"/v1/models/{name}/versions", key=key, files=parts)

    def ended(self, answer: requests.Response) -> dict[str, Any]:
        """Check an upload was accepted as a publish job and return the job once it has ended."""
        assert answer.status_code == 202, answer.text
        job: dict[str, Any] = answer.json()
        assert job["kind"] == "publish"
        assert answer.headers["Location"] == f"/v1/jobs/{job['id']}"
        return self.wait(job["id"])

    def wait(self, job_id: str) -> dict[str, Any]:
        """Return a job of the admin key once it has ended."""
        for _ in range(6):  # publishing may outlast one long-poll on a busy machine
            job: dict[str, Any] = self.api.request("GET", f"/v1/jobs/{job_id}?wait=60", key=ADMIN_KEY).json()
            if job["status"] not in ("queued", "running"):
                break
        return job

    def listed(self, name: str, version: str) -> None:
        """Check the API describes a version and lists it among the model's (it reads a version it lacks)."""
        described = self.api.request("GET", f"/v1/models/{name}/versions/{version}", key=KEY)
        assert described.status_code == 200, described.text
        assert version in described.json()["versions"]
        listed = self.api.request("GET", f"/v1/models/{name}", key=KEY).json()
        assert version in listed["versions"], listed

    def left_nothing(self, name: str, version: str, published: bool = False) -> None:
        """Check no upload and no publishing lock remain and, unless published, no trace of the version."""
        uploads = self.root / "uploads"
        wait_until(lambda: not uploads.exists() or not any(uploads.iterdir()), 30, "the upload to be dropped")
        wait_until(lambda: not self.redis.exists(lock_key(name, version)), 30, "the lock to be let go")
        if published:
            return
        assert not (self.root / name / version).exists()
        listed = self.api.request("GET", f"/v1/models/{name}", key=KEY)
        if listed.status_code == 200:
            assert version not in listed.json()["versions"]
        else:
            error_of(listed.status_code, listed.json(), listed.text, 404, "unknown_model")


@pytest.fixture
def service(published: tuple[Api, Path], clean_redis: redis.Redis) -> Publishing:
    """Return the publishing stack, with Redis emptied of jobs."""
    return Publishing(published[0], published[1], clean_redis)


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return the breast-cancer features (as the registry names them), rows and labels."""
    loaded = load_breast_cancer()
    features = [f.strip().lower().replace(" ", "_") for f in loaded.feature_names]
    return features, loaded.data, np.asarray(loaded.target_names)[loaded.target]


@pytest.fixture(scope="module")
def forest(data: tuple[list[str], np.ndarray, np.ndarray]) -> RandomForestClassifier:
    """Return a quickly trained 10-tree forest: the retrained model a data scientist publishes."""
    _, rows, labels = data
    return RandomForestClassifier(n_estimators=10, random_state=3, n_jobs=1).fit(rows, labels)


@pytest.fixture(scope="module")
def files(
    forest: RandomForestClassifier,
    data: tuple[list[str], np.ndarray, np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """Write the forest as skops and joblib, and the reference rows as CSV."""
    folder = tmp_path_factory.mktemp("artifacts")
    features, rows, _ = data
    sio.dump(forest, folder / "forest.skops")
    joblib.dump(forest, folder / "forest.joblib")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(features)
    writer.writerows(rows[:300].tolist())
    (folder / "reference.csv").write_text(buffer.getvalue())
    (folder / "notes.txt").write_text("not a model")
    (folder / "corrupt.skops").write_bytes(b"PK\x03\x04 this zip ends before it starts")
    return {path.name: path for path in folder.iterdir()}


def _metadata(features: list[str], version: str, **extra: Any) -> dict[str, Any]:
    return {"version": version, "task": "classification", "description": "Retrained forest, 10 trees.",
            "features": [{"name": f, "type": "number"} for f in features], **extra}  # fmt: skip


Data = tuple[list[str], np.ndarray, np.ndarray]


def test_a_retrained_version_is_published_listed_converted_and_served(
    service: Publishing, files: dict[str, Path], data: Data
) -> None:
    """A skops upload with reference rows becomes a listed ONNX version that serves a job naming it."""
    api, root = service.api, service.root
    features, rows, _ = data
    metadata = _metadata(features, "1.1.0")
    job = service.ended(service.upload(MODEL, files["forest.skops"], metadata, files["reference.csv"]))
    assert job["status"] == "succeeded", job
    assert (job["model"], job["version"], job["progress"]) == (MODEL, "1.1.0", {"done": 1, "total": 1})
    (output,) = job["outputs"]
    assert (output["name"], output["version"], output["runtime"]) == (MODEL, "1.1.0", "onnx")
    service.listed(MODEL, "1.1.0")
    model = api.request("GET", f"/v1/models/{MODEL}", key=KEY).json()
    assert model["versions"] == ["1.0.0", "1.1.0"]
    assert model["version"] == "1.0.0"  # a new version gets no traffic until routed or named
    described = api.request("GET", f"/v1/models/{MODEL}/versions/1.1.0", key=KEY).json()
    assert (described["runtime"], described["sha256"]) == ("onnx", output["sha256"])
    assert described["metrics"]["onnx_tolerance"] == 1e-4
    assert described["metrics"]["onnx_max_abs_diff"] <= 1e-4
    folder = root / MODEL / "1.1.0"
    manifest = json.loads((folder / "manifest.json").read_text())
    written = {p.name: file_sha256(p) for p in folder.iterdir() if p.name != "manifest.json"}
    assert manifest["artifacts"] == written
    assert set(written) == {"model.onnx", "model.skops", "reference.json"}
    assert written["model.skops"] == file_sha256(files["forest.skops"])  # the upload, kept as it came
    reference = json.loads((folder / "reference.json").read_text())
    assert reference["rows"] == 300
    assert list(reference["features"]) == features
    served = api.submit(MODEL, [rows[0].tolist(), rows[1].tolist()], wait=30, version="1.1.0").json()
    assert (served["status"], served["version"], served["kind"]) == ("succeeded", "1.1.0", "predict"), served
    assert {o["label"] for o in served["outputs"]} <= {"malignant", "benign"}
    service.left_nothing(MODEL, "1.1.0", published=True)
    again = service.upload(MODEL, files["forest.skops"], metadata, files["reference.csv"])
    error = error_of(again.status_code, again.json(), again.text, 409, "conflict")
    assert error["details"] == [{"field": "metadata.version", "reason": "1.1.0 is published"}]


def test_a_new_model_is_published_from_a_joblib_file_with_allow_pickle(
    service: Publishing, files: dict[str, Path], data: Data
) -> None:
    """A joblib file is taken when the metadata allows pickle; a new model's first version is its default."""
    features, rows, _ = data
    metadata = _metadata(features, "0.1.0", allow_pickle=True, labels=["benign", "malignant"])
    job = service.ended(
        service.upload("cancer-forest", files["forest.joblib"], metadata, files["reference.csv"])
    )
    assert job["status"] == "succeeded", job
    service.listed("cancer-forest", "0.1.0")
    listed = {m["name"]: m for m in service.api.request("GET", "/v1/models", key=KEY).json()["models"]}
    assert listed["cancer-forest"]["version"] == "0.1.0"
    served = service.api.submit("cancer-forest", [rows[0].tolist()], wait=30).json()
    assert (served["status"], served["version"]) == ("succeeded", "0.1.0"), served
    service.left_nothing("cancer-forest", "0.1.0", published=True)


@pytest.mark.parametrize(
    ("case", "artifact", "extra", "reason"),
    [
        ("corrupt skops file", "corrupt.skops", {}, "corrupt"),
        ("29 features named for a 30-feature forest", "forest.skops", {"drop": 1}, "takes 30 features"),
        ("labels that are not classes_", "forest.skops", {"labels": ["yes", "no"]}, "classes_"),
    ],
)
def test_a_model_the_worker_refuses_ends_failed_invalid_model_leaving_nothing(
    service: Publishing, files: dict[str, Path], data: Data, case: str, artifact: str, extra: dict[str, Any],
    reason: str,
) -> None:  # fmt: skip
    """A corrupt file or a model unlike its metadata fails the job with the reason; nothing is kept."""
    features = data[0][: len(data[0]) - extra.pop("drop", 0)]
    job = service.ended(service.upload(MODEL, files[artifact], _metadata(features, "2.0.0", **extra)))
    assert job["status"] == "failed", (case, job)
    assert job["error"]["code"] == "invalid_model"
    assert reason in job["error"]["message"], (case, job["error"])
    assert job["outputs"] is None
    service.left_nothing(MODEL, "2.0.0")


def test_uploads_the_api_refuses_are_answered_at_once_leaving_nothing(
    service: Publishing, files: dict[str, Path], data: Data
) -> None:
    """Wrong file type, pickle without allow_pickle, bad metadata or name, missing part, wrong media type."""
    features = data[0]
    metadata = _metadata(features, "3.0.0")
    refusals = [
        (service.upload(MODEL, files["notes.txt"], metadata), 422, "invalid_input", "artifact"),
        (service.upload(MODEL, files["forest.joblib"], metadata), 422, "invalid_input", "artifact"),
        (service.upload(MODEL, files["forest.skops"], {**metadata, "version": "3"}), 422, "invalid_input",
         "metadata.version"),
        (service.upload(MODEL, files["forest.skops"], {**metadata, "features": features[:3]}), 422,
         "invalid_input", "metadata.features.0"),
        (service.upload(MODEL, None, metadata), 422, "invalid_input", "artifact"),
        (service.upload(MODEL, files["forest.skops"], None), 422, "invalid_input", "metadata"),
        (service.upload(MODEL, files["forest.skops"], metadata, files["notes.txt"]), 422, "invalid_input",
         "reference"),
        (service.upload("Not A Name", files["forest.skops"], metadata), 422, "invalid_input", "name"),
        (service.upload(MODEL, files["forest.skops"], {**metadata, "version": "1.0.0"}), 409, "conflict",
         "metadata.version"),
        (service.upload(MODEL, files["forest.skops"], metadata, key=KEY), 403, "forbidden", "Authorization"),
        (service.api.request("POST", f"/v1/models/{MODEL}/versions", key=ADMIN_KEY, json=metadata), 415,
         "unsupported_media_type", None),
        (service.api.request("POST", f"/v1/models/{MODEL}/versions", key=ADMIN_KEY, data=b"--b\r\nno part",
                             headers={"Content-Type": MULTIPART_B}), 400, "invalid_json", None),
        (service.upload(MODEL, files["forest.skops"], {**metadata, "description": "x" * 70_000}), 413,
         "payload_too_large", "metadata"),
    ]  # fmt: skip
    for answer, status, code, field in refusals:
        error = error_of(answer.status_code, answer.json(), answer.text, status, code)
        if field is not None:
            assert field in {d["field"] for d in error["details"]}, (field, error)
    service.left_nothing(MODEL, "3.0.0")
    assert service.redis.keys("job:*") == []  # nothing was accepted


def test_an_upload_over_the_limit_is_refused_before_it_is_read(
    service: Publishing, files: dict[str, Path], data: Data
) -> None:
    """An upload over INFER_MAX_UPLOAD_BYTES gets 413, declared or streamed, and leaves nothing."""
    big = service.root.parent / "big.skops"
    big.write_bytes(files["forest.skops"].read_bytes() + b"\0" * UPLOAD_LIMIT)
    answer = service.upload(MODEL, big, _metadata(data[0], "4.0.0"))
    error_of(answer.status_code, answer.json(), answer.text, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body arrives
        yield b'--b\r\nContent-Disposition: form-data; name="artifact"; filename="m.skops"\r\n\r\n'
        for _ in range(UPLOAD_LIMIT // 65536 + 2):
            yield b"\0" * 65536

    streamed = service.api.request(
        "POST", f"/v1/models/{MODEL}/versions", key=ADMIN_KEY, data=chunks(),
        headers={"Content-Type": MULTIPART_B},
    )  # fmt: skip
    error_of(streamed.status_code, streamed.json(), streamed.text, 413, "payload_too_large")
    service.left_nothing(MODEL, "4.0.0")


def test_a_version_being_published_is_refused_until_its_job_ends(
    service: Publishing, files: dict[str, Path], data: Data
) -> None:
    """While another upload's job holds the version, a second upload of it gets 409."""
    holder = new_job_id()
    service.redis.set(lock_key(MODEL, "5.0.0"), holder)  # an upload just accepted, its record being written
    answer = service.upload(MODEL, files["forest.skops"], _metadata(data[0], "5.0.0"))
    error = error_of(answer.status_code, answer.json(), answer.text, 409, "conflict")
    assert error["details"] == [{"field": "metadata.version", "reason": "being published"}]
    assert service.redis.get(lock_key(MODEL, "5.0.0")) == holder
    service.redis.delete(lock_key(MODEL, "5.0.0"))
    service.left_nothing(MODEL, "5.0.0")


def test_a_publish_job_whose_message_was_lost_is_sent_again_by_the_reaper(
    service: Publishing, redis_url: str, files: dict[str, Path], data: Data
) -> None:
    """A publish job written but never sent (its API died) is found by the reaper and published."""
    job_id = new_job_id()
    upload = service.root.parent / "lost"
    upload.mkdir(exist_ok=True)
    metadata = _metadata(data[0], "6.0.0")
    (upload / "metadata.json").write_text(json.dumps(metadata))
    shutil.copyfile(files["forest.skops"], upload / "artifact.skops")
    Registry(LocalStorage(service.root)).put_upload(job_id, {p.name: p for p in upload.iterdir()})
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    store = JobStore(connect(settings), settings)
    message = {"job": job_id, "model": MODEL, "version": "6.0.0"}
    new = NewJob(id=job_id, owner="o", model=MODEL, version="6.0.0", total=1, chunks=1, kind="publish")
    assert store.create(new, json.dumps(message).encode()).outcome == "created"
    wait_until(lambda: store.ended(job_id), 90, "the reaper to send the publish job again")
    record = store.get(job_id)
    assert record is not None
    assert record.status == "succeeded", record
    service.listed(MODEL, "6.0.0")
    service.left_nothing(MODEL, "6.0.0", published=True)


def test_python_m_models_publish_uploads_waits_and_says_how_it_ended(
    service: Publishing, files: dict[str, Path], data: Data
) -> None:
    """The command publishes over HTTP with the admin key of the environment; its exit status says how."""
    features = ",".join(data[0])

    def publish(artifact: str, version: str, key: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "models.publish", str(files[artifact]), "--name", MODEL,
                "--version", version, "--features", features, "--task", "classification",
                "--reference", str(files["reference.csv"]), "--url", service.api.base]  # fmt: skip
        env = {**os.environ, "INFER_ADMIN_KEY": key}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)

    done = publish("forest.skops", "7.0.0", ADMIN_KEY)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["name"], printed["version"], printed["runtime"]) == (MODEL, "7.0.0", "onnx")
    service.listed(MODEL, "7.0.0")
    refused = publish("corrupt.skops", "7.1.0", ADMIN_KEY)
    assert refused.returncode == 1, refused.stderr
    assert "failed (invalid_model)" in refused.stderr
    assert "corrupt" in refused.stderr
    forbidden = publish("forest.skops", "7.2.0", KEY)
    assert forbidden.returncode == 3, forbidden.stderr
    assert "403 forbidden" in forbidden.stderr
    service.left_nothing(MODEL, "7.1.0")
    service.left_nothing(MODEL, "7.2.0")


def test_a_version_published_over_http_into_a_bucket_is_served_and_its_upload_dropped(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory, clean_redis: redis.Redis,
    files: dict[str, Path], data: Data, s3_server: SeaweedS3,
) -> None:  # fmt: skip
    """With the registry in S3 (a real SeaweedFS), the upload and the version go through the bucket."""
    url = f"s3://{s3_server.bucket('models')}/publishing"
    stack = stack_factory(INFER_QUEUE_NAME="publishing-s3", **s3_server.env(url))
    api = Api(stack.start_api(free_port()))
    stack.start_worker("worker-publish-s3", 1)
    wait_until(lambda: http_status(api.base + "/readyz") == 200, 90, "a worker on the bucket's registry")
    bucket = Publishing(api, tmp_path_factory.mktemp("unused"), clean_redis)
    features, rows, _ = data
    metadata = _metadata(features, "1.0.0")
    job = bucket.ended(
        bucket.upload("cancer-forest", files["forest.skops"], metadata, files["reference.csv"])
    )
    assert job["status"] == "succeeded", job
    bucket.listed("cancer-forest", "1.0.0")
    served = api.submit("cancer-forest", [rows[0].tolist()], wait=60).json()
    assert (served["status"], served["version"]) == ("succeeded", "1.0.0"), served
    storage = make_registry(s3_server.settings(url)).storage
    assert storage.keys("uploads/") == []
    assert "cancer-forest/1.0.0/reference.json" in storage.keys("cancer-forest/")
    stack.stop_worker("worker-publish-s3")


def _readme_block(marker: str) -> list[str]:
    """Return the lines of the README's shell block that holds the marker."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```sh\n")[1:]]
    (block,) = [b for b in blocks if marker in b]
    return block.rstrip("\n").split("\n")


def test_the_readmes_publish_commands_publish_iris_1_1_0_and_1_2_0(
    service: Publishing, tmp_path: Path
) -> None:
    """The README's lines, run as printed (curl, python -m models.publish), publish retrained iris."""
    root = Path(__file__).resolve().parents[2]
    lines = _readme_block("reference=@iris-reference.csv $API/v1/models/iris/versions")
    poll = lines.pop()
    assert "<id>" in poll
    env = {**os.environ, "ADMIN": f"Authorization: Bearer {ADMIN_KEY}", "ADMIN_KEY": ADMIN_KEY,
           "API": service.api.base, "PYTHONPATH": str(root)}  # fmt: skip
    script = "\n".join(line.replace(".venv/bin/python", sys.executable) for line in lines)
    done = subprocess.run(["bash", "-ec", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    accepted = json.loads(done.stdout)
    assert accepted["kind"] == "publish"
    job = service.wait(accepted["id"])
    assert job["status"] == "succeeded", job
    assert job["outputs"][0]["version"] == "1.1.0"
    service.listed("iris", "1.1.0")
    command = "\n".join(_readme_block("-m models.publish")).replace(".venv/bin/python", sys.executable)
    command = command.replace("--version 1.1.0", "--version 1.2.0")
    published = subprocess.run(["bash", "-ec", command], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=600, check=False)  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["version"] == "1.2.0"
    service.listed("iris", "1.2.0")

"""Routing a model's traffic among its versions, shadowing, retiring and per-version figures, end to end.

A stack of its own (two API processes, one worker, a queue of its own) serves a registry with four
versions of iris: 1.0.0 (the example), 1.1.0 and 1.3.0 (its copies) and 1.2.0 (a model that answers
differently: its scaler moved).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris

from shared.celery_app import make_celery
from shared.settings import Settings
from shared.store import CANCELED, JobStore, NewJob, connect, new_job_id
from shared.task_messages import TaskSender
from shared.tasks import ChunkMessage
from tests.integration.conftest import ADMIN_KEY, KEY, Api, error_of
from tools.stack import Stack, free_port, http_status, wait_until

QUEUE = "routing-tests"
ROWS = load_iris().data[::5].round(1).tolist()  # 30 rows of all three species
OLD, COPY, OTHER, SPARE = "1.0.0", "1.1.0", "1.2.0", "1.3.0"


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    return error_of(response.status_code, response.json(), response.text, status, code)


def _add_version(root: Path, version: str, artifact: bytes | None = None) -> None:
    """Publish iris 1.0.0 again as another version, with another ONNX artifact when given one."""
    source, folder = root / "iris" / OLD, root / "iris" / version
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    if artifact is not None:
        (folder / "model.onnx").write_bytes(artifact)
        manifest["artifacts"]["model.onnx"] = hashlib.sha256(artifact).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _moved_scaler(onnx_path: Path) -> bytes:
    """Return the iris ONNX model with its scaler's petal-length offset moved, so it answers otherwise."""
    model = onnx.load(str(onnx_path))
    scaler = next(node for node in model.graph.node if node.op_type == "Scaler")
    offset = next(attribute for attribute in scaler.attribute if attribute.name == "offset")
    offset.floats[2] += 1.5
    return model.SerializeToString()


@pytest.fixture(scope="module")
def routed_base(
    stack_factory: Callable[..., Stack], registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Start a stack serving four versions of iris on a queue of its own; return its API's URL."""
    root = tmp_path_factory.mktemp("routing") / "registry"
    shutil.copytree(registry_path, root)
    _add_version(root, COPY)
    _add_version(root, OTHER, _moved_scaler(root / "iris" / OLD / "model.onnx"))
    _add_version(root, SPARE)
    stack = stack_factory(INFER_REGISTRY_PATH=str(root), INFER_QUEUE_NAME=QUEUE)
    stack.start_worker("worker-routing", 2)
    base = stack.start_api(free_port(), processes=2)
    wait_until(lambda: http_status(base + "/readyz") == 200, 60, "a worker consuming the routing queue")
    return base


@pytest.fixture
def routed(routed_base: str, clean_redis: redis.Redis) -> Api:
    """Return a client of the routing stack, with no routing, figures or jobs left from other tests."""
    return Api(routed_base)


def _put(api: Api, routes: dict[str, int], shadow: dict[str, Any] | None = None, key: str = ADMIN_KEY) -> Any:
    return api.request("PUT", "/v1/models/iris/routing", key=key, json={"routes": routes, "shadow": shadow})


def test_a_user_key_reads_the_routing_but_may_not_change_it(routed: Api) -> None:
    """Without a routing all traffic goes to the default; a user key gets 403 forbidden on PUT."""
    assert routed.request("GET", "/v1/models/iris/routing").json() == {
        "routes": {OLD: 100}, "shadow": None, "updated_at": None, "updated_by": None,
    }  # fmt: skip
    error = _error(_put(routed, {COPY: 100}, key=KEY), 403, "forbidden")
    assert "admin key" in error["message"]
    assert routed.request("GET", "/v1/models/iris/routing").json()["routes"] == {OLD: 100}
    assert routed.submit("iris", [ROWS[0]]).json()["version"] == OLD


def test_weights_split_routed_jobs_and_a_named_version_bypasses_them(routed: Api) -> None:
    """90/10 sends about a tenth of routed jobs to 1.1.0, each served so; a named version goes as named."""
    answer = _put(routed, {OLD: 90, COPY: 10})
    assert answer.status_code == 200, answer.text
    routing = answer.json()
    assert routing["routes"] == {OLD: 90, COPY: 10}
    assert routing["updated_by"] == hashlib.sha256(ADMIN_KEY.encode()).hexdigest()[:32]
    assert routing["updated_at"].endswith("Z")
    assert routed.request("GET", "/v1/models/iris/routing").json() == routing
    jobs = [routed.submit("iris", [row]).json() for row in ROWS * 7]  # 210 routed jobs
    counts = Counter(job["version"] for job in jobs)
    assert set(counts) == {OLD, COPY}
    assert 5 <= counts[COPY] <= 50, counts  # 21 expected; 5 and 50 are over 3.5 sd away
    served = {job["version"]: routed.wait_job(job["id"]) for job in jobs[-40:]}
    for version, done in served.items():
        assert (done["status"], done["version"]) == ("succeeded", version)
    named = routed.submit("iris", [ROWS[0]], version=OTHER, wait=30).json()
    assert (named["status"], named["version"]) == ("succeeded", OTHER)
    # The heaviest version is the default the model's description gives.
    assert routed.request("GET", "/v1/models/iris").json()["version"] == OLD
    header = "sepal_length,sepal_width,petal_length,petal_width\n"
    csv = routed.request(
        "POST",
        "/v1/models/iris/jobs",
        data=header + "5.1,3.5,1.4,0.2\n",
        headers={"Content-Type": "text/csv"},
    )
    assert csv.json()["version"] in (OLD, COPY)


def test_routings_that_cannot_serve_are_refused_with_422(routed: Api) -> None:
    """Weights not summing to 100, unknown versions, a bad shadow: 422 naming the fault, nothing changed."""
    _put(routed, {OLD: 100})
    before = routed.request("GET", "/v1/models/iris/routing").json()
    short = _error(_put(routed, {OLD: 60, COPY: 39}), 422, "invalid_input")
    assert "sum to 99" in json.dumps(short["details"])
    unknown = _error(_put(routed, {OLD: 50, "9.9.9": 50}), 422, "invalid_input")
    assert unknown["details"] == [{"field": "routes.9.9.9", "reason": "iris has no published version 9.9.9"}]
    ghost = _error(_put(routed, {OLD: 100}, {"version": "9.9.8", "sample": 0.5}), 422, "invalid_input")
    assert "9.9.8" in json.dumps(ghost["details"])
    _error(_put(routed, {OLD: 100}, {"version": COPY, "sample": 0}), 422, "invalid_input")
    _error(_put(routed, {OLD: 101, COPY: -1}), 422, "invalid_input")
    _error(_put(routed, {"one": 100}), 422, "invalid_input")
    _error(
        routed.request("PUT", "/v1/models/nope/routing", key=ADMIN_KEY, json={"routes": {}}),
        404,
        "unknown_model",
    )
    text = routed.request(
        "PUT", "/v1/models/iris/routing", key=ADMIN_KEY, data="x", headers={"Content-Type": "text/plain"}
    )
    _error(text, 415, "unsupported_media_type")
    assert routed.request("GET", "/v1/models/iris/routing").json() == before


def test_a_rollback_takes_effect_on_every_api_process_within_a_second(routed: Api) -> None:
    """After a PUT back to 1.0.0, no job sent over 1.5 s later is served by 1.1.0, on either API process."""
    assert _put(routed, {COPY: 100}).status_code == 200
    wait_until(lambda: routed.submit("iris", [ROWS[0]]).json()["version"] == COPY, 5, "1.1.0 serving")
    model = "/v1/models/iris"
    wait_until(lambda: routed.request("GET", model).json()["version"] == COPY, 5, "1.1.0 the default")
    assert _put(routed, {OLD: 100}).status_code == 200
    rolled_back = time.monotonic()
    late: list[float] = []
    seen: list[str] = []
    while time.monotonic() - rolled_back < 3.0:  # both processes answer many of these
        sent = time.monotonic()
        version = routed.submit("iris", [ROWS[0]]).json()["version"]
        seen.append(version)
        if version == COPY:
            late.append(sent - rolled_back)
    assert seen[-1] == OLD
    assert not late or max(late) < 1.5, late
    assert routed.request("GET", "/v1/models/iris").json()["version"] == OLD


def test_a_shadow_version_is_compared_without_touching_the_answers(routed: Api) -> None:
    """With a shadow sampling every job, answers stay 1.0.0's and GET shadow reports how 1.2.0 agrees."""
    reference = routed.submit("iris", ROWS, version=OLD, wait=30).json()["outputs"]
    other = routed.submit("iris", ROWS, version=OTHER, wait=30).json()["outputs"]
    differ = [i for i, (a, b) in enumerate(zip(reference, other, strict=True)) if a["label"] != b["label"]]
    assert differ, "1.2.0 must answer some rows otherwise for the comparison to show"
    assert _put(routed, {OLD: 100}, {"version": OTHER, "sample": 1.0}).status_code == 200
    assert routed.request("GET", "/v1/models/iris/shadow").json() == {
        "version": OTHER, "compared": 0, "agreement": None, "mean_abs_diff": None,
    }  # fmt: skip
    for start in range(0, len(ROWS), 5):
        done = routed.submit("iris", ROWS[start : start + 5], wait=30).json()
        assert (done["status"], done["version"]) == ("succeeded", OLD)
        assert done["outputs"] == reference[start : start + 5]

    def report() -> dict[str, Any]:
        found: dict[str, Any] = routed.request("GET", "/v1/models/iris/shadow").json()
        return found

    wait_until(lambda: report()["compared"] == len(ROWS), 30, "every shadowed record compared")
    figures = report()
    assert figures["agreement"] == pytest.approx(1 - len(differ) / len(ROWS))
    gaps = [
        max(abs(p - b["probabilities"][label]) for label, p in a["probabilities"].items())
        for a, b in zip(reference, other, strict=True)
    ]
    assert figures["mean_abs_diff"] == pytest.approx(sum(gaps) / len(gaps), abs=1e-5)
    # Jobs that name their version are never shadowed.
    routed.submit("iris", ROWS, version=OLD, wait=30)
    assert report()["compared"] == len(ROWS)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_jobs_records_and_latency_by_version(routed: Api, store: JobStore) -> None:
    """/metrics gives each version's jobs by outcome, records and latency histogram, on every API process."""
    for version, count in ((OLD, 3), (COPY, 2)):
        for _ in range(count):
            done = routed.submit("iris", ROWS[:4], version=version, wait=30).json()
            assert done["status"] == "succeeded"
    canceled = new_job_id()
    store.create(NewJob(id=canceled, owner="someone", model="iris", version=COPY, total=1, chunks=1))
    assert store.end(canceled, "iris", CANCELED, "canceled", "Canceled by the test.") == "ended"
    for _ in range(4):  # two API processes: whichever answers, the figures are the same
        samples = _samples(routed.request("GET", "/metrics", key=None).text)

        def value(name: str, **labels: str) -> float:
            return samples[name, frozenset(labels.items())]  # noqa: B023 (read in this pass)

        for version, count in ((OLD, 3), (COPY, 2)):
            assert value("infer_jobs_total", model="iris", version=version, outcome="succeeded") == count
            assert value("infer_records_total", model="iris", version=version) == 4 * count
            assert value("infer_job_seconds_count", model="iris", version=version) == count
            assert value("infer_job_seconds_bucket", model="iris", version=version, le="+Inf") == count
            assert 0 < value("infer_job_seconds_sum", model="iris", version=version) < 30 * count
        assert value("infer_jobs_total", model="iris", version=COPY, outcome="canceled") == 1
        assert value("infer_jobs_total", model="iris", version=OLD, outcome="failed") == 0


def test_a_routed_version_cannot_be_retired_and_a_retired_one_is_served_no_more(
    routed: Api, redis_url: str
) -> None:
    """409 while 1.3.0 is routed, shadow or default; 204 after: unlisted, refused, dropped by workers."""

    def retire(version: str, key: str = ADMIN_KEY) -> Any:
        return routed.request("DELETE", f"/v1/models/iris/versions/{version}", key=key)

    assert routed.submit("iris", [ROWS[0]], version=SPARE, wait=30).json()["status"] == "succeeded"
    _error(retire(SPARE, key=KEY), 403, "forbidden")
    assert _put(routed, {OLD: 90, SPARE: 10}).status_code == 200
    assert "routed" in _error(retire(SPARE), 409, "conflict")["message"]
    assert _put(routed, {OLD: 100, SPARE: 0}, {"version": SPARE, "sample": 0.5}).status_code == 200
    _error(retire(SPARE), 409, "conflict")
    _error(retire(OLD), 409, "conflict")  # the default: the heaviest routed version
    assert _put(routed, {OLD: 100, SPARE: 0}).status_code == 200
    gone = retire(SPARE)
    assert gone.status_code == 204, gone.text
    assert SPARE not in routed.request("GET", "/v1/models/iris").json()["versions"]
    assert routed.request("GET", "/v1/models/iris/routing").json()["routes"] == {OLD: 100}
    _error(routed.submit("iris", [ROWS[0]], version=SPARE), 404, "unknown_version")
    _error(_put(routed, {OLD: 50, SPARE: 50}), 422, "invalid_input")
    _error(retire(SPARE), 404, "unknown_version")
    # Jobs accepted for it just before it went, written and published as the intake does: once each
    # worker process has looked at the registry again (at most a second later), they fail.
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    store = JobStore(connect(settings), settings)
    sender = TaskSender(make_celery(settings), QUEUE, store.client)
    owner = hashlib.sha256(KEY.encode()).hexdigest()[:32]

    def a_late_job_fails() -> bool:
        late = new_job_id()
        store.create(NewJob(id=late, owner=owner, model="iris", version=SPARE, total=1, chunks=1))
        sender.chunks([ChunkMessage(job=late, model="iris", version=SPARE, chunk=0, inputs=[ROWS[0]])])
        ended = routed.wait_job(late)
        return ended["status"] == "failed" and ended["error"]["code"] == "model_unavailable"

    wait_until(a_late_job_fails, 15, "a job for the retired version to fail")
    assert all(a_late_job_fails() for _ in range(4))

"""Drift and the prediction log on the real stack: served records counted, compared and logged.

A stack of its own (one worker, one API, a queue of its own, every record logged, a small log) serves
the example models and two more iris versions: 8.8.8, published without reference rows, and 9.9.9,
whose artifact does not match its manifest, so every job of it fails in the worker.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from sklearn.datasets import load_breast_cancer, load_iris

from shared.settings import Settings
from shared.store import RUNNING, FinishedChunk, JobStore, NewJob, connect, new_job_id
from shared.watch import ChunkWatch
from tests.integration.conftest import ADMIN_KEY, KEY, Api, error_of
from tools.stack import Stack, free_port, http_status, wait_until

QUEUE = "watch-tests"
LOG_MAX = 40
NO_REFERENCE, BROKEN = "8.8.8", "9.9.9"
IRIS = load_iris().data.round(1)
CANCER = load_breast_cancer().data
PETAL_LENGTH = 2
MEAN_RADIUS = 0


def _owner(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _copy_version(root: Path, version: str, reference: bool = True, broken: bool = False) -> None:
    """Publish iris 1.0.0 again as another version, without its reference or with a wrong digest."""
    folder = root / "iris" / version
    shutil.copytree(root / "iris" / "1.0.0", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    if broken:
        manifest["artifacts"][manifest["artifact"]] = "0" * 64
    if not reference:
        (folder / "reference.json").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def watched_base(
    stack_factory: Callable[..., Stack], registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Start a stack that logs every record into a log of LOG_MAX entries; return its API's URL."""
    root = tmp_path_factory.mktemp("watch") / "registry"
    shutil.copytree(registry_path, root)
    _copy_version(root, NO_REFERENCE, reference=False)
    _copy_version(root, BROKEN, broken=True)
    stack = stack_factory(
        INFER_REGISTRY_PATH=str(root), INFER_QUEUE_NAME=QUEUE, INFER_PREDICTION_LOG_RATE="1",
        INFER_PREDICTION_LOG_MAX=str(LOG_MAX),
    )  # fmt: skip
    stack.start_worker("worker-watch", 1)
    base = stack.start_api(free_port())
    wait_until(lambda: http_status(base + "/readyz") == 200, 60, "a worker consuming the watch queue")
    return base


@pytest.fixture
def watched(watched_base: str, clean_redis: redis.Redis) -> Api:
    """Return a client of the watching stack, with no counts, log or jobs left from other tests."""
    return Api(watched_base)


def _serve(
    api: Api, model: str, rows: np.ndarray[Any, Any], jobs: int = 3, version: str | None = None
) -> None:
    """Submit the rows as a few jobs and wait for each to succeed."""
    extra = {"version": version} if version else {}
    for part in np.array_split(rows, jobs):
        answer = api.submit(model, part.tolist(), wait=60, **extra)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "succeeded", answer.text


def _drift(api: Api, model: str, version: str = "1.0.0", key: str = ADMIN_KEY, query: str = "") -> Any:
    return api.request("GET", f"/v1/models/{model}/versions/{version}/drift{query}", key=key)


def _report(api: Api, model: str) -> dict[str, Any]:
    answer = _drift(api, model)
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


def test_the_data_set_as_it_is_does_not_drift(watched: Api) -> None:
    """All 150 iris rows: counted as soon as their jobs succeed, with no feature or prediction drifting."""
    _serve(watched, "iris", IRIS)
    report = _report(watched, "iris")
    assert (report["model"], report["version"], report["window_s"]) == ("iris", "1.0.0", 3600)
    assert (report["reference_rows"], report["current_rows"]) == (105, 150)
    names = [f["name"] for f in report["features"]]
    assert names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    for feature in report["features"]:
        assert not feature["drift"], feature
        assert feature["psi"] < 0.2, feature
    assert not report["prediction"]["drift"]
    assert report["prediction"]["current"] == pytest.approx(
        dict.fromkeys(load_iris().target_names, 1 / 3), abs=0.05
    )
    assert (report["drifted_share"], report["dataset_drift"], report["note"]) == (0.0, False, None)


def test_a_shifted_petal_length_is_flagged_and_the_other_features_are_not(watched: Api) -> None:
    """Iris rows with petal length + 2 cm, sent as CSV: petal_length drifts, the three others do not."""
    shifted = IRIS.copy()
    shifted[:, PETAL_LENGTH] += 2
    header = ",".join(load_iris().feature_names).replace(" (cm)", "").replace(" ", "_")
    body = header + "\n" + "".join(",".join(f"{v:g}" for v in row) + "\n" for row in shifted)
    headers = {"Content-Type": "text/csv", "Prefer": "wait=60"}
    answer = watched.request("POST", "/v1/models/iris/jobs", data=body, headers=headers)
    assert answer.json()["status"] == "succeeded", answer.text
    report = _report(watched, "iris")
    flagged = {f["name"]: f["drift"] for f in report["features"]}
    assert flagged == {
        "sepal_length": False,
        "sepal_width": False,
        "petal_length": True,
        "petal_width": False,
    }
    petal = report["features"][PETAL_LENGTH]
    assert petal["psi"] >= petal["psi_threshold"] >= 0.2
    assert report["drifted_share"] == 0.25
    assert not report["dataset_drift"]
    assert report["prediction"]["current"]["setosa"] < report["prediction"]["reference"]["setosa"]


def test_breast_cancer_drifts_in_the_shifted_feature_only(watched: Api, clean_redis: redis.Redis) -> None:
    """The 569 breast-cancer rows do not drift; with mean radius + 10 only mean_radius does."""
    _serve(watched, "breast-cancer", CANCER)
    unshifted = _report(watched, "breast-cancer")
    assert (unshifted["reference_rows"], unshifted["current_rows"]) == (398, len(CANCER))
    assert len(unshifted["features"]) == 30
    assert [f["name"] for f in unshifted["features"] if f["drift"]] == []
    clean_redis.delete(*clean_redis.keys("drift:breast-cancer:*"))
    shifted = CANCER.copy()
    shifted[:, MEAN_RADIUS] += 10
    _serve(watched, "breast-cancer", shifted)
    report = _report(watched, "breast-cancer")
    assert report["current_rows"] == len(CANCER)
    assert [f["name"] for f in report["features"] if f["drift"]] == ["mean_radius"]
    assert report["drifted_share"] == pytest.approx(1 / 30, abs=1e-6)


def test_a_window_holds_what_was_served_in_it_and_a_version_without_reference_says_so(watched: Api) -> None:
    """window_s=60 still holds this minute's records; a version published without reference rows: a note."""
    _serve(watched, "iris", IRIS[:10], jobs=1)
    assert _report(watched, "iris")["current_rows"] == 10
    answer = _drift(watched, "iris", query="?window_s=60")
    assert (answer.json()["window_s"], answer.json()["current_rows"]) == (60, 10)
    _serve(watched, "iris", IRIS[:5], jobs=1, version=NO_REFERENCE)
    bare = _drift(watched, "iris", NO_REFERENCE).json()
    assert (bare["features"], bare["prediction"], bare["dataset_drift"]) == ([], None, False)
    assert "without reference rows" in bare["note"]


def _error(answer: Any, status: int, code: str) -> dict[str, Any]:
    return error_of(answer.status_code, answer.json(), answer.text, status, code)


def test_drift_and_the_log_are_for_admin_keys_and_refuse_what_they_cannot_answer(watched: Api) -> None:
    """A user key: 403 on both routes; unknown model or version: 404; a bad window, limit or cursor: 422."""
    _error(_drift(watched, "iris", key=KEY), 403, "forbidden")
    _error(watched.request("GET", "/v1/models/iris/predictions", key=KEY), 403, "forbidden")
    _error(_drift(watched, "nope"), 404, "unknown_model")
    _error(_drift(watched, "iris", "7.7.7"), 404, "unknown_version")
    _error(watched.request("GET", "/v1/models/nope/predictions", key=ADMIN_KEY), 404, "unknown_model")
    for query, field in [("?window_s=0", "window_s"), ("?window_s=86401", "window_s"),
                         ("?window_s=soon", "window_s"), ("?window=60", "window")]:  # fmt: skip
        error = _error(_drift(watched, "iris", query=query), 422, "invalid_input")
        assert [d["field"] for d in error["details"]] == [field], query
    for query, field in [("?limit=0", "limit"), ("?limit=1001", "limit"), ("?cursor=latest", "cursor")]:
        answer = watched.request("GET", f"/v1/models/iris/predictions{query}", key=ADMIN_KEY)
        assert [d["field"] for d in _error(answer, 422, "invalid_input")["details"]] == [field], query


def _log(api: Api, model: str, query: str = "") -> tuple[list[dict[str, Any]], Any]:
    answer = api.request("GET", f"/v1/models/{model}/predictions{query}", key=ADMIN_KEY)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/x-ndjson")
    return [orjson.loads(line) for line in answer.content.splitlines()], answer


def test_the_log_lists_served_records_newest_first_with_the_key_id_never_the_key(watched: Api) -> None:
    """Every record (rate 1) is logged: its job, version, input by name, output, latency and the key's id."""
    first = watched.submit("iris", [[5.1, 3.5, 1.4, 0.2]], wait=60).json()
    second = watched.submit("iris", [{"sepal_length": 6.2, "sepal_width": 2.9, "petal_length": 4.3,
                                      "petal_width": 1.3}], wait=60).json()  # fmt: skip
    entries, answer = _log(watched, "iris")
    assert "Next-Cursor" not in answer.headers
    assert [e["job"] for e in entries] == [second["id"], first["id"]]
    newest = entries[0]
    assert set(newest) == {"id", "job", "version", "at", "key", "input", "output", "latency_ms", "error"}
    assert newest["input"] == {
        "sepal_length": 6.2,
        "sepal_width": 2.9,
        "petal_length": 4.3,
        "petal_width": 1.3,
    }
    assert newest["output"] == second["outputs"][0]
    assert (newest["version"], newest["error"]) == ("1.0.0", None)
    assert newest["key"] == _owner(KEY)
    assert KEY not in answer.text
    assert 0 <= newest["latency_ms"] < 60_000
    assert newest["at"].endswith("Z")


def test_failed_jobs_are_always_logged_and_the_log_is_bounded(watched: Api) -> None:
    """A job the worker fails is logged with its error; past LOG_MAX entries the oldest go; pages follow."""
    failed = watched.submit("iris", [[5.1, 3.5, 1.4, 0.2]], wait=60, version=BROKEN).json()
    assert failed["status"] == "failed"
    # The worker adds a failure right after ending the job, in a round trip of its own.
    wait_until(lambda: _log(watched, "iris")[0], 30, "the failed job in the log")
    entries, _ = _log(watched, "iris")
    assert entries[0]["job"] == failed["id"]
    assert entries[0]["error"]["code"] == failed["error"]["code"] == "model_unavailable"
    assert (entries[0]["output"], entries[0]["version"], entries[0]["key"]) == (None, BROKEN, _owner(KEY))
    assert entries[0]["input"] == {
        "sepal_length": 5.1,
        "sepal_width": 3.5,
        "petal_length": 1.4,
        "petal_width": 0.2,
    }
    _serve(watched, "iris", IRIS[:60], jobs=2)
    everything, _ = _log(watched, "iris", "?limit=1000")
    assert len(everything) == LOG_MAX
    assert failed["id"] not in {e["job"] for e in everything}
    page, answer = _log(watched, "iris", "?limit=15")
    cursor = answer.headers["Next-Cursor"]
    assert cursor == page[-1]["id"]
    rest, _ = _log(watched, "iris", f"?limit=1000&cursor={cursor}")
    assert [e["id"] for e in page + rest] == [e["id"] for e in everything]


def test_a_chunk_delivered_twice_is_counted_once(redis_url: str, clean_redis: redis.Redis) -> None:
    """The store counts and logs a chunk only with its outputs: a second delivery adds nothing."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    store = JobStore(connect(settings), settings)
    job = NewJob(id=new_job_id(), owner="owner-id", model="iris", version="1.0.0", total=2, chunks=1)
    assert store.create(job).outcome == "created"
    assert store.claim([(job.id, "iris")]) == [RUNNING]
    watch = ChunkWatch(
        "drift:iris:1.0.0:1", "predictions:iris", 5, ["n", 2, "0:3", 2], [b'{"a":1}', b'{"value":1}']
    )
    done = FinishedChunk(job.id, 0, b'{"value":1}\n{"value":2}\n', 2, 0.1, watch)
    store.finish_chunks([done])
    store.finish_chunks([done])
    assert clean_redis.hgetall("drift:iris:1.0.0:1") == {"n": "2", "0:3": "2"}
    assert 0 < clean_redis.ttl("drift:iris:1.0.0:1") <= 86_460
    (entry,) = clean_redis.xrange("predictions:iris")
    assert entry[1]["key"] == "owner-id"
    assert (entry[1]["input"], entry[1]["output"], entry[1]["error"]) == ('{"a":1}', '{"value":1}', "null")


def test_a_batch_of_chunks_is_counted_as_the_sum_of_its_counted_chunks(
    redis_url: str, clean_redis: redis.Redis
) -> None:
    """Chunks recorded together add their sums; one listed twice, or of a job not running, adds nothing."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    store = JobStore(connect(settings), settings)
    jobs = [
        NewJob(id=new_job_id(), owner="o", model="iris", version="1.0.0", total=1, chunks=1) for _ in range(4)
    ]
    for job in jobs:
        assert store.create(job).outcome == "created"
    assert store.claim([(job.id, "iris") for job in jobs[:3]]) == [RUNNING] * 3  # the fourth stays queued
    watch = ChunkWatch("drift:iris:1.0.0:7", "predictions:iris", 5, ["n", 1, "0:2", 1])
    other = ChunkWatch("drift:iris:2.0.0:7", "predictions:iris", 5, ["n", 1, "1:0", 1])
    finished = [FinishedChunk(job.id, 0, b'{"value":1}\n', 1, 0.1, watch) for job in jobs]
    finished.insert(1, finished[0])  # a redelivery of the first chunk in the same batch
    finished.append(FinishedChunk(jobs[2].id, 0, b'{"value":1}\n', 1, 0.1, other))  # a second version
    store.finish_chunks(finished)
    assert clean_redis.hgetall("drift:iris:1.0.0:7") == {"n": "3", "0:2": "3"}
    assert clean_redis.hgetall("drift:iris:2.0.0:7") == {}  # a chunk already listed in this batch
    store.finish_chunks([FinishedChunk(job.id, 0, b'{"value":1}\n', 1, 0.1, watch) for job in jobs])
    assert clean_redis.hgetall("drift:iris:1.0.0:7") == {"n": "3", "0:2": "3"}


def test_counts_that_cannot_be_written_do_not_keep_the_outputs_from_being_recorded(
    redis_url: str, clean_redis: redis.Redis
) -> None:
    """A counters key and a log key of the wrong type: the chunk's outputs are recorded all the same."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    store = JobStore(connect(settings), settings)
    job = NewJob(id=new_job_id(), owner="owner-id", model="iris", version="1.0.0", total=1, chunks=1)
    store.create(job)
    store.claim([(job.id, "iris")])
    clean_redis.set("drift:iris:1.0.0:3", "not a hash")
    clean_redis.set("predictions:iris", "not a stream")
    watch = ChunkWatch("drift:iris:1.0.0:3", "predictions:iris", 5, ["n", 1], [b'{"a":1}', b'{"value":1}'])
    store.finish_chunks([FinishedChunk(job.id, 0, b'{"value":1}\n', 1, 0.1, watch)])
    record = store.get(job.id)
    assert record is not None
    assert record.status == "succeeded"
    assert store.outputs(job.id, 1) == [{"value": 1}]

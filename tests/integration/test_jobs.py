"""The job routes end to end: the API under gunicorn, Celery workers and Redis, all real."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import pytest
import redis
import requests

from api.waiter import RECHECK_S
from shared.store import DONE_CHANNEL, FinishedChunk, JobStore, NewJob, new_job_id
from shared.store_scripts import ANNOUNCED_OUTPUT_BYTES
from tests.integration.conftest import OTHER_KEY, Api, error_of
from tools.stack import free_port, wait_until

IRIS_RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
IRIS_ROW = [6.2, 2.9, 4.3, 1.3]


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    return error_of(response.status_code, response.json(), response.text, status, code)


def test_submit_answers_202_with_location_then_poll_finds_the_outputs(api: Api) -> None:
    """A job is accepted at once with its Location, and polling it yields one output per input."""
    response = api.submit("iris", [IRIS_RECORD, IRIS_ROW])
    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running", "succeeded")
    assert job["progress"]["total"] == 2
    done = api.wait_job(job["id"])
    assert done["status"] == "succeeded"
    assert [o["label"] for o in done["outputs"]] == ["setosa", "versicolor"]
    assert done["progress"] == {"done": 2, "total": 2}
    assert sum(done["outputs"][0]["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert done["metrics"]["total_ms"] >= done["metrics"]["queue_ms"] >= 0
    assert done["urls"]["cancel"] == f"/v1/jobs/{job['id']}/cancel"
    for stamp in ("created_at", "started_at", "completed_at"):
        assert done[stamp].endswith("Z")


def test_prefer_wait_on_submit_answers_200_with_the_finished_job(api: Api) -> None:
    """Prefer: wait holds the submit until the job finishes and says so in Preference-Applied."""
    response = api.submit("iris", [IRIS_ROW], wait=10)
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=10"
    assert response.json()["status"] == "succeeded"
    assert response.json()["outputs"][0]["label"] == "versicolor"


@pytest.mark.parametrize(
    ("model", "record", "label"),
    [
        (
            "iris",
            {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3},
            "virginica",
        ),
        (
            "scam-email",
            {"text": "Congratulations! You won $5,000,000. Send your bank details and a fee to claim."},
            "scam",
        ),
        (
            "scam-email",
            ["Hi Sam, the team meeting moved to Thursday at 10, same room as last week."],
            "ordinary",
        ),
    ],
)
def test_every_example_model_predicts(api: Api, model: str, record: Any, label: str) -> None:
    """Each example model answers a record with the expected label."""
    job = api.submit(model, [record], wait=20).json()
    assert job["status"] == "succeeded", job
    assert job["outputs"][0]["label"] == label


def test_breast_cancer_predicts_from_named_and_positional_records(api: Api, registry: Any) -> None:
    """The 30-feature forest gives the same answer to a record by name and by position."""
    from sklearn.datasets import load_breast_cancer

    row = [float(v) for v in load_breast_cancer().data[0]]  # a malignant example of the data set
    named = dict(zip(registry.get("breast-cancer").features, row, strict=True))
    job = api.submit("breast-cancer", [named, row], wait=20).json()
    assert job["status"] == "succeeded"
    assert job["outputs"][0] == job["outputs"][1]
    assert job["outputs"][0]["label"] == "malignant"


def test_a_long_poll_is_woken_by_the_jobs_end_well_within_the_recheck_interval(
    stack_factory: Any, clean_redis: redis.Redis
) -> None:
    """GET ?wait=N answers within a small fraction of RECHECK_S of the job's completed_at.

    The waiter also re-checks every RECHECK_S in case an announcement was missed, so a poll would
    end without the wake-up too, only later: four polls started a quarter of RECHECK_S apart
    re-check at four phases, and without the wake-up one of them would answer at least 3/4 of
    RECHECK_S after the end.
    """
    stack = stack_factory(INFER_QUEUE_NAME="long-poll")
    api = Api(stack.start_api(free_port()))
    job_id = api.submit("iris", [IRIS_ROW]).json()["id"]  # no worker consumes the queue yet: it waits
    answers: list[tuple[float, requests.Response]] = []

    def long_poll() -> None:
        response = Api(api.base).request("GET", f"/v1/jobs/{job_id}?wait=60")
        answers.append((time.time(), response))

    polls = [threading.Thread(target=long_poll) for _ in range(4)]
    for poll in polls:
        poll.start()
        time.sleep(RECHECK_S / 4)  # on purpose: each poll's re-checks fall at another phase
    assert not answers  # every poll is held while the job is queued
    stack.start_worker("worker-long-poll", 1)  # now the job runs
    for poll in polls:
        poll.join(60)
    assert len(answers) == 4
    for arrived, response in answers:
        job = response.json()
        assert job["status"] == "succeeded", job
        assert response.headers["Preference-Applied"] == "wait=60"
        ended = datetime.fromisoformat(job["completed_at"].replace("Z", "+00:00")).timestamp()
        assert arrived - ended < 0.3 * RECHECK_S, [round(a - ended, 3) for a, _ in answers]


def test_jobs_are_private_to_their_key(api: Api) -> None:
    """Another key gets 404 unknown_job for a job, as for an id that never existed, and cannot list it."""
    job_id = api.submit("iris", [IRIS_ROW], wait=10).json()["id"]
    _error(api.request("GET", f"/v1/jobs/{job_id}", key=OTHER_KEY), 404, "unknown_job")
    _error(api.request("POST", f"/v1/jobs/{job_id}/cancel", key=OTHER_KEY), 404, "unknown_job")
    _error(api.request("GET", f"/v1/jobs/{'0' * 32}"), 404, "unknown_job")
    assert api.request("GET", "/v1/jobs", key=OTHER_KEY).json()["jobs"] == []
    assert [j["id"] for j in api.request("GET", "/v1/jobs").json()["jobs"]] == [job_id]


def test_missing_or_wrong_key_is_401(api: Api) -> None:
    """Every /v1 route refuses a request without a valid key."""
    _error(api.request("GET", "/v1/models", key=None), 401, "unauthorized")
    _error(api.request("GET", "/v1/models", key="not-a-key"), 401, "unauthorized")
    _error(
        api.request("POST", "/v1/models/iris/jobs", key=None, json={"inputs": [IRIS_ROW]}),
        401,
        "unauthorized",
    )


def test_cancel_a_queued_job_then_cancel_again_is_409_and_no_worker_ever_runs_it(
    stack_factory: Any, clean_redis: redis.Redis
) -> None:
    """Cancel ends a queued job as canceled and frees its inputs; cancel again is 409; it never runs."""
    queue = "cancel-queued"
    stack = stack_factory(INFER_QUEUE_NAME=queue)
    api = Api(stack.start_api(free_port()))
    job_id = api.submit("iris", [IRIS_ROW]).json()["id"]
    assert clean_redis.llen(queue) == 1  # no worker consumes this queue yet: the job is surely queued
    assert clean_redis.exists(f"job:{job_id}:in")
    first = api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "canceled"
    assert first.json()["error"]["code"] == "canceled"
    assert not clean_redis.exists(f"job:{job_id}:in")
    assert _error(api.request("POST", f"/v1/jobs/{job_id}/cancel"), 409, "conflict")["details"] == [
        {"field": "status", "reason": "canceled"}
    ]
    stack.start_worker("worker-cancel-queued", 1)
    # One process takes the queue in order: once a job sent after it has run, its message was taken.
    assert api.submit("iris", [IRIS_ROW], wait=60).json()["status"] == "succeeded"
    job = api.request("GET", f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled"
    assert job["started_at"] is None
    assert job["progress"]["done"] == 0
    assert job["outputs"] is None


def test_a_job_past_its_deadline_expires_without_running(api: Api) -> None:
    """A job whose deadline passes before a worker takes it ends expired, with no outputs."""
    job_id = api.submit("iris", [IRIS_ROW], deadline_s=0.000001).json()["id"]
    job = api.wait_job(job_id)
    assert job["status"] == "expired"
    assert job["outputs"] is None
    assert job["started_at"] is None
    assert job["error"]["code"] == "expired"


def test_outputs_stream_as_ndjson_and_csv_in_input_order(api: Api) -> None:
    """A succeeded job's outputs stream in input order; before success the stream is 409."""
    rows = [IRIS_ROW, [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]
    job = api.submit("iris", rows, wait=10).json()
    lines = api.request("GET", job["urls"]["outputs"]).text.splitlines()
    assert [line.split('"label":"')[1].split('"')[0] for line in lines] == [
        "versicolor",
        "setosa",
        "virginica",
    ]
    csv_text = api.request("GET", job["urls"]["outputs"], headers={"Accept": "text/csv"}).text.splitlines()
    assert csv_text[0] == "label,probability_setosa,probability_versicolor,probability_virginica"
    assert [r.split(",")[0] for r in csv_text[1:]] == ["versicolor", "setosa", "virginica"]
    expired = api.submit("iris", [IRIS_ROW], deadline_s=0.000001).json()["id"]
    api.wait_job(expired)
    _error(api.request("GET", f"/v1/jobs/{expired}/outputs"), 409, "conflict")


def test_inline_limit_leaves_large_outputs_to_the_stream(stack_factory: Any, api: Api) -> None:
    """A job over the inline limit has no outputs in its body; the stream has them all."""
    stack = stack_factory(INFER_INLINE_LIMIT="3", INFER_CHUNK_SIZE="2")
    small = Api(stack.start_api(free_port()))
    job = small.submit("iris", [IRIS_ROW] * 5, wait=20).json()
    assert job["status"] == "succeeded"
    assert job["outputs"] is None
    assert job["progress"] == {"done": 5, "total": 5}
    assert len(small.request("GET", job["urls"]["outputs"]).text.splitlines()) == 5


def test_a_full_model_queue_is_429_queue_full_with_retry_after(
    stack_factory: Any, api: Api, clean_redis: redis.Redis
) -> None:
    """A model whose queue holds its maximum refuses more jobs with 429 and Retry-After."""
    limited = Api(stack_factory(INFER_MAX_QUEUED_PER_MODEL="1").start_api(free_port()))
    clean_redis.zadd("queued:iris", {"f" * 32: time.time()})  # one job waiting that no worker took yet
    full = limited.submit("iris", [IRIS_ROW])
    assert _error(full, 429, "queue_full")["details"][0]["field"] == "model"
    assert full.headers["Retry-After"] == "5"
    assert limited.submit("scam-email", [["hi"]]).status_code == 202  # other models still take jobs


def test_a_key_over_its_rate_is_429_rate_limited_with_retry_after(stack_factory: Any, api: Api) -> None:
    """A key that submits more jobs a second than its rate allows gets 429 rate_limited."""
    limited = Api(stack_factory(INFER_RATE_LIMIT_PER_S="3").start_api(free_port()))
    responses = [limited.submit("iris", [IRIS_ROW]) for _ in range(8)]
    refused = [r for r in responses if r.status_code == 429]
    assert refused, [r.status_code for r in responses]
    _error(refused[0], 429, "rate_limited")
    assert refused[0].headers["Retry-After"] == "1"
    assert (
        limited.submit("iris", [IRIS_ROW], key=OTHER_KEY).status_code == 202
    )  # other keys are not held back


def test_broker_down_is_503_within_a_second_and_nothing_is_accepted(stack_factory: Any, api: Api) -> None:
    """With Redis unreachable, submit answers 503 unavailable quickly and readyz is 503."""
    stack = stack_factory(INFER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    dead = Api(stack.start_api(free_port()))
    started = time.monotonic()
    _error(dead.submit("iris", [IRIS_ROW]), 503, "unavailable")
    assert time.monotonic() - started < 1.5
    _error(dead.request("GET", "/readyz", key=None), 503, "unavailable")


def test_jobs_run_after_redis_forgets_the_job_stores_scripts(api: Api, clean_redis: redis.Redis) -> None:
    """A Redis that lost its scripts (a restart, a failover; SCRIPT FLUSH here) still runs every job."""
    for _ in range(2):  # flushed before each job: the create, claim and finish scripts each meet NOSCRIPT
        clean_redis.script_flush()
        job = api.submit("iris", [IRIS_RECORD]).json()
        done = api.wait_job(job["id"])
        assert done["status"] == "succeeded"
        assert done["outputs"][0]["label"] == "setosa"


def _announced_end(store: JobStore, clean_redis: redis.Redis, outputs: bytes, count: int) -> tuple[str, str]:
    """Run a one-chunk job to its end in the store; return its id and the end its announcement carried."""
    listener = clean_redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(DONE_CHANNEL)
    job = NewJob(id=new_job_id(), owner="owner", model="iris", version="1.0.0", total=count, chunks=1)
    store.create(job)
    store.claim([(job.id, "iris")])
    store.finish_chunks([FinishedChunk(job.id, 0, outputs, count, 0.5)])
    heard: list[dict[str, Any]] = []

    def announced() -> bool:
        message = listener.get_message(timeout=0.2)
        if message is not None:
            heard.append(message)
        return bool(heard)

    wait_until(announced, 10, "the job's end announced")
    job_id, _, ending = str(heard[0]["data"]).partition(" ")
    assert job_id == job.id
    return job.id, ending


def test_a_long_polls_answer_comes_from_the_announced_end_without_reading_redis_again(
    store: JobStore, clean_redis: redis.Redis
) -> None:
    """The end's announcement carries the record and short outputs: read as Redis would answer them."""
    job_id, ending = _announced_end(store, clean_redis, b'{"label":"setosa"}\n{"label":"virginica"}\n', 2)
    read = store.get_with_outputs(job_id, 1_000)
    for key in clean_redis.keys(f"job:{job_id}*"):  # from now on only the announcement knows the job
        clean_redis.delete(key)
    assert store.get_with_outputs(job_id, 1_000, ending) == read
    assert read[0] is not None
    assert read[0].status == "succeeded"
    assert read[1] == [{"label": "setosa"}, {"label": "virginica"}]
    assert store.get_with_outputs(job_id, 1, ending) == (read[0], None)  # over the inline limit: no outputs


def test_outputs_too_long_to_announce_are_read_from_redis(store: JobStore, clean_redis: redis.Redis) -> None:
    """A one-chunk job whose outputs pass the announcement's size is answered from Redis, outputs whole."""
    lines = b"".join(b'{"value":%d}\n' % i for i in range(2_000))
    assert len(lines) > ANNOUNCED_OUTPUT_BYTES
    job_id, ending = _announced_end(store, clean_redis, lines, 2_000)
    record, outputs = store.get_with_outputs(job_id, 5_000, ending)
    assert record is not None
    assert outputs is not None
    assert [o["value"] for o in outputs] == list(range(2_000))
    for key in clean_redis.keys(f"job:{job_id}*"):
        clean_redis.delete(key)
    assert store.get_with_outputs(job_id, 5_000, ending) == (None, None)  # it did read Redis

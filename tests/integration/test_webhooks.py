"""Webhooks end to end: a real API and worker deliver signed jobs to real receivers on loopback.

The stack allows loopback (127.0.0.0/8) explicitly, retries quickly (from 0.2 s, at most 1 s apart,
for 3 s) and gives an attempt 6 s, so every retry and every give-up happens within a test. A second
API on another queue, which no worker consumes, holds jobs queued so they can be canceled.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from standardwebhooks import Webhook, WebhookVerificationError

from api import contract
from shared.settings import Settings
from shared.store import CANCELED, JobStore, NewJob, connect, new_job_id
from tests.integration.conftest import OTHER_KEY, Api, error_of
from tests.webhook_receivers import Hanging, Receiver, closed_port_url
from tools.stack import Stack, free_port, http_status, wait_until
from worker.webhooks import Deliverer

SERVER_SECRET = "webhook-test-server-secret"
ATTEMPT_S = 6
RETRY_FOR_S = 3
PER_HOST = 2
# The backlog test's attempt time: sent in order two at a time, its good delivery would wait 75 of them.
HANG_S = 10
RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
SETTINGS = {
    "INFER_WEBHOOK_SECRET": SERVER_SECRET,
    "INFER_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "INFER_WEBHOOK_BACKOFF_S": "0.2",
    "INFER_WEBHOOK_BACKOFF_MAX_S": "1",
    "INFER_WEBHOOK_RETRY_FOR_S": str(RETRY_FOR_S),
    "INFER_WEBHOOK_TIMEOUT_S": str(ATTEMPT_S),
    "INFER_WEBHOOK_PER_HOST": str(PER_HOST),
    "INFER_CHUNK_SIZE": "100",
}


@dataclass(frozen=True)
class Apis:
    """The API whose jobs a worker runs, and one whose jobs stay queued."""

    served: str
    idle: str


@pytest.fixture(scope="module")
def apis(stack_factory: Callable[..., Stack]) -> Apis:
    """Start a worker and an API with webhooks on, and an API on a queue no worker consumes."""
    stack = stack_factory(**SETTINGS, INFER_QUEUE_NAME="webhooks-served")
    stack.start_worker("worker-webhooks", 1)
    served = stack.start_api(free_port())
    idle = stack_factory(**SETTINGS, INFER_QUEUE_NAME="webhooks-idle").start_api(free_port())
    wait_until(lambda: http_status(served + "/readyz") == 200, 60, "a worker consuming the webhooks queue")
    return Apis(served, idle)


@pytest.fixture
def api(apis: Apis, clean_redis: redis.Redis) -> Api:
    """Return a client of the served API, with Redis emptied of jobs."""
    return Api(apis.served)


@pytest.fixture
def idle(apis: Apis, clean_redis: redis.Redis) -> Api:
    """Return a client of the API whose jobs stay queued."""
    return Api(apis.idle)


@pytest.fixture
def good() -> Iterator[Receiver]:
    """Return a receiver that answers 200."""
    receiver = Receiver()
    yield receiver
    receiver.close()


def _secret(api: Api, key: str | None = None) -> str:
    answer = api.request("GET", "/v1/webhooks/secret", **({"key": key} if key else {}))
    assert answer.status_code == 200, answer.text
    secret: str = contract.WebhookSecret.model_validate(answer.json()).secret
    return secret


def _deliveries(api: Api, job_id: str) -> list[dict[str, Any]]:
    answer = api.request("GET", f"/v1/jobs/{job_id}/deliveries")
    assert answer.status_code == 200, answer.text
    contract.DeliveryList.model_validate(answer.json())
    found: list[dict[str, Any]] = answer.json()["deliveries"]
    return found


def _settled(api: Api, job_id: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """Wait until the job has count deliveries, none pending, and return them."""

    def done() -> bool:
        found = _deliveries(api, job_id)
        return len(found) == count and all(d["state"] != "pending" for d in found)

    wait_until(done, timeout, f"{count} settled deliveries of job {job_id}")
    return _deliveries(api, job_id)


def _submit(api: Api, url: str, events: list[str] | None = None, wait: float | None = 30) -> dict[str, Any]:
    hook: dict[str, Any] = {"url": url} if events is None else {"url": url, "events": events}
    answer = api.submit("iris", [RECORD, RECORD], wait=wait, webhook=hook)
    assert answer.status_code in (200, 202), answer.text
    job: dict[str, Any] = answer.json()
    return job


def test_deliveries_are_signed_with_the_keys_secret_and_carry_the_job(
    api: Api, good: Receiver, clean_redis: redis.Redis
) -> None:
    """Started and completed events come signed (checked by the reference library); completed is the Job.

    The deliveries are kept as long as their job: the retention.
    """
    secret = _secret(api)
    assert secret == _secret(api)
    other_secret = _secret(api, OTHER_KEY)
    assert other_secret != secret
    job = _submit(api, good.url(), ["started", "progress", "completed"])
    assert job["status"] == "succeeded"
    (completed,) = good.wait_for(1, 30, "completed")
    (started,) = good.wait_for(1, 30, "started")
    for post in (started, completed):
        Webhook(secret).verify(post.body, post.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(other_secret).verify(post.body, post.headers)
        assert post.headers["content-type"] == "application/json"
    assert orjson.loads(completed.body) == api.request("GET", f"/v1/jobs/{job['id']}").json()
    assert orjson.loads(completed.body)["outputs"][0]["label"] == "setosa"
    assert orjson.loads(started.body)["status"] == "running"
    assert completed.headers["webhook-id"] == f"{job['id']}-completed"
    assert good.posts("progress") == []  # one chunk: its end is the completed event
    deliveries = _settled(api, job["id"], 2, 30)
    assert [(d["event"], d["state"], d["url"]) for d in deliveries] == [
        ("started", "delivered", good.url()), ("completed", "delivered", good.url()),
    ]  # fmt: skip
    assert [[a["status"] for a in d["attempts"]] for d in deliveries] == [[200], [200]]
    kept = clean_redis.ttl(f"job:{job['id']}")
    assert kept > 3600
    for delivery in deliveries:
        for key in (f"webhook:{delivery['id']}", f"webhook:{delivery['id']}:attempts"):
            assert kept - 5 <= clean_redis.ttl(key) <= kept, key


def test_a_csv_upload_names_its_webhook_in_headers_and_gets_progress_by_chunk(
    api: Api, good: Receiver
) -> None:
    """A 250-row CSV in chunks of 100: progress after the first two chunks, then completed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(RECORD)
    writer.writerows([RECORD.values()] * 250)
    headers = {"Content-Type": "text/csv", "Webhook-URL": good.url(), "Webhook-Events": "progress,completed"}
    answer = api.request("POST", "/v1/models/iris/jobs", data=buffer.getvalue(), headers=headers)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    good.wait_for(1, 30, "completed")
    progress = sorted(orjson.loads(p.body)["progress"]["done"] for p in good.wait_for(2, 30, "progress"))
    assert progress == [100, 200]
    assert orjson.loads(good.posts("completed")[0].body)["progress"] == {"done": 250, "total": 250}
    ids = {p.headers["webhook-id"] for p in good.posts()}
    assert ids == {f"{job_id}-progress-1", f"{job_id}-progress-2", f"{job_id}-completed"}


def test_a_500_is_retried_with_the_same_id_until_a_2xx(api: Api) -> None:
    """The receiver answers 500 then 200: two attempts listed, the same webhook-id, both signed."""
    flaky = Receiver([500, 200])
    job = _submit(api, flaky.url())
    (delivery,) = _settled(api, job["id"], 1, 30)
    assert delivery["state"] == "delivered"
    assert [a["status"] for a in delivery["attempts"]] == [500, 200]
    posts = flaky.posts()
    assert [p.headers["webhook-id"] for p in posts] == [delivery["id"], delivery["id"]]
    for post in posts:
        Webhook(_secret(api)).verify(post.body, post.headers)
    flaky.close()


def test_a_redirect_is_not_followed_and_counts_as_a_failure(api: Api, good: Receiver) -> None:
    """A receiver answering 307 to another URL: retried, then failed; the other URL gets nothing."""
    redirect = Receiver([307], location=good.url())
    job = _submit(api, redirect.url())
    (delivery,) = _settled(api, job["id"], 1, 30)
    assert delivery["state"] == "failed"
    assert {a["status"] for a in delivery["attempts"]} == {307}
    assert good.posts() == []
    redirect.close()


def test_a_receiver_that_is_down_is_retried_with_growing_gaps_then_given_up(api: Api) -> None:
    """Connections refused: attempts further and further apart for the retry period, then failed."""
    job = _submit(api, closed_port_url())
    (delivery,) = _settled(api, job["id"], 1, 30)
    assert delivery["state"] == "failed"
    assert delivery["next_attempt_at"] is None
    attempts = delivery["attempts"]
    assert len(attempts) >= 3
    assert all(a["status"] is None and "refused" in a["error"].lower() for a in attempts)
    times = [contract.DeliveryAttempt.model_validate(a).at.timestamp() for a in attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] < gaps[-1]
    # Tried for the retry period from the moment the job ended (the delivery's creation), then given up.
    ended = contract.Job.model_validate(job).completed_at
    assert ended is not None
    assert times[-1] - ended.timestamp() >= RETRY_FOR_S - 0.05


def test_a_hanging_receiver_delays_neither_jobs_nor_cancels_nor_other_deliveries(
    api: Api, idle: Api, good: Receiver
) -> None:
    """While a receiver holds attempts open: jobs answer, cancels answer, other receivers get theirs."""
    hanging = Hanging()
    started = time.monotonic()
    slow = _submit(api, hanging.url(), ["started", "completed"])
    assert slow["status"] == "succeeded"
    assert time.monotonic() - started < 10  # the job's long-poll answered at its end, not a delivery's
    wait_until(lambda: hanging.accepted >= 1, 30, "the hanging receiver's first connection")

    quick = _submit(api, good.url())
    good.wait_for(1, 30, "completed")
    assert orjson.loads(good.posts()[0].body)["id"] == quick["id"]
    # The hanging attempts are still open: the good delivery did not wait for them.
    assert all(d["attempts"] == [] for d in _deliveries(api, slow["id"]))

    queued = _submit(idle, hanging.url(), wait=None)
    assert queued["status"] == "queued"
    started = time.monotonic()
    canceled = idle.request("POST", f"/v1/jobs/{queued['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert time.monotonic() - started < 5
    told = _submit(idle, good.url(), wait=None)
    assert idle.request("POST", f"/v1/jobs/{told['id']}/cancel").status_code == 200
    (post,) = [p for p in good.wait_for(2, 30) if orjson.loads(p.body)["id"] == told["id"]]
    assert orjson.loads(post.body)["status"] == "canceled"

    hung = _settled(api, slow["id"], 2, 60)
    for delivery in hung:
        (attempt,) = delivery["attempts"]  # one attempt outlasts the retry period: given up
        assert delivery["state"] == "failed"
        assert attempt["error"] == f"no answer within {ATTEMPT_S} s"
        assert ATTEMPT_S * 1000 * 0.9 <= attempt["duration_ms"] < ATTEMPT_S * 1000 + 5_000
    assert hanging.most_open <= PER_HOST
    _settled(api, queued["id"], 1, 60)
    hanging.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://0.0.0.0:8080/hook", "unspecified"),
        ("ftp://example.com/hook", "scheme"),
        ("http://nothing.invalid/hook", "does not resolve"),
    ],
)
def test_a_webhook_url_outside_the_allowance_is_refused_naming_its_field(
    api: Api, url: str, reason: str
) -> None:
    """Private, link-local, other loopback, unspecified, non-http and unresolvable URLs: 422, no job."""
    answer = api.submit("iris", [RECORD], webhook={"url": url})
    error = error_of(answer.status_code, answer.json(), answer.text, 422, "invalid_input")
    assert error["details"][0]["field"] == "webhook.url"
    assert reason in error["details"][0]["reason"]
    assert api.request("GET", "/v1/jobs").json()["jobs"] == []


def test_bad_webhook_fields_and_headers_are_refused_by_name(api: Api) -> None:
    """An unknown event, a CSV's private Webhook-URL and a JSON submit's webhook headers: 422 by name."""
    answer = api.submit("iris", [RECORD], webhook={"url": "http://127.0.0.1:1/", "events": ["finished"]})
    error = error_of(answer.status_code, answer.json(), answer.text, 422, "invalid_input")
    assert error["details"][0]["field"] == "webhook.events.0"
    csv_body = ",".join(RECORD) + "\n" + ",".join(str(v) for v in RECORD.values()) + "\n"
    headers = {"Content-Type": "text/csv", "Webhook-URL": "http://192.168.0.1/hook"}
    answer = api.request("POST", "/v1/models/iris/jobs", data=csv_body, headers=headers)
    error = error_of(answer.status_code, answer.json(), answer.text, 422, "invalid_input")
    assert error["details"][0]["field"] == "Webhook-URL"
    answer = api.submit("iris", [RECORD], headers={"Webhook-URL": "http://127.0.0.1:1/"})
    error = error_of(answer.status_code, answer.json(), answer.text, 422, "invalid_input")
    assert error["details"][0]["field"] == "Webhook-URL"
    assert api.request("GET", "/v1/jobs").json()["jobs"] == []


def test_another_keys_job_has_no_deliveries_to_show(api: Api, good: Receiver) -> None:
    """Deliveries are the owner's: another key, or an id never created, gets 404 unknown_job."""
    job = _submit(api, good.url())
    answer = api.request("GET", f"/v1/jobs/{job['id']}/deliveries", key=OTHER_KEY)
    error_of(answer.status_code, answer.json(), answer.text, 404, "unknown_job")
    answer = api.request("GET", f"/v1/jobs/{'0' * 32}/deliveries")
    error_of(answer.status_code, answer.json(), answer.text, 404, "unknown_job")
    assert _deliveries(api, (api.submit("iris", [RECORD], wait=30).json()["id"])) == []


def test_a_backlog_for_one_hanging_host_holds_up_no_other_host(tmp_path: Path) -> None:
    """150 deliveries to a hanging host, then one to another: it goes out while two hang, no more.

    A deliverer of four threads, two a host, on a Redis of its own so no other sender takes part.
    """
    stack = Stack(tmp_path)
    settings = Settings(
        redis_url=stack.start_redis(free_port()), webhook_secret=SERVER_SECRET,
        webhook_allowed_networks=["127.0.0.0/8"], webhook_threads=4, webhook_per_host=2,
        webhook_timeout_s=HANG_S, webhook_retry_for_s=0,
    )  # fmt: skip
    store = JobStore(connect(settings), settings)
    hanging, good = Hanging(), Receiver()
    for url in [hanging.url()] * 150 + [good.url()]:
        job = new_job_id()
        hook = orjson.dumps({"url": url, "events": ["completed"]}).decode()
        store.create(
            NewJob(id=job, owner="o", model="iris", version="1.0.0", total=1, chunks=1, webhook=hook)
        )
        assert store.end(job, "iris", CANCELED, "canceled", "Canceled by the test.") == "ended"
    stop = Deliverer(store, settings).start()
    try:
        (post,) = good.wait_for(1, HANG_S)
        assert orjson.loads(post.body)["status"] == "canceled"
        assert hanging.open_now == 2  # the first two still hang: the good one did not wait for them
        assert hanging.most_open == 2
    finally:
        stop.set()
        hanging.close()
        good.close()
        stack.stop()

"""Bulk jobs: CSV bodies split into chunks across workers, progress, cancel and streamed outputs."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from tests.integration.conftest import Api
from tools.stack import free_port, wait_until

CSV = {"Content-Type": "text/csv"}


def _csv(features: list[str], rows: np.ndarray) -> bytes:
    buffer = io.StringIO()
    np.savetxt(buffer, rows, delimiter=",", header=",".join(features), comments="", fmt="%.6g")
    return buffer.getvalue().encode()


@pytest.fixture(scope="module")
def chunked_base(stack_factory: Any, api_base: str) -> str:
    """Start an API that splits jobs into chunks of 100 records, served by the session's worker."""
    return stack_factory(INFER_CHUNK_SIZE="100", INFER_INLINE_LIMIT="50").start_api(free_port())


@pytest.fixture
def chunked(chunked_base: str, clean_redis: redis.Redis) -> Api:
    """Return a client of the chunking API, with Redis emptied of jobs."""
    return Api(chunked_base)


def test_a_csv_job_in_many_chunks_streams_every_output_in_input_order(chunked: Api, registry: Any) -> None:
    """A 1,050-row CSV job becomes 11 chunks whose outputs stream back in row order, as NDJSON and CSV."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rows = np.vstack([data.data] * 2)[:1050]
    features = registry.get("breast-cancer").features
    shuffled = [features[i] for i in np.random.default_rng(1).permutation(len(features))]
    body = _csv(shuffled, rows[:, [features.index(f) for f in shuffled]])  # columns in any order
    path = "/v1/models/breast-cancer/jobs"
    job = chunked.request("POST", path, data=body, headers={**CSV, "Prefer": "wait=60"}).json()
    assert job.get("status") == "succeeded", job
    assert job["progress"] == {"done": 1050, "total": 1050}
    assert job["outputs"] is None  # over the inline limit: only the stream has them
    lines = chunked.request("GET", job["urls"]["outputs"]).content.splitlines()
    labels = [orjson.loads(line)["label"] for line in lines]
    expected = np.asarray(data.target_names)[np.concatenate([data.target] * 2)[:1050]]
    assert len(labels) == 1050
    assert np.mean(np.asarray(labels) == expected) > 0.95
    table = chunked.request("GET", job["urls"]["outputs"], headers={"Accept": "text/csv"}).text.splitlines()
    assert table[0] == "label,probability_benign,probability_malignant"
    assert [r.split(",")[0] for r in table[1:]] == labels


def test_a_text_csv_job_is_predicted(chunked: Api) -> None:
    """A text model takes a CSV with one text column, quoted as CSV quotes it."""
    body = b'text\n"Dear winner, claim your prize, send the fee today"\n"Lunch at noon, see you, Ana"\n'
    path = "/v1/models/scam-email/jobs"
    job = chunked.request("POST", path, data=body, headers={**CSV, "Prefer": "wait=30"}).json()
    assert [o["label"] for o in job["outputs"]] == ["scam", "ordinary"]


@pytest.mark.parametrize(
    ("body", "index", "field"),
    [
        (b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,x,3,4\n", 1, "sepal_width"),
        (b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,3\n", 1, None),
        (b"sepal_length,sepal_width,petal_length,petal_width\n1,2,nan,4\n", 0, "petal_length"),
        (b"sepal_length,sepal_width,petal_length,petal_width\n1,2,1e39,4\n", 0, "petal_length"),
        (b"sepal_length,sepal_width,petal_length\n1,2,3\n", None, "petal_width"),
        (b"sepal_length,sepal_width,petal_length,petal_width\n", None, "inputs"),
    ],
)
def test_bad_csv_rows_get_422_naming_row_and_column_and_enqueue_nothing(
    api: Api, clean_redis: redis.Redis, body: bytes, index: int | None, field: str | None
) -> None:
    """A bad cell, a short row, a missing column or no rows is refused with its row and column."""
    response = api.request("POST", "/v1/models/iris/jobs", data=body, headers=CSV)
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail.get("index") == index
    assert detail["field"] == field
    assert clean_redis.llen("inference") == 0
    assert not list(clean_redis.scan_iter("job:*"))


def test_cancel_stops_a_running_bulk_job_at_its_next_chunk(
    stack_factory: Any, clean_redis: redis.Redis
) -> None:
    """A bulk job canceled while a worker predicts it ends canceled part-done; no chunk counts after."""
    stack = stack_factory(INFER_CHUNK_SIZE="10", INFER_QUEUE_NAME="cancel-running")
    api = Api(stack.start_api(free_port()))
    total = 5_000  # 500 chunks: many more than a worker predicts between two looks of the test
    body = _csv(["sepal_length", "sepal_width", "petal_length", "petal_width"], np.ones((total, 4)))
    job_id = api.request("POST", "/v1/models/iris/jobs", data=body, headers=CSV).json()["id"]
    assert clean_redis.hlen(f"job:{job_id}:in") == total // 10  # no worker consumes this queue yet
    stack.start_worker("worker-cancel-running", 1)

    def done() -> int:
        return int(api.request("GET", f"/v1/jobs/{job_id}").json()["progress"]["done"])

    wait_until(lambda: done() > 0, 60, "the worker's first chunk")
    canceled = api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    stopped_at = canceled.json()["progress"]["done"]
    assert 0 < stopped_at < total
    assert not clean_redis.exists(f"job:{job_id}:in")  # the chunks not yet predicted are dropped
    # One process takes the queue in order: once a job sent after the cancel has run, every chunk
    # message of the canceled job has been taken, the one in hand at the cancel included.
    assert api.submit("iris", [[1, 2, 3, 4]], wait=60).json()["status"] == "succeeded"
    job = api.request("GET", f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled"
    assert job["progress"] == {"done": stopped_at, "total": total}


def _no_job_kept(clean_redis: redis.Redis) -> None:
    assert clean_redis.llen("inference") == 0
    assert not list(clean_redis.scan_iter("job:*"))


@pytest.mark.parametrize(
    ("model", "record"),
    [
        # Beyond the schema's maximum of 3.4e38, yet a finite float32: CSV took it, JSON did not.
        ("iris", {"sepal_length": 3.401e38, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}),
        ("scam-email", {"text": "a" * 20_001}),  # over the published maxLength
    ],
)
def test_a_record_the_schema_refuses_gets_the_same_422_as_json_and_as_csv(
    api: Api, clean_redis: redis.Redis, model: str, record: dict[str, Any]
) -> None:
    """The same bad record is refused with the same error body, whether sent as JSON or as a CSV row."""
    as_json = api.submit(model, [record])
    row = ",".join(repr(v) if isinstance(v, float) else v for v in record.values())
    body = f"{','.join(record)}\n{row}\n".encode()
    as_csv = api.request("POST", f"/v1/models/{model}/jobs", data=body, headers=CSV)
    assert as_json.status_code == as_csv.status_code == 422, as_csv.text[:300]
    assert as_csv.json() == as_json.json()
    assert as_csv.json()["error"]["details"][0]["index"] == 0
    _no_job_kept(clean_redis)


IRIS_HEADER = b"sepal_length,sepal_width,petal_length,petal_width"


@pytest.mark.parametrize(
    ("model", "body"),
    [
        ("iris", IRIS_HEADER + b"\r5.1,3.5,1.4,0.2\r6.2,2.9,4.3,1.3\r"),  # bare CR: old Mac exports
        ("iris", b"\xef\xbb\xbf" + IRIS_HEADER + b"\r\n5.1,3.5,1.4,0.2\r\n6.2,2.9,4.3,1.3\r\n"),  # Excel
        ("scam-email", b'\xef\xbb\xbftext\r"Dear winner,\r\nclaim your prize"\rLunch at noon\r'),
    ],
    ids=["bare CR", "UTF-8 BOM and CRLF", "text with BOM and bare CR"],
)
def test_csv_as_spreadsheets_export_it_is_accepted(api: Api, model: str, body: bytes) -> None:
    """A UTF-8 BOM, bare CR or CRLF line endings and quoted line breaks make a CSV job like any other."""
    response = api.request("POST", f"/v1/models/{model}/jobs", data=body, headers=CSV)
    assert response.status_code == 202, response.text[:300]
    assert response.json()["progress"]["total"] == 2


def test_a_text_cell_over_128_kb_is_a_422_naming_row_and_column(api: Api, clean_redis: redis.Redis) -> None:
    """A cell longer than Python's csv field limit is judged by the model's schema: a 422, never a 500."""
    body = b"text\nLunch at noon\n" + b"a" * 140_000 + b"\n"
    response = api.request("POST", "/v1/models/scam-email/jobs", data=body, headers=CSV)
    assert response.status_code == 422, response.text[:300]
    assert [(d["index"], d["field"]) for d in response.json()["error"]["details"]] == [(1, "text")]
    _no_job_kept(clean_redis)


def test_a_csv_job_refused_or_found_by_a_retry_leaves_no_input_chunk_behind(
    api: Api, clean_redis: redis.Redis
) -> None:
    """A one-chunk CSV job answered 409, or found again by its Idempotency-Key, keeps no stored inputs."""
    body = b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
    first = api.request("POST", "/v1/models/iris/jobs", data=body, headers={**CSV, "Idempotency-Key": "k"})
    assert first.status_code == 202
    job_id = first.json()["id"]
    wait_until(lambda: api.request("GET", f"/v1/jobs/{job_id}").json()["status"] == "succeeded", 30, "done")
    again = api.request("POST", "/v1/models/iris/jobs", data=body, headers={**CSV, "Idempotency-Key": "k"})
    assert again.json()["id"] == job_id
    other = body + b"6.2,2.9,4.3,1.3\n"
    refused = api.request("POST", "/v1/models/iris/jobs", data=other, headers={**CSV, "Idempotency-Key": "k"})
    assert refused.status_code == 409
    assert list(clean_redis.scan_iter("job:*:in")) == []

"""Request bodies: a bulk CSV has its own limit; gzip bodies are inflated within it, and bombs refused."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from tests.integration.conftest import Api
from tools.stack import Stack, free_port

HEADER = b"sepal_length,sepal_width,petal_length,petal_width\n"
ROW = b"6.2,2.9,4.3,1.3\n"
JSON_LIMIT = 20_000
BULK_LIMIT = 200_000


@pytest.fixture(scope="module")
def limited(stack_factory: Callable[..., Stack], api_base: str) -> Api:
    """Start an API whose JSON bodies may be 20 KB and CSV bodies 200 KB, served by the session's worker."""
    stack = stack_factory(INFER_MAX_BODY_BYTES=str(JSON_LIMIT), INFER_MAX_BULK_BODY_BYTES=str(BULK_LIMIT))
    return Api(stack.start_api(free_port()))


def _post(api: Api, body: bytes, content_type: str, **headers: str) -> Any:
    sent = {"Content-Type": content_type, **headers}
    return api.request("POST", "/v1/models/iris/jobs", data=body, headers={**sent, "Prefer": "wait=20"})


def _nothing_stored(clean_redis: redis.Redis) -> None:
    assert [k for k in clean_redis.scan_iter("job:*")] == []


def test_a_csv_larger_than_the_json_limit_is_taken_within_its_own(
    limited: Api, clean_redis: redis.Redis
) -> None:
    """A 100 KB CSV passes where a JSON body of that size is 413 before it is read."""
    rows = 6_000
    csv_body = HEADER + ROW * rows
    assert JSON_LIMIT < len(csv_body) < BULK_LIMIT
    job = _post(limited, csv_body, "text/csv").json()
    assert job["status"] == "succeeded"
    assert job["progress"] == {"done": rows, "total": rows}
    before = sorted(clean_redis.scan_iter("job:*"))
    big_json = orjson.dumps({"inputs": [[6.2, 2.9, 4.3, 1.3]] * 2_000})
    assert len(big_json) > JSON_LIMIT
    refused = _post(limited, big_json, "application/json")
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "payload_too_large"
    assert sorted(clean_redis.scan_iter("job:*")) == before


def test_gzip_bodies_are_inflated_csv_and_json_alike(limited: Api) -> None:
    """A gzip CSV of more rows than its compressed size suggests, and a gzip JSON job, both succeed."""
    csv_body = HEADER + ROW * 10_000  # 160 KB inflated, a few hundred bytes sent
    job = _post(limited, gzip.compress(csv_body), "text/csv", **{"Content-Encoding": "gzip"}).json()
    assert job["progress"] == {"done": 10_000, "total": 10_000}
    assert job["status"] == "succeeded"
    json_body = gzip.compress(orjson.dumps({"inputs": [[6.2, 2.9, 4.3, 1.3]]}))
    job = _post(limited, json_body, "application/json", **{"Content-Encoding": "gzip"}).json()
    assert job["status"] == "succeeded"
    assert job["outputs"][0]["label"] == "versicolor"


@pytest.mark.parametrize(
    ("body", "encoding", "status", "code"),
    [
        (b"\x1f\x8b\x08\x00not gzip at all", "gzip", 400, "invalid_json"),
        (gzip.compress(HEADER + ROW * 100)[:-12], "gzip", 400, "invalid_json"),  # cut short
        (gzip.compress(HEADER + ROW * 20_000), "gzip", 413, "payload_too_large"),  # 320 KB from ~1 KB
        (gzip.compress(HEADER + ROW * 3_000_000), "gzip", 413, "payload_too_large"),  # 48 MB from 100 KB
        (HEADER + ROW, "br", 415, "unsupported_media_type"),
    ],
    ids=["corrupt", "truncated", "over-the-limit-once-inflated", "bomb", "unknown-encoding"],
)
def test_a_bad_or_oversized_compressed_body_is_refused_and_nothing_is_stored(
    limited: Api, clean_redis: redis.Redis, body: bytes, encoding: str, status: int, code: str
) -> None:
    """Corrupt or cut gzip is 400, inflating past the limit 413, another encoding 415: nothing kept."""
    answer = _post(limited, body, "text/csv", **{"Content-Encoding": encoding})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["message"]
    _nothing_stored(clean_redis)

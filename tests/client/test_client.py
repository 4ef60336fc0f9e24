"""The Python client against the real service: predict, bulk jobs, cancel, typed errors, safe retries."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pandas as pd
import pytest
from inference_client import Client, Conflict, InvalidInput, Job, NotFound, Unauthorized

from tests.client.conftest import KEY, breast_cancer_csv

IRIS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.2, "sepal_width": 2.9, "petal_length": 4.3, "petal_width": 1.3},
]


def test_predict_iris_dicts_returns_one_output_per_record(client: Client) -> None:
    """predict() of dicts returns the outputs in input order, labels included."""
    outputs = client.predict("iris", IRIS, timeout=30)
    assert [o["label"] for o in outputs] == ["setosa", "versicolor"]
    assert set(outputs[0]["probabilities"]) == {"setosa", "versicolor", "virginica"}


def test_predict_iris_dataframe_returns_a_dataframe(client: Client) -> None:
    """predict() of a DataFrame returns a DataFrame with nested fields flattened."""
    frame = pd.DataFrame(IRIS)
    result = client.predict("iris", frame, timeout=30)
    assert isinstance(result, pd.DataFrame)
    assert list(result["label"]) == ["setosa", "versicolor"]
    assert "probabilities.setosa" in result.columns


def test_models_describe_features_in_order(client: Client) -> None:
    """models() lists the examples and model() gives the feature order arrays follow."""
    assert {"iris", "breast-cancer", "scam-email"} <= {m.name for m in client.models()}
    assert client.model("iris").features == ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_submit_wait_outputs_streams_a_20000_row_job(client: Client) -> None:
    """A 20,000-row job goes as CSV; wait() ends it and outputs() streams every output in order."""
    frame = pd.read_csv(io.BytesIO(breast_cancer_csv(20_000)))
    job = client.submit("breast-cancer", frame)
    assert job.progress.total == 20_000
    job.wait(timeout=50)
    assert job.status == "succeeded"
    assert "outputs" not in job.data or job.data["outputs"] is None  # over the inline limit
    count = sum(1 for output in job.outputs() if output["label"] in ("malignant", "benign"))
    assert count == 20_000
    lists = frame.head(3).values.tolist()
    assert len(client.predict("breast-cancer", lists, timeout=30)) == 3


def test_many_rows_as_lists_go_as_csv_in_feature_order(client: Client) -> None:
    """Over 1,000 records given as lists are sent as CSV under the model's feature names."""
    rows = [[5.1, 3.5, 1.4, 0.2]] * 1500
    outputs = client.predict("iris", rows, timeout=30)
    assert len(outputs) == 1500
    assert {o["label"] for o in outputs} == {"setosa"}


def test_cancel_ends_a_running_job_and_a_second_cancel_conflicts(api_base: str, clean_redis: Any) -> None:
    """cancel() of a large job ends it canceled; cancelling it again is a Conflict."""
    client = Client(api_base, KEY)
    job = client.submit_csv("breast-cancer", breast_cancer_csv(100_000))
    job.cancel()
    assert job.status == "canceled"
    assert job.refresh().status == "canceled"
    with pytest.raises(Conflict) as caught:
        job.cancel()
    assert caught.value.status == 409


def test_errors_are_typed_and_carry_the_body(client: Client, api_base: str) -> None:
    """422 names the record and field; a wrong key is Unauthorized; unknown names are NotFound."""
    with pytest.raises(InvalidInput) as caught:
        client.submit("iris", [IRIS[0], {**IRIS[1], "sepal_length": "wide"}])
    error = caught.value
    assert (error.status, error.code) == (422, "invalid_input")
    assert any(d.get("index") == 1 and d.get("field") == "sepal_length" for d in error.details)
    with Client(api_base, "not-a-key") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.models()
    assert (denied.value.status, denied.value.code) == (401, "unauthorized")
    with pytest.raises(NotFound) as missing:
        client.model("no-such-model")
    assert missing.value.code == "unknown_model"
    with pytest.raises(NotFound):
        client.job("0" * 32)


class _DropsFirstAnswer(httpx.BaseTransport):
    """Passes requests on, but loses the answer of the first submit after the service got it."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/jobs"):
            self.keys.append(request.headers.get("Idempotency-Key"))
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection lost after the request was sent", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_retry_after_a_lost_answer_makes_no_second_job(api_base: str, clean_redis: Any) -> None:
    """A network error after the submit reached the service is retried with the same key: one job."""
    transport = _DropsFirstAnswer()
    with Client(api_base, KEY, transport=transport) as client:
        job = client.submit("iris", IRIS)
        assert len(transport.keys) == 2
        assert transport.keys[0] == transport.keys[1] is not None
        assert [j.id for j in client.jobs()] == [job.id]
        second = client.submit("iris", IRIS)  # a new call is a new key: a new job
        assert second.id != job.id
        assert len(list(client.jobs())) == 2


def test_jobs_follow_next_cursor_and_filter(client: Client) -> None:
    """jobs() walks every page newest first, stops at limit, and filters by model and status."""
    made = [client.submit("iris", IRIS[:1]).wait(30) for _ in range(3)]
    client.predict("breast-cancer", [[1.0] * 30], timeout=30)
    listed = list(client.jobs(model="iris", page=1))
    assert [j.id for j in listed] == [j.id for j in reversed(made)]
    assert all(isinstance(j, Job) for j in listed)
    assert len(list(client.jobs(limit=2, page=1))) == 2
    assert len(list(client.jobs(status="succeeded"))) == 4

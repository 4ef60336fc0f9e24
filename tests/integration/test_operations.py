"""Operations routes, the model routes and the documentation, against the real API."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from api import contract
from shared.errors import ErrorCode
from shared.store import JobStatus
from tests.integration.conftest import Api


def test_healthz_and_readyz_need_no_key(api: Api) -> None:
    """Liveness is 200; readiness is 200 with a consuming worker; neither needs a key."""
    assert api.request("GET", "/healthz", key=None).json() == {"status": "ok"}
    ready = api.request("GET", "/readyz", key=None)
    assert ready.status_code == 200
    assert ready.json()["workers"] >= 1


def test_metrics_are_prometheus_text_with_request_and_queue_figures(api: Api) -> None:
    """The metrics count answered requests and report the queue depth."""
    api.submit("iris", [[6.2, 2.9, 4.3, 1.3]], wait=10)
    text = api.request("GET", "/metrics", key=None).text
    assert 'infer_jobs_submitted_total{model="iris"}' in text
    assert 'infer_http_requests_total{method="POST",route="/v1/models/<name>/jobs",status="200"}' in text
    assert 'infer_queue_depth{queue="inference"} 0.0' in text


def test_models_list_and_describe_each_version(api: Api) -> None:
    """The model routes list the examples and give each one's schemas, labels and digest."""
    listed = api.request("GET", "/v1/models").json()["models"]
    assert [m["name"] for m in listed] == ["breast-cancer", "iris", "scam-email"]
    iris = api.request("GET", "/v1/models/iris").json()
    assert iris["labels"] == ["setosa", "versicolor", "virginica"]
    assert iris["input_schema"]["required"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert iris["runtime"] == "onnx"
    assert len(iris["sha256"]) == 64
    assert api.request("GET", "/v1/models/iris/versions/1.0.0").json() == iris
    scam = api.request("GET", "/v1/models/scam-email").json()
    assert scam["input_schema"]["properties"]["text"]["type"] == "string"


def test_openapi_document_is_valid_and_describes_every_route(api: Api) -> None:
    """/openapi.json is OpenAPI 3.1 whose Job schema matches a real job."""
    spec = api.request("GET", "/openapi.json", key=None).json()
    assert spec["openapi"] == "3.1.0"
    assert {"/v1/models/{name}/jobs", "/v1/jobs/{job_id}", "/v1/jobs", "/readyz"} <= set(spec["paths"])
    job = api.submit("iris", [[6.2, 2.9, 4.3, 1.3]], wait=10).json()
    schemas = spec["components"]["schemas"]
    resolver_doc = {"components": {"schemas": schemas}, **schemas["Job"]}
    jsonschema.validate(job, resolver_doc)


def test_real_answers_are_the_contract_models(api: Api) -> None:
    """What the running API answers validates against the pydantic models the document is made from."""
    accepted = api.submit("iris", [[6.2, 2.9, 4.3, 1.3], {"sepal_length": 5.1, "sepal_width": 3.5,
                          "petal_length": 1.4, "petal_width": 0.2}])  # fmt: skip
    job = contract.Job.model_validate(accepted.json())
    assert job.status == JobStatus.QUEUED
    finished = contract.Job.model_validate(api.wait_job(job.id))
    assert finished.status == JobStatus.SUCCEEDED
    assert finished.outputs is not None
    assert len(finished.outputs) == 2
    contract.JobList.model_validate(api.request("GET", "/v1/jobs?limit=1").json())
    canceled = api.request("POST", f"/v1/jobs/{job.id}/cancel")
    assert contract.Error.model_validate(canceled.json()).error.code == ErrorCode.CONFLICT
    contract.ModelList.model_validate(api.request("GET", "/v1/models").json())
    for name in ("iris", "breast-cancer", "scam-email"):
        contract.Model.model_validate(api.request("GET", f"/v1/models/{name}").json())
    contract.Health.model_validate(api.request("GET", "/healthz", key=None).json())
    contract.Readiness.model_validate(api.request("GET", "/readyz", key=None).json())
    for response in (
        api.request("GET", f"/v1/jobs/{'0' * 32}"),
        api.request("GET", "/v1/jobs", key="wrong"),
        api.submit("iris", [[1, 2]]),
        api.request("DELETE", "/v1/models"),
    ):
        contract.Error.model_validate(response.json())


def _chromium(profile: str, *args: str) -> str:
    """Run headless Chromium with a fresh profile and return what it printed."""
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1280,1600", *args],
        capture_output=True, text=True, timeout=90, check=True,
    ).stdout  # fmt: skip


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is installed by make test")
def test_docs_page_renders_every_operation_in_headless_chromium(api: Api, tmp_path: Path) -> None:
    """/docs, run by a real browser, draws every operation with Swagger UI, and the submit one's statuses."""
    # Virtual time does not pass while a fetch is pending, so the budget is spent after the files and the
    # document arrived; Swagger UI's onComplete marks the body once it has drawn them.
    page = api.base + "/docs#/jobs/submitJob"
    dom = _chromium(str(tmp_path / "dom"), "--virtual-time-budget=10000", "--dump-dom", page)
    assert 'data-rendered="true"' in dom
    spec = api.request("GET", "/openapi.json", key=None).json()
    for item in spec["paths"].values():
        for operation in item.values():
            assert f'id="operations-{operation["tags"][0]}-{operation["operationId"]}"' in dom
    assert "Inference service" in dom
    # The deep link opened the submit operation: its statuses are drawn with what each means.
    submit = spec["paths"]["/v1/models/{name}/jobs"]["post"]["responses"]
    for status in ("202", "413", "422"):
        first_words = submit[status]["description"].split("(")[0].split("`")[0].strip()
        assert first_words in dom, status
    assert "http" not in api.request("GET", "/docs").text, "the page loads nothing from elsewhere"
    screenshot = tmp_path / "docs.png"
    _chromium(str(tmp_path / "shot"), "--virtual-time-budget=10000", f"--screenshot={screenshot}", page)
    assert screenshot.stat().st_size > 20_000, screenshot

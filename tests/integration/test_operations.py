"""Operations routes, the model routes and the documentation, against the real API."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import jsonschema
import pytest

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


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is installed by make test")
def test_docs_page_renders_every_operation_in_headless_chromium(api: Api) -> None:
    """The /docs page, run by a real browser, lists every operation of the OpenAPI document."""
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", api.base + "/docs"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    spec = api.request("GET", "/openapi.json", key=None).json()
    for item in spec["paths"].values():
        for operation in item.values():
            assert f'id="{operation["operationId"]}"' in dom
    assert "Inference service 1.0.0" in dom

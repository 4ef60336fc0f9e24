"""The contract's models and the OpenAPI document made from them, against the views the routes answer with."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import contract, server
from api.app import create_app
from api.openapi import openapi_document
from api.routes.jobs import MAX_LIST_LIMIT
from api.validation import SubmitBody
from api.views import job_view, model_summary, model_view
from shared import errors
from shared.errors import ErrorCode, ServiceError
from shared.registry import Registry
from shared.settings import Settings
from shared.store import STATUSES, TERMINAL, JobRecord, JobStatus, new_job_id

JOB_ID = new_job_id(1_000.0)
# A port nothing listens on: the app is built and answers, Redis never does.
NO_REDIS = "redis://127.0.0.1:1/0"


def _record(status: str, **extra: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "id": JOB_ID, "owner": "o", "model": "iris", "version": "1.0.0", "status": status,
        "created_at": 1_000.0, "started_at": 1_000.5, "completed_at": 1_001.0, "total": 2, "done": 2,
        "chunks": 1, "predict_ms": 0.25, "error": None,
    }  # fmt: skip
    fields.update(extra)
    return JobRecord(**fields)


def _views() -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield a job view of every shape the routes answer with."""
    unstarted = {"started_at": None, "completed_at": None, "done": 0}
    yield "queued", job_view(_record("queued", **unstarted))
    yield "running", job_view(_record("running", completed_at=None, done=1))
    probabilities = {"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0}
    classified = [{"label": "setosa", "probabilities": probabilities}] * 2
    yield "classified", job_view(_record("succeeded"), classified)
    yield "regressed", job_view(_record("succeeded"), [{"value": 3.2}, {"value": -1}])
    yield "too many to inline", job_view(_record("succeeded"), None)
    failure = {"code": "prediction_failed", "message": "The model raised an error."}
    yield "failed", job_view(_record("failed", error=failure))
    canceled = {"code": "canceled", "message": "The job was canceled by its owner."}
    yield "canceled", job_view(_record("canceled", error=canceled))
    expired = {"code": "expired", "message": "The job was not started before its deadline."}
    yield "expired", job_view(_record("expired", started_at=None, error=expired))


@pytest.mark.parametrize(("shape", "view"), list(_views()), ids=[shape for shape, _ in _views()])
def test_every_job_view_is_a_job_of_the_contract(shape: str, view: dict[str, Any]) -> None:
    """Each shape of job_view validates against Job, with no field the model lacks and none missing."""
    # The models refuse a field they do not declare, and declare no default for any field of a job.
    job = contract.Job.model_validate(view)
    assert set(view) == set(contract.Job.model_fields), shape
    assert job.status in STATUSES
    contract.JobList.model_validate({"jobs": [view], "next_cursor": JOB_ID})


def test_model_views_are_models_of_the_contract(registry: Registry) -> None:
    """Every published example's summary and description validate against ModelSummary and Model."""
    summaries = []
    for manifest in registry.all():
        versions = registry.versions(manifest.name)
        view = model_view(manifest, versions)
        contract.Model.model_validate(view)
        assert set(view) == set(contract.Model.model_fields)
        summaries.append(model_summary(manifest, versions))
    contract.ModelList.model_validate({"models": summaries})


def _error_classes(base: type[ServiceError] = ServiceError) -> Iterator[type[ServiceError]]:
    yield base
    for sub in base.__subclasses__():
        yield from _error_classes(sub)


def test_error_codes_are_the_codes_of_the_error_classes_and_the_http_server() -> None:
    """Every code the classes and the HTTP server answer with is an ErrorCode and every ErrorCode is one."""
    classes = list(_error_classes())
    server_names = set(re.findall(r"_body\(ErrorCode\.([A-Z_]+)", inspect.getsource(server)))
    assert server_names <= set(ErrorCode.__members__), server_names
    server_codes = {ErrorCode[name] for name in server_names}
    assert {cls.code for cls in classes} | server_codes == set(ErrorCode)
    for cls in classes:
        assert isinstance(cls.code, ErrorCode), cls
        detail = [{"index": 3, "field": "sepal_length", "reason": "missing"}, {"field": None, "reason": "x"}]
        contract.Error.model_validate(cls("One plain sentence.", detail).body())
    assert errors.InvalidInput.code == "invalid_input"


def test_job_statuses_are_one_enum() -> None:
    """The store's status names are the JobStatus members, so the old names keep working."""
    assert tuple(JobStatus) == STATUSES
    assert {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED} == TERMINAL
    assert JobStatus.QUEUED == "queued"
    assert f"{JobStatus.CANCELED}" == "canceled"


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    """Return a test client of an app whose Redis never answers and whose limits are not the defaults."""
    settings = Settings(
        redis_url=NO_REDIS, registry_path=tmp_path, max_records=1234, max_body_bytes=4321,
        inline_limit=77, max_wait_s=9, api_key_hashes=[], broker_timeout_s=0.2,
    )  # fmt: skip
    return create_app(settings).test_client()


def test_health_and_refused_readiness_answer_with_contract_bodies(client: FlaskClient) -> None:
    """/healthz answers a Health; /readyz without Redis answers 503 with an Error."""
    contract.Health.model_validate(client.get("/healthz").get_json())
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert contract.Error.model_validate(ready.get_json()).error.code == ErrorCode.UNAVAILABLE


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _resolve(document: dict[str, Any], node: Any) -> Iterator[str]:
    """Yield every $ref in a part of the document."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _resolve(document, value)
    elif isinstance(node, list):
        for value in node:
            yield from _resolve(document, value)


def test_openapi_document_is_made_from_the_models_and_the_settings(client: FlaskClient) -> None:
    """The served document has the models' schemas, every $ref resolves, and its limits are the settings'."""
    document = client.get("/openapi.json").get_json()
    assert document == openapi_document(_settings_of(client))
    schemas = document["components"]["schemas"]
    for ref in set(_resolve(document, document)):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert schemas["JobStatus"]["enum"] == [s.value for s in JobStatus]
    assert schemas["ErrorCode"]["enum"] == [c.value for c in ErrorCode]
    assert set(schemas["Job"]["required"]) == set(contract.Job.model_fields)
    assert set(schemas["SubmitBody"]["properties"]) == set(SubmitBody.model_fields)
    inputs = schemas["SubmitBody"]["properties"]["inputs"]
    assert (inputs["minItems"], inputs["maxItems"]) == (1, 1234)
    assert {branch["type"] for branch in inputs["items"]["anyOf"]} == {"object", "array"}
    # Model is typed as itself: its own properties, not an allOf a generator would drop.
    assert "allOf" not in schemas["Model"]
    assert "input_schema" in schemas["Model"]["properties"]
    assert "additionalProperties" not in schemas["Job"]
    assert schemas["SubmitBody"]["additionalProperties"] is False
    text = str(document)
    for limit in ("1,234 records", "4,321 bytes", "The inline limit is 77", "at most 9 seconds"):
        assert limit in text, limit
    listing = document["paths"]["/v1/jobs"]["get"]["parameters"]
    assert {p["name"]: p["schema"].get("maximum") for p in listing}["limit"] == MAX_LIST_LIMIT


def _settings_of(client: FlaskClient) -> Settings:
    """Return the settings of the app behind a test client."""
    settings: Settings = client.application.extensions["infer"].settings
    return settings


def test_every_operation_declares_what_tools_need(client: FlaskClient) -> None:
    """Each operation has an id and a tag, a described answer for every status, and the headers of 405/429."""
    document = client.get("/openapi.json").get_json()
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids))
    tags = {tag["name"] for tag in document["tags"]}
    for path, method, operation in _operations(document):
        label = f"{method.upper()} {path}"
        assert set(operation["tags"]) <= tags, label
        responses = operation["responses"]
        assert "405" in responses, label
        for status, answer in responses.items():
            # A sentence saying what the status means, not a bare code like "E401".
            assert len(answer["description"].split()) >= 5, label
            if status.startswith(("4", "5")):
                assert answer["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
        assert "Retry-After" in responses.get("429", {"headers": {"Retry-After": {}}})["headers"], label
        assert "Allow" in responses["405"]["headers"], label
        if path.startswith("/v1"):
            assert {"401", "429"} <= set(responses), label
            assert operation["security"] == [{"bearer": []}], label
    submit = document["paths"]["/v1/models/{name}/jobs"]["post"]
    assert {"400", "404", "409", "413", "415", "422", "429", "503"} <= set(submit["responses"])
    assert set(submit["requestBody"]["content"]) == {"application/json", "text/csv"}
    for status in ("200", "202"):
        links = submit["responses"][status]["links"]
        assert {link["operationId"] for link in links.values()} == {"getJob", "cancelJob", "getJobOutputs"}
        assert all(link["operationId"] in ids for link in links.values())
        assert all(link["parameters"] == {"job_id": "$response.body#/id"} for link in links.values())
    model = document["paths"]["/v1/models/{name}"]["get"]["responses"]["200"]
    assert model["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Model"}

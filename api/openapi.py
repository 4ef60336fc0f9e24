"""The OpenAPI 3.1 description of the HTTP contract, built once per app."""

from __future__ import annotations

from typing import Any

_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_NUMBER_OR_NULL = {"type": ["number", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "model", "version", "status", "created_at", "progress", "urls"],
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string"},
            "version": {"type": "string"},
            "status": {"enum": ["queued", "running", "succeeded", "failed", "canceled", "expired"]},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _NULLABLE_TIME,
            "completed_at": _NULLABLE_TIME,
            "progress": {
                "type": "object",
                "required": ["done", "total"],
                "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
            },
            "outputs": {"type": ["array", "null"], "items": {"type": "object"}},
            "error": {
                "type": ["object", "null"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
            "metrics": {
                "type": "object",
                "properties": {
                    "queue_ms": _NUMBER_OR_NULL,
                    "predict_ms": _NUMBER_OR_NULL,
                    "total_ms": _NUMBER_OR_NULL,
                },
            },
            "urls": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "ModelSummary": {
        "type": "object",
        "required": ["name", "version", "versions", "description", "task"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "description": {"type": "string"},
            "task": {"enum": ["classification", "regression"]},
            "runtime": {"enum": ["onnx", "sklearn"]},
        },
    },
    "Model": {
        "allOf": [{"$ref": "#/components/schemas/ModelSummary"}],
        "type": "object",
        "required": ["input_schema", "output_schema", "deterministic", "created_at", "sha256"],
        "properties": {
            "input_schema": {"type": "object"},
            "output_schema": {"type": "object"},
            "labels": {"type": ["array", "null"], "items": {"type": "string"}},
            "features": {"type": "array", "items": {"type": "string"}},
            "deterministic": {"type": "boolean"},
            "created_at": {"type": "string"},
            "sha256": {"type": "string"},
        },
    },
    "Submission": {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {"oneOf": [{"type": "object"}, {"type": "array"}]},
            },
            "version": {"type": "string"},
            "deadline_s": {"type": "number", "exclusiveMinimum": 0},
        },
    },
    "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_WAIT_QUERY = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"type": "number", "minimum": 0},
    "description": "Hold the answer up to this many seconds (at most 60) for the job to finish.",
}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "`wait=N`: hold the answer up to N seconds for the job to finish.",
}

_ERROR_TEXT = {
    400: "Body is not parseable.",
    401: "API key missing or wrong.",
    404: "Unknown model, version or job.",
    405: "Method not allowed.",
    409: "Conflicts with the job's state or an earlier request.",
    413: "Body over the configured limit.",
    415: "Neither JSON nor CSV.",
    422: "Inputs do not match the model's input schema.",
    429: "Queue full or rate limited.",
    503: "Broker unreachable; nothing was accepted.",
}


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every route."""
    job_ok = _json("Job", "The job.")
    paths: dict[str, Any] = {
        "/v1/models": {
            "get": {
                "summary": "List published models",
                "operationId": "listModels",
                "security": _AUTH,
                "responses": {
                    "200": {
                        "description": "Every model with its default version.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["models"],
                                    "properties": {
                                        "models": {"type": "array", "items": _ref("ModelSummary")}
                                    },
                                }
                            }
                        },
                    },
                    **_errors(401),
                },
            }
        },
        "/v1/models/{name}": {
            "get": {
                "summary": "Describe a model's default version",
                "operationId": "getModel",
                "security": _AUTH,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json("Model", "The model."), **_errors(401, 404)},
            }
        },
        "/v1/models/{name}/versions/{version}": {
            "get": {
                "summary": "Describe one version of a model",
                "operationId": "getModelVersion",
                "security": _AUTH,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {"200": _json("Model", "The model version."), **_errors(401, 404)},
            }
        },
        "/v1/models/{name}/jobs": {
            "post": {
                "summary": "Submit a prediction job",
                "operationId": "submitJob",
                "security": _AUTH,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    _PREFER,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("Submission")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json("Job", "The job finished within the requested wait."),
                    "202": {
                        **_json("Job", "The job was accepted."),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404, 409, 413, 415, 422, 429, 503),
                },
            }
        },
        "/v1/jobs": {
            "get": {
                "summary": "List this key's jobs, newest first",
                "operationId": "listJobs",
                "security": _AUTH,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": SCHEMAS["Job"]["properties"]["status"],
                    },
                    {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    },
                ],
                "responses": {"200": _json("JobList", "A page of jobs."), **_errors(401, 422)},
            }
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "Poll a job, optionally waiting for it to finish",
                "operationId": "getJob",
                "security": _AUTH,
                "parameters": [_JOB_ID, _WAIT_QUERY, _PREFER],
                "responses": {"200": job_ok, **_errors(401, 404, 422)},
            }
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a queued or running job",
                "operationId": "cancelJob",
                "security": _AUTH,
                "parameters": [_JOB_ID],
                "responses": {"200": job_ok, **_errors(401, 404, 409)},
            }
        },
        "/v1/jobs/{job_id}/outputs": {
            "get": {
                "summary": "Stream every output of a succeeded job",
                "operationId": "getJobOutputs",
                "security": _AUTH,
                "parameters": [_JOB_ID],
                "responses": {
                    "200": {
                        "description": "One output a line (NDJSON) or a row (CSV), in input order.",
                        "content": {
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(401, 404, 409),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": {"200": _json("Status", "Serving.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: Redis answers and a worker consumes",
                "operationId": "readyz",
                "responses": {"200": _json("Status", "Ready."), **_errors(503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Inference service",
            "version": "1.0.0",
            "description": "Submit prediction jobs to scikit-learn models and poll for their results.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                f"E{status}": {
                    "description": text,
                    "content": {"application/json": {"schema": _ref("Error")}},
                }
                for status, text in _ERROR_TEXT.items()
            },
        },
    }

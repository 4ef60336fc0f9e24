"""The OpenAPI 3.1 document, made from the contract's models, the table of operations and the settings."""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema

from api.contract import REF, RESPONSE_MODELS, ContractSchema, PublishUpload
from api.operations import FORBIDDEN, TAGS, UNAUTHORIZED, Limits, Op, json_answer, operations
from api.server import limit_request_field_size, limit_request_fields, limit_request_line
from api.validation import SubmitBody
from shared.errors import ErrorCode
from shared.registry import VERSION_RE
from shared.routing import RoutingChange
from shared.settings import Settings

# What any route may answer: the app's 405, and the HTTP server's refusals of what is too long to read.
_ANY_ROUTE = {
    405: "This path does not take that method (`method_not_allowed`); `Allow` lists those it does.",
    414: f"The request line (method, path and query) is over {limit_request_line:,} bytes (`uri_too_long`).",
    431: f"A header line is over {limit_request_field_size:,} bytes, or there are over "
    f"{limit_request_fields} headers (`header_too_large`).",
}


# A parenthesis naming error codes, as the descriptions write them: (`unknown_model`), (`a` or `b`).
_CODES = re.compile(r" \((?:`[a-z_]+`(?:, | or )?)+\)")
# The header that comes with an error status: name, meaning, schema.
_ERROR_HEADERS = {
    405: ("Allow", "The methods this path takes.", {"type": "string"}),
    429: ("Retry-After", "Seconds to wait before sending it again.", {"type": "integer", "minimum": 1}),
}


def _error_answer(status: int, description: str) -> dict[str, Any]:
    answer = json_answer("Error", description)
    # The example has the first code the description names and the description, without codes, as message.
    code = next((c for c in ErrorCode if f"`{c}`" in description), ErrorCode.INTERNAL)
    example = {"error": {"code": code, "message": _CODES.sub("", description), "details": []}}
    answer["content"]["application/json"]["example"] = example
    if status in _ERROR_HEADERS:
        name, text, schema = _ERROR_HEADERS[status]
        answer["headers"] = {name: {"description": text, "required": True, "schema": schema}}
    return answer


def _operation(op: Op) -> dict[str, Any]:
    errors = {**op.errors, **_ANY_ROUTE, **({} if op.public else {401: UNAUTHORIZED})}
    if op.admin:
        errors[403] = FORBIDDEN
    responses = {str(s): op.ok[s] for s in sorted(op.ok)}
    responses.update({str(s): _error_answer(s, errors[s]) for s in sorted(errors)})
    document: dict[str, Any] = {
        "operationId": op.id,
        "tags": [op.tag],
        "summary": op.summary,
        "security": [] if op.public else [{"bearer": []}],
    }
    if op.description:
        document["description"] = op.description
    if op.params:
        document["parameters"] = list(op.params)
    if op.body:
        document["requestBody"] = op.body
    document["responses"] = responses
    return document


def _components(settings: Settings) -> dict[str, Any]:
    """Return every schema of the contract, with the limits of the settings written into them."""
    _, found = models_json_schema(
        [(model, "serialization") for model in RESPONSE_MODELS]
        + [(SubmitBody, "validation"), (RoutingChange, "validation"), (PublishUpload, "validation")],
        ref_template=REF,
        schema_generator=ContractSchema,
    )
    schemas: dict[str, Any] = found["$defs"]
    # What validate_records and the registry check, beyond the envelope SubmitBody parses.
    value = {"type": ["number", "string"]}
    by_name = {"type": "object", "description": "Values by feature name.", "additionalProperties": value}
    in_order = {"type": "array", "description": "Values in feature order.", "minItems": 1, "items": value}
    submit = schemas["SubmitBody"]["properties"]
    submit["inputs"].update(minItems=1, maxItems=settings.max_records, items={"anyOf": [by_name, in_order]})
    submit["version"]["anyOf"][0]["pattern"] = VERSION_RE.pattern
    outputs = schemas["Job"]["properties"]["outputs"]
    outputs["description"] += f" The inline limit is {settings.inline_limit:,}."
    # An events stream's data is the Job without its outputs: the same schema, that property left out.
    job = schemas["Job"]
    schemas["JobEvent"] = {
        **job,
        "description": "The Job as an events stream sends it: every field but `outputs`.",
        "properties": {k: v for k, v in job["properties"].items() if k != "outputs"},
        "required": [k for k in job["required"] if k != "outputs"],
    }
    return schemas


def openapi_document(settings: Settings) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every route, with the limits of these settings."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations(settings):
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    limits = Limits.of(settings)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Inference service",
            "version": "1.0.0",
            "description": "Submit prediction jobs to scikit-learn models and poll for their results. Send "
            "`Authorization: Bearer <api-key>` on every `/v1` route; every error answers with an `Error` "
            f"body. This deployment's limits: {limits.records} a JSON job, {limits.body} a body, outputs "
            f"inline up to {limits.inline}, waits up to {limits.wait}, jobs kept {limits.retention} "
            "after they end.",
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": _components(settings),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}},
        },
    }

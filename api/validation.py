"""Request parsing and validation of records against a model's manifest, before anything is queued."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InvalidInput, InvalidJson
from shared.registry import Manifest

MAX_DETAILS = 50
MAX_DEADLINE_S = 7 * 86_400


class SubmitBody(BaseModel):
    """The JSON body of a job submission."""

    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: list[Any] = Field(
        description="The records to predict, each answered by the output of the same index: an object keyed "
        "by feature name or an array of values in the model's feature order (a text model's record is "
        '{"text": "..."} or ["..."]).',
        examples=[[{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]],
    )
    version: str | None = Field(
        default=None,
        max_length=32,
        description="The model version to use; the model's default version when absent.",
        examples=["1.0.0"],
    )
    deadline_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DEADLINE_S,
        description="Seconds from now by which the job must have started, or it ends as expired.",
        examples=[30],
    )


def parse_json(raw: bytes) -> Any:
    """Return the parsed JSON body, or raise InvalidJson saying where it broke."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"The body is not valid JSON: {exc}.") from exc


def parse_submit(document: Any) -> SubmitBody:
    """Return the submission envelope, or raise InvalidInput naming each bad field."""
    if not isinstance(document, dict):
        raise InvalidInput(
            "The body must be a JSON object with an 'inputs' list.",
            [{"field": None, "reason": "expected a JSON object"}],
        )
    try:
        return SubmitBody.model_validate(document)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]), "reason": err["msg"]}
            for err in exc.errors()[:MAX_DETAILS]
        ]
        raise InvalidInput("The submission does not have the expected fields.", details) from None


@functools.lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(schema_json))


def validator_for(manifest: Manifest) -> Draft202012Validator:
    """Return the compiled validator of a manifest's record schema, made once per schema."""
    return _validator(orjson.dumps(manifest.input_schema, option=orjson.OPT_SORT_KEYS))


@functools.lru_cache(maxsize=256)
def _bounds(schema_json: bytes) -> tuple[float, float] | None:
    schema = orjson.loads(schema_json)
    fields = list(schema.get("properties", {}).values())
    shapes = {tuple(sorted(f.items())) for f in fields}
    if len(shapes) != 1 or schema.get("additionalProperties") is not False:
        return None
    shape = dict(shapes.pop())
    if set(shape) != {"type", "minimum", "maximum"} or shape["type"] != "number":
        return None
    return float(shape["minimum"]), float(shape["maximum"])


def numeric_bounds(manifest: Manifest) -> tuple[float, float] | None:
    """Return (minimum, maximum) when the schema says only that every feature is a number between them."""
    if manifest.input_schema.get("required") != manifest.features:
        return None
    return _bounds(orjson.dumps(manifest.input_schema, option=orjson.OPT_SORT_KEYS))


def _plain_row(record: Any, features: list[str], low: float, high: float) -> list[Any] | None:
    """Return the record as a row when it plainly satisfies a numbers-only schema, else None."""
    values: list[Any]
    if isinstance(record, dict):
        values = [record.get(f) for f in features] if len(record) == len(features) else []
    else:
        values = record if isinstance(record, list) else []
    # type() rather than isinstance(): a boolean is not a number to JSON Schema.
    plain = len(values) == len(features) and all(type(v) in (float, int) and low <= v <= high for v in values)
    return values if plain else None


def _error_details(index: int, error: SchemaError, record: dict[str, Any]) -> list[dict[str, Any]]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "required":
        missing = [f for f in schema.get("required", []) if f not in record]
        return [{"index": index, "field": f, "reason": "missing"} for f in missing]
    if error.validator == "additionalProperties":
        known = schema.get("properties", {})
        extra = sorted(f for f in record if f not in known)
        return [{"index": index, "field": f, "reason": "not a feature of this model"} for f in extra]
    field = str(error.path[0]) if error.path else None
    return [{"index": index, "field": field, "reason": error.message[:200]}]


def validate_records(manifest: Manifest, records: list[Any], max_records: int) -> list[Any]:
    """Return the records as rows in feature order, or raise InvalidInput naming each bad one."""
    if not records:
        raise InvalidInput("Send at least one record.", [{"field": "inputs", "reason": "empty list"}])
    if len(records) > max_records:
        raise InvalidInput(
            f"Send at most {max_records} records in one job.",
            [{"field": "inputs", "reason": f"{len(records)} records"}],
        )
    validator = validator_for(manifest)
    features = manifest.features
    bounds = numeric_bounds(manifest)
    rows: list[Any] = []
    details: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        # The common case needs no schema engine; anything else gets its full, named errors.
        plain = _plain_row(record, features, *bounds) if bounds else None
        if plain is not None:
            rows.append(plain)
            continue
        if isinstance(record, list):
            if len(record) != len(features):
                details.append(
                    {
                        "index": index,
                        "field": None,
                        "reason": f"expected {len(features)} values in feature order, got {len(record)}",
                    }
                )
                continue
            record = dict(zip(features, record, strict=True))
        elif not isinstance(record, dict):
            details.append({"index": index, "field": None, "reason": "a record is an object or an array"})
            continue
        errors = list(validator.iter_errors(record))
        if errors:
            for error in errors:
                details.extend(_error_details(index, error, record))
        elif not details:
            rows.append(record["text"] if manifest.is_text else [record[f] for f in features])
        if len(details) >= MAX_DETAILS:
            break
    if details:
        raise InvalidInput(
            f"{len({d['index'] for d in details})} record(s) do not match the input schema of "
            f"{manifest.name} {manifest.version}.",
            details[:MAX_DETAILS],
        )
    return rows

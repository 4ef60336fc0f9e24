"""Request parsing and validation of records against a model's manifest, before anything is queued.

JSON records and CSV rows meet one set of rules, the manifest's input schema: each fast path takes
only what the schema plainly allows, and anything else is judged by the schema itself, whose
errors name the record and the field the same way whatever the body's format.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gevent
import gevent.monkey
import numpy as np
import numpy.typing as npt
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.webhooks import WebhookBody
from shared.chunks import Records
from shared.errors import InvalidInput, InvalidJson
from shared.registry import Manifest

MAX_DETAILS = 50
MAX_DEADLINE_S = 7 * 86_400
# More records than this are checked on a thread, so the process's event loop serves other
# requests meanwhile; this many take a few milliseconds, less than handing them over would save.
OFF_LOOP_RECORDS = 2_000
# Keywords that describe a value without constraining it, so a fast path may pass over them.
_ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default", "deprecated"})
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_UNBOUNDED = {"minimum": -np.inf, "maximum": np.inf, "exclusiveMinimum": -np.inf, "exclusiveMaximum": np.inf}

T = TypeVar("T")


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
    webhook: WebhookBody | None = Field(
        default=None,
        description="POST the job, signed with this key's secret (GET /v1/webhooks/secret), to a URL when "
        "the events named happen.",
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


def off_loop(work: Callable[..., T], *args: Any) -> T:
    """Return work(*args), run on a thread of gevent's pool when this process serves with gevent.

    The event loop goes on serving the process's other requests meanwhile: the thread gives the
    interpreter up every few milliseconds, as Python threads do.
    """
    if not gevent.monkey.is_module_patched("socket"):
        return work(*args)
    done, outcome = gevent.get_hub().threadpool.apply(_outcome, (work, args))
    if not done:
        raise outcome
    result: T = outcome
    return result


def _outcome(work: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    # An error is handed back to be raised in the request, not logged by the pool as its own failure.
    try:
        return True, work(*args)
    except Exception as exc:
        return False, exc


@dataclass(frozen=True)
class Rules:
    """What a manifest's input schema asks of a record, compiled once for each schema."""

    features: list[str]
    is_text: bool
    validator: Draft202012Validator
    # Every feature a number within (minimum, maximum) and nothing else: the JSON fast path.
    bounds: tuple[float, float] | None
    # The one text feature a string of (minLength, maxLength) characters and nothing else.
    lengths: tuple[int, float] | None
    # Each feature a number with only bounds, as (keyword, bound of each feature in feature order):
    # a table of numbers is checked against them at once.
    columns: tuple[tuple[str, npt.NDArray[np.float64]], ...] | None


@functools.lru_cache(maxsize=256)
def _rules(schema_json: bytes, features: tuple[str, ...]) -> Rules:
    schema = orjson.loads(schema_json)
    return Rules(
        features=list(features),
        is_text=features == ("text",),
        validator=Draft202012Validator(schema),
        bounds=_bounds(schema, features),
        lengths=_lengths(schema, features),
        columns=_columns(schema, features),
    )


def rules_for(manifest: Manifest) -> Rules:
    """Return the compiled rules of a manifest's record schema, made once per schema."""
    schema_json = orjson.dumps(manifest.input_schema, option=orjson.OPT_SORT_KEYS)
    return _rules(schema_json, tuple(manifest.features))


def _is_bound(value: Any) -> bool:
    """Tell whether a schema bound compares with a float exactly as it would as a number of its own."""
    if type(value) not in (int, float):
        return False
    try:
        return bool(float(value) == value)
    except OverflowError:
        return False


def _object_of(schema: dict[str, Any], features: tuple[str, ...]) -> dict[str, Any] | None:
    """Return the properties of a schema that asks only for an object of exactly these features."""
    plain = (
        set(schema) <= {"type", "properties", "required", "additionalProperties", "$schema"} | _ANNOTATIONS
        and schema.get("type") == "object"
        and schema.get("additionalProperties") is False
        and schema.get("required") == list(features)
    )
    properties = schema.get("properties")
    if not plain or not isinstance(properties, dict) or set(properties) != set(features):
        return None
    return properties


def _bounds(schema: dict[str, Any], features: tuple[str, ...]) -> tuple[float, float] | None:
    properties = _object_of(schema, features)
    if properties is None:
        return None
    shapes = {tuple(sorted(f.items())) for f in properties.values()}
    if len(shapes) != 1:
        return None
    shape = dict(shapes.pop())
    if set(shape) != {"type", "minimum", "maximum"} or shape["type"] != "number":
        return None
    if not (_is_bound(shape["minimum"]) and _is_bound(shape["maximum"])):
        return None
    return float(shape["minimum"]), float(shape["maximum"])


def _lengths(schema: dict[str, Any], features: tuple[str, ...]) -> tuple[int, float] | None:
    properties = _object_of(schema, features)
    if properties is None or features != ("text",):
        return None
    field = properties["text"]
    if set(field) - {"type", "minLength", "maxLength"} - _ANNOTATIONS or field.get("type") != "string":
        return None
    low, high = field.get("minLength", 0), field.get("maxLength", float("inf"))
    if type(low) is not int or type(high) not in (int, float):
        return None
    return low, high


def _columns(
    schema: dict[str, Any], features: tuple[str, ...]
) -> tuple[tuple[str, npt.NDArray[np.float64]], ...] | None:
    properties = _object_of(schema, features)
    if properties is None:
        return None
    fields = [properties[f] for f in features]
    for field in fields:
        if not isinstance(field, dict) or set(field) - {"type", *_BOUNDS} - _ANNOTATIONS:
            return None
        exact = all(_is_bound(field[b]) for b in _BOUNDS if b in field)
        if field.get("type", "number") != "number" or not exact:
            return None
    return tuple(
        (keyword, np.array([float(f.get(keyword, _UNBOUNDED[keyword])) for f in fields]))
        for keyword in _BOUNDS
        if any(keyword in f for f in fields)
    )


def numeric_bounds(manifest: Manifest) -> tuple[float, float] | None:
    """Return (minimum, maximum) when the schema says only that every feature is a number between them."""
    return rules_for(manifest).bounds


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


def _plain_text(record: Any, low: int, high: float) -> str | None:
    """Return the record's text when it plainly satisfies a one-string schema, else None."""
    if isinstance(record, dict):
        value = record.get("text") if len(record) == 1 else None
    else:
        value = record[0] if isinstance(record, list) and len(record) == 1 else None
    # JSON Schema counts a string's length in code points, as len() does.
    return value if type(value) is str and low <= len(value) <= high else None


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


def _judge(rules: Rules, index: int, record: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Return the record as a row in feature order and no details, or what the schema finds wrong."""
    features = rules.features
    if isinstance(record, list):
        if len(record) != len(features):
            reason = f"expected {len(features)} values in feature order, got {len(record)}"
            return None, [{"index": index, "field": None, "reason": reason}]
        record = dict(zip(features, record, strict=True))
    elif not isinstance(record, dict):
        return None, [{"index": index, "field": None, "reason": "a record is an object or an array"}]
    details = [
        d for error in rules.validator.iter_errors(record) for d in _error_details(index, error, record)
    ]
    if details:
        return None, details
    return (record["text"] if rules.is_text else [record[f] for f in features]), []


def _refusal(manifest: Manifest, details: list[dict[str, Any]]) -> InvalidInput:
    return InvalidInput(
        f"{len({d['index'] for d in details})} record(s) do not match the input schema of "
        f"{manifest.name} {manifest.version}.",
        details[:MAX_DETAILS],
    )


def _check(manifest: Manifest, rules: Rules, records: list[Any], first: int) -> list[Any]:
    rows: list[Any] = []
    details: list[dict[str, Any]] = []
    plain: list[Any] | str | None
    for offset, record in enumerate(records):
        # The common cases need no schema engine; anything else gets its full, named errors.
        if rules.bounds:
            plain = _plain_row(record, rules.features, *rules.bounds)
        elif rules.lengths:
            plain = _plain_text(record, *rules.lengths)
        else:
            plain = None
        if plain is not None:
            rows.append(plain)
            continue
        row, found = _judge(rules, first + offset, record)
        if found:
            details.extend(found)
            if len(details) >= MAX_DETAILS:
                break
        elif not details:
            rows.append(row)
    if details:
        raise _refusal(manifest, details)
    return rows


def check_records(manifest: Manifest, records: list[Any], first: int = 0) -> list[Any]:
    """Return the records as rows in feature order, or raise InvalidInput naming each bad one.

    Records are counted from first; a JSON record is an object or an array in feature order, a CSV
    row an array. Many records are checked off the event loop.
    """
    rules = rules_for(manifest)
    if len(records) > OFF_LOOP_RECORDS:
        return off_loop(_check, manifest, rules, records, first)
    return _check(manifest, rules, records, first)


def check_rows(manifest: Manifest, rows: list[Any] | npt.NDArray[np.float64], first: int) -> Records:
    """Return parsed rows (a table of numbers, or records) in feature order, or raise naming each bad one."""
    if isinstance(rows, np.ndarray):
        return _check_table(manifest, rows, first)
    return check_records(manifest, rows, first)


def _check_table(manifest: Manifest, table: npt.NDArray[np.float64], first: int) -> npt.NDArray[np.float32]:
    """Return rows of numbers in feature order as float32, or raise InvalidInput naming each bad one.

    The rules are the JSON records' (check_records), checked on the whole table at once when the
    schema only bounds numbers; values must also be finite in float32, as the models compute.
    """
    features = manifest.features
    rules = rules_for(manifest)
    if _plainly_fits(rules, table):
        return table.astype(np.float32)
    if not np.isfinite(table).all():
        raise _not_finite(table, features, first)
    if rules.columns is None:
        check_records(manifest, table.tolist(), first)
    else:
        fits = np.ones(len(table), dtype=bool)
        for keyword, bound in rules.columns:
            fits &= _COMPARE[keyword](table, bound).all(axis=1)
        if not fits.all():
            # Only the rows found out of bounds go through the schema, for its exact errors.
            details: list[dict[str, Any]] = []
            for row in np.flatnonzero(~fits).tolist():
                details.extend(_judge(rules, first + row, table[row].tolist())[1])
                if len(details) >= MAX_DETAILS:
                    break
            if details:
                raise _refusal(manifest, details)
    with np.errstate(over="ignore"):
        narrow = table.astype(np.float32)
    if not np.isfinite(narrow).all():
        raise _not_finite(narrow, features, first)
    return narrow


def _plainly_fits(rules: Rules, table: npt.NDArray[np.float64]) -> bool:
    """Tell from each column's least and greatest values alone that all are finite in float32 and in bounds.

    Two reductions instead of comparing every value with each bound; a table they cannot vouch for is
    checked value by value.
    """
    if rules.columns is None or not table.size:
        return False
    least, greatest = table.min(axis=0), table.max(axis=0)  # NaN, if any, comes out of both
    if not (least >= -_FLOAT32_MAX).all() or not (greatest <= _FLOAT32_MAX).all():
        return False
    # A lower bound is met by every value when by the least, an upper one when by the greatest.
    extremes = {"minimum": least, "exclusiveMinimum": least}
    return all(
        _COMPARE[keyword](extremes.get(keyword, greatest), bound).all() for keyword, bound in rules.columns
    )


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_COMPARE: dict[str, Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], npt.NDArray[np.bool_]]] = {
    "minimum": np.greater_equal,
    "maximum": np.less_equal,
    "exclusiveMinimum": np.greater,
    "exclusiveMaximum": np.less,
}


def _not_finite(table: npt.NDArray[Any], features: list[str], first: int) -> InvalidInput:
    bad_rows, bad_cols = np.nonzero(~np.isfinite(table))
    details = [
        {"index": first + r, "field": features[c], "reason": "not a finite number within float32 range"}
        for r, c in zip(bad_rows[:MAX_DETAILS].tolist(), bad_cols[:MAX_DETAILS].tolist(), strict=True)
    ]
    return InvalidInput(f"{np.unique(bad_rows).size} CSV row(s) hold numbers the model cannot take.", details)


def validate_records(manifest: Manifest, records: list[Any], max_records: int) -> list[Any]:
    """Return the records as rows in feature order, or raise InvalidInput naming each bad one."""
    if not records:
        raise InvalidInput("Send at least one record.", [{"field": "inputs", "reason": "empty list"}])
    if len(records) > max_records:
        raise InvalidInput(
            f"Send at most {max_records} records in one job.",
            [{"field": "inputs", "reason": f"{len(records)} records"}],
        )
    return check_records(manifest, records)

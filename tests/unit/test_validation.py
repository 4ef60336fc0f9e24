"""Validation of submissions and records against a manifest, without any server."""

from __future__ import annotations

import io
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.bodies import LimitedBody
from api.validation import (
    numeric_bounds,
    off_loop,
    parse_json,
    parse_submit,
    validate_records,
)
from shared.errors import InvalidInput, InvalidJson, PayloadTooLarge
from shared.registry import Registry

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_named_and_positional_records_become_rows_in_feature_order(registry: Registry) -> None:
    """Objects are reordered to the schema's feature order; arrays are taken as they are."""
    record = {"petal_width": 0.2, "petal_length": 1.4, "sepal_width": 3.5, "sepal_length": 5.1}
    assert validate_records(registry.get("iris"), [record, [1, 2, 3, 4]], 10) == [
        [5.1, 3.5, 1.4, 0.2],
        [1, 2, 3, 4],
    ]


def test_numbers_only_schemas_take_the_plain_path_and_others_do_not(registry: Registry) -> None:
    """The examples' numeric schemas are recognised as plain number ranges; the text schema is not."""
    assert numeric_bounds(registry.get("iris")) == (-3.4e38, 3.4e38)
    assert numeric_bounds(registry.get("breast-cancer")) == (-3.4e38, 3.4e38)
    assert numeric_bounds(registry.get("scam-email")) is None


def test_a_schema_saying_more_than_bounds_takes_no_fast_path(registry: Registry) -> None:
    """A keyword beyond the bounds, anywhere in the schema, leaves every record to the schema engine."""
    iris = registry.get("iris")
    schema = dict(iris.input_schema)
    whole = {
        **schema,
        "properties": {**schema["properties"], "petal_width": {"type": "number", "multipleOf": 1}},
    }
    for changed in ({**schema, "minProperties": 4}, {**schema, "required": ["sepal_length"]}, whole):
        assert numeric_bounds(iris.model_copy(update={"input_schema": changed})) is None
    with pytest.raises(InvalidInput) as caught:
        validate_records(iris.model_copy(update={"input_schema": whole}), [[5.1, 3.5, 1.4, 0.2]], 10)
    assert caught.value.details[0]["field"] == "petal_width"


def test_text_records_become_strings(registry: Registry) -> None:
    """A text model's record is its one string, by name or by position."""
    assert validate_records(registry.get("scam-email"), [{"text": "a"}, ["b"]], 10) == ["a", "b"]


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        (
            {"sepal_length": "5", "sepal_width": 1, "petal_length": 1, "petal_width": 1},
            "sepal_length",
            "not of type",
        ),
        (
            {"sepal_length": True, "sepal_width": 1, "petal_length": 1, "petal_width": 1},
            "sepal_length",
            "not of type",
        ),
        (
            {"sepal_length": 1e39, "sepal_width": 1, "petal_length": 1, "petal_width": 1},
            "sepal_length",
            "maximum",
        ),
        ({"sepal_width": 1, "petal_length": 1, "petal_width": 1}, "sepal_length", "missing"),
        (
            {"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1, "x": 1},
            "x",
            "not a feature",
        ),
        ([1, 2, 3], None, "expected 4 values"),
        ("1,2,3,4", None, "object or an array"),
        (None, None, "object or an array"),
    ],
)
def test_each_bad_record_names_its_index_field_and_reason(
    registry: Registry, record: object, field: str | None, reason: str
) -> None:
    """A bad record is reported with its index, its field and why."""
    with pytest.raises(InvalidInput) as caught:
        validate_records(registry.get("iris"), [[1, 2, 3, 4], record], 10)
    detail = caught.value.details[0]
    assert detail["index"] == 1
    assert detail["field"] == field
    assert reason in detail["reason"]


def test_empty_and_oversized_input_lists_are_refused(registry: Registry) -> None:
    """No records, or more than the maximum, is an invalid input naming the inputs field."""
    for records in ([], [[1, 2, 3, 4]] * 3):
        with pytest.raises(InvalidInput) as caught:
            validate_records(registry.get("iris"), records, 2)
        assert caught.value.details[0]["field"] == "inputs"


def test_empty_text_is_refused(registry: Registry) -> None:
    """A text record must hold at least one character."""
    with pytest.raises(InvalidInput):
        validate_records(registry.get("scam-email"), [{"text": ""}], 10)


@pytest.mark.parametrize("raw", [b"", b"{", b"[NaN]", b"[Infinity]", b"[1e400]", b"\xff\xfe", b'{"a": 1} x'])
def test_unparseable_json_is_invalid_json(raw: bytes) -> None:
    """Broken JSON, NaN, Infinity, out-of-range numbers and bad UTF-8 are refused as invalid JSON."""
    with pytest.raises(InvalidJson):
        parse_json(raw)


def test_envelope_refuses_unknown_fields_and_wrong_types() -> None:
    """The submission envelope takes inputs, version and deadline_s, nothing else."""
    assert parse_submit({"inputs": [[1]], "deadline_s": 5}).deadline_s == 5
    for document in ({"inputs": {}}, {"inputs": [], "extra": 1}, {"inputs": [], "deadline_s": "5"}, [], "x"):
        with pytest.raises(InvalidInput):
            parse_submit(document)


finite = st.floats(min_value=-3e38, max_value=3e38, allow_nan=False)
anything = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.floats(), st.lists(st.integers(), max_size=2)
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.lists(finite, min_size=4, max_size=4), min_size=1, max_size=20))
def test_any_finite_rows_are_accepted_unchanged(registry: Registry, rows: list[list[float]]) -> None:
    """Every array of four finite floats within float32 range is a valid iris record."""
    assert validate_records(registry.get("iris"), rows, 100) == rows


# The machine is shared with other jobs: generation speed is not what this test is about.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.dictionaries(st.sampled_from([*FEATURES, "other"]), anything, max_size=5),
        st.fixed_dictionaries({f: st.one_of(finite, anything) for f in FEATURES}),
    )
)
def test_a_record_is_accepted_exactly_when_it_has_four_numeric_features(
    registry: Registry, record: dict[str, object]
) -> None:
    """Validation accepts a record if and only if it has exactly the four features, all finite numbers."""
    good = set(record) == set(FEATURES) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= 3.4e38
        for v in record.values()
    )
    if good:
        assert validate_records(registry.get("iris"), [record], 10) == [[record[f] for f in FEATURES]]
    else:
        with pytest.raises(InvalidInput) as caught:
            validate_records(registry.get("iris"), [record], 10)
        assert {d["index"] for d in caught.value.details} == {0}


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 200_000])
def test_a_body_of_up_to_the_limit_is_read_whole_and_one_byte_more_is_413(size: int) -> None:
    """The limit is the largest body taken, however the body is framed."""
    assert LimitedBody(io.BytesIO(b"x" * size), size).read() == b"x" * size
    with pytest.raises(PayloadTooLarge):
        LimitedBody(io.BytesIO(b"x" * (size + 1)), size).read()


def test_a_body_read_in_blocks_is_refused_as_soon_as_it_passes_the_limit() -> None:
    """Reading block by block stops at the block that passes the limit, not at the body's end."""
    source = io.BytesIO(b"x" * 10_000_000)
    body = LimitedBody(source, 100_000)
    for _ in range(3):
        assert len(body.read(30_000)) == 30_000
    with pytest.raises(PayloadTooLarge):
        body.read(30_000)
    assert source.tell() == 100_001  # one byte past the limit tells, and no more is read


def test_off_loop_returns_the_result_and_raises_the_error_of_its_work() -> None:
    """Work run off the event loop answers as if it had run in place."""
    assert off_loop(sum, [1, 2, 3]) == 6
    with pytest.raises(InvalidInput):
        off_loop(validate_records, None, [], 1)

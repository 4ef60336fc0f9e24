"""CSV bodies: the same schema rules as JSON records, the line endings and cells real exports write."""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from api import csv_input, validation
from api.csv_input import csv_chunks
from api.validation import check_rows, validate_records
from shared.errors import InvalidInput
from shared.registry import Manifest, Registry

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class Trickle:
    """A body that arrives a few bytes a read, as a slow network delivers it, counting what was read."""

    def __init__(self, body: bytes, step: int) -> None:
        self._body = io.BytesIO(body)
        self._step = step
        self.read_bytes = 0

    def read(self, size: int = -1, /) -> bytes:
        """Return at most step bytes, or all that is left when no size is given."""
        data = self._body.read(size if size < 0 else min(size, self._step))
        self.read_bytes += len(data)
        return data


def _with_schema(manifest: Manifest, **fields: dict[str, Any]) -> Manifest:
    """Return the manifest with some of its features' schemas replaced."""
    schema = dict(manifest.input_schema)
    schema["properties"] = {**schema["properties"], **fields}
    return manifest.model_copy(update={"input_schema": schema})


def _csv_body(records: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(records[0]))
    writer.writerows([repr(v) if isinstance(v, float) else v for v in r.values()] for r in records)
    return buffer.getvalue().encode()


def _read_csv(
    manifest: Manifest, body: bytes | Trickle, max_records: int = 1000, chunk_rows: int = 100
) -> list[Any]:
    stream = Trickle(body, 1 << 30) if isinstance(body, bytes) else body
    chunks = csv_chunks(stream, manifest, chunk_rows, max_records, hashlib.sha256())  # type: ignore[arg-type]
    rows: list[Any] = []
    for chunk in chunks:
        assert len(chunk) <= chunk_rows
        rows.extend(chunk.tolist() if isinstance(chunk, np.ndarray) else chunk)
    return rows


def _refusal(check: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check()
    return caught.value


# (which model, its features' schemas changed for the test, the bad record)
REFUSED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("iris", {}, {**GOOD, "sepal_length": 3.401e38}),  # beyond the schema's maximum, within float32
    ("iris", {}, {**GOOD, "petal_width": -3.41e38}),
    ("iris", {"petal_width": {"type": "number", "minimum": 0, "maximum": 10}}, {**GOOD, "petal_width": -0.5}),
    ("iris", {"sepal_length": {"type": "number", "exclusiveMaximum": 100}}, {**GOOD, "sepal_length": 100.0}),
    ("iris", {"sepal_length": {"type": "number", "exclusiveMinimum": 0}}, {**GOOD, "sepal_length": 0.0}),
    ("iris", {"sepal_width": {"type": "number", "multipleOf": 0.5}}, {**GOOD, "sepal_width": 0.3}),
    ("scam-email", {}, {"text": "a" * 20_001}),  # over the published maxLength
    ("scam-email", {"text": {"type": "string", "pattern": "^[a-z ]+$"}}, {"text": "HELLO"}),
]


@pytest.mark.parametrize(("model", "fields", "record"), REFUSED)
def test_a_record_the_schema_refuses_is_refused_alike_as_json_and_as_csv(
    registry: Registry, model: str, fields: dict[str, Any], record: dict[str, Any]
) -> None:
    """Bounds, lengths and any other keyword of the schema refuse a CSV row exactly as the JSON record."""
    manifest = _with_schema(registry.get(model), **fields)
    good = GOOD if model == "iris" else {"text": "hello"}
    as_json = _refusal(lambda: validate_records(manifest, [good, record], 10))
    as_csv = _refusal(lambda: _read_csv(manifest, _csv_body([good, record])))
    assert as_json.details[0]["index"] == 1
    assert as_csv.details == as_json.details
    assert as_csv.message == as_json.message


def test_records_the_schema_takes_become_the_same_rows_as_json_and_as_csv(registry: Registry) -> None:
    """Values at the bounds and ordinary ones are taken from CSV as they are from JSON."""
    manifest = _with_schema(
        registry.get("iris"),
        petal_width={"type": "number", "minimum": 0, "exclusiveMaximum": 10},
        sepal_width={"type": "number", "multipleOf": 0.5},
    )
    records = [
        {"sepal_length": 3.4e38, "sepal_width": 1.5, "petal_length": -3.4e38, "petal_width": 0.0},
        {"sepal_length": 0.1, "sepal_width": -2.0, "petal_length": 1e-30, "petal_width": 9.999},
    ]
    as_json = np.asarray(validate_records(manifest, records, 10), dtype=np.float32)
    assert np.array_equal(np.asarray(_read_csv(manifest, _csv_body(records)), dtype=np.float32), as_json)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("step", [1, 3, 7, 1 << 30])
def test_numeric_csv_takes_every_line_ending_and_a_bom_however_the_body_arrives(
    registry: Registry, ending: bytes, bom: bytes, step: int
) -> None:
    """LF, CRLF and bare CR (old Mac exports) and Excel's UTF-8 BOM read the same rows, split anywhere."""
    lines = [",".join(IRIS).encode(), b"1,2,3,4", b"5.5,6,7,8e-3", b"", b"9,10,11,12"]
    body = bom + ending.join(lines) + ending
    rows = _read_csv(registry.get("iris"), Trickle(body, step))
    assert np.asarray(rows) == pytest.approx(np.asarray([[1, 2, 3, 4], [5.5, 6, 7, 8e-3], [9, 10, 11, 12]]))


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_text_csv_takes_every_line_ending_and_a_bom_keeping_quoted_line_breaks(
    registry: Registry, ending: bytes, bom: bytes
) -> None:
    """A text model's CSV reads the same with any line ending, and a quoted cell keeps its line break."""
    body = bom + ending.join([b"text", b'"Dear winner,\r\nclaim it"', b"Lunch at noon"]) + ending
    assert _read_csv(registry.get("scam-email"), Trickle(body, 5)) == [
        "Dear winner,\r\nclaim it",
        "Lunch at noon",
    ]


def test_a_text_cell_over_128_kb_is_taken_when_the_schema_allows_it(registry: Registry) -> None:
    """Python's csv field size limit is no limit of the service: the model's schema is."""
    manifest = _with_schema(registry.get("scam-email"), text={"type": "string", "minLength": 1})
    body = b"text\nshort\n" + b"a" * 200_000 + b"\n"
    assert [len(t) for t in _read_csv(manifest, body)] == [5, 200_000]


def test_a_text_cell_over_what_the_model_allows_names_its_row_and_column(registry: Registry) -> None:
    """A 140 KB cell for a model that takes 20,000 characters is refused naming row and column."""
    body = b"text\nshort\n" + b"a" * 140_000 + b"\n"
    refusal = _refusal(lambda: _read_csv(registry.get("scam-email"), body))
    assert [(d["index"], d["field"]) for d in refusal.details] == [(1, "text")]


def test_a_header_far_wider_than_the_model_is_refused_before_it_is_read_whole(registry: Registry) -> None:
    """A header of a million columns is refused naming the header, after reading a few kilobytes of it."""
    body = Trickle(b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n1\n", 1 << 20)
    refusal = _refusal(lambda: _read_csv(registry.get("iris"), body))
    assert [d["field"] for d in refusal.details] == ["header"]
    assert body.read_bytes <= 1 << 20


def test_a_header_with_a_few_extra_columns_names_each(registry: Registry) -> None:
    """A header within the bound but with unknown columns still names each of them."""
    body = (",".join([*IRIS, "x", "y"]) + "\n1,2,3,4,5,6\n").encode()
    refusal = _refusal(lambda: _read_csv(registry.get("iris"), body))
    assert [(d["field"], d["reason"]) for d in refusal.details] == [
        ("x", "not a feature of this model"),
        ("y", "not a feature of this model"),
    ]


# Cells as spreadsheets and scripts write them; the bad ones a wrong export or a typo gives.
GOOD_CELLS = st.one_of(
    st.floats(-1e6, 1e6).map(repr),
    st.floats(-1e6, 1e6).map(lambda v: f"{v:.3e}"),
    st.floats(-1e6, 1e6).map(lambda v: f"{v:+E}"),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["5.", ".5", "-.5", "00012", "1e-400", "0"]),
)
BAD_CELLS = st.sampled_from(
    ["", "x", "1.2.3", "--1", "1_0", "0x10", '"1,5"', "#1", '"2', '2"', "1 2", "é", "١", '"2"x', "nan", "inf"]
)


@st.composite
def _cell(draw: st.DrawFn) -> str:
    """Return a cell, a bad one now and then, so that about half the bodies are taken."""
    cell = draw(BAD_CELLS if draw(st.integers(0, 59)) == 0 else GOOD_CELLS)
    if draw(st.integers(0, 9)) == 0:
        cell = draw(st.sampled_from([" ", "\t"])) + cell + draw(st.sampled_from(["", " "]))
    if draw(st.integers(0, 9)) == 0:
        cell = '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def _body(draw: st.DrawFn) -> bytes:
    header = draw(st.permutations(IRIS))
    lines = [",".join(header)]
    for _ in range(draw(st.integers(1, 12))):
        cells = [draw(_cell()) for _ in IRIS]
        kind = draw(st.integers(0, 39))
        if kind == 0:
            cells = cells[:-1]
        elif kind == 1:
            cells.append(draw(_cell()))
        lines.append(",".join(cells))
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(["", "", "", "", "", " ", '"', "#", ",,,"])))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    return (bom + ending.join(lines) + draw(st.sampled_from([ending, ""]))).encode()


def _outcome(manifest: Manifest, body: bytes, step: int) -> tuple[Any, ...]:
    """Return the rows read as float32, or the refusal's message and details."""
    try:
        rows = _read_csv(manifest, Trickle(body, step))
    except InvalidInput as exc:
        return ("refused", exc.message, exc.details)
    return ("taken", np.asarray(rows, dtype=np.float32).tobytes())


@settings(max_examples=400, deadline=None)
@given(body=_body(), step=st.sampled_from([1, 2, 5, 17, 64, 1 << 30]))
def test_the_fast_path_takes_and_refuses_exactly_what_the_row_by_row_checker_does(
    registry: Registry, body: bytes, step: int
) -> None:
    """Random CSVs, cut into blocks anywhere: the same rows taken, or the same record and field named."""
    manifest = registry.get("iris")
    fast = _outcome(manifest, body, step)
    event(fast[0])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_input, "_table", csv_input.checked_table)
        slow = _outcome(manifest, body, step)
    assert fast == slow
    if b"nan" not in body.lower() and b"inf" not in body.lower():
        # How the body was cut into blocks changes nothing either.
        assert _outcome(manifest, body, 1 << 30) == fast


@pytest.mark.parametrize(
    ("cell", "reason"), [(b"x", "not a number"), (b"nan", "not a finite number within float32 range")]
)
def test_bad_rows_are_named_at_the_first_row_the_last_row_of_a_block_and_across_a_block_boundary(
    registry: Registry, cell: bytes, reason: str
) -> None:
    """Rows on either side of a block's end, and the one it cuts, are named by their own index.

    Chunks of many blocks' rows, and of fewer rows than a block, name them alike.
    """
    manifest = registry.get("iris")
    line = b"5.1,3.5,1.4,0.2\n"
    rows = 3 * csv_input.BLOCK_BYTES // len(line)
    head = ",".join(IRIS).encode() + b"\n"
    cut_row = (csv_input.BLOCK_BYTES - len(head)) // len(line)  # the row the first block's end cuts
    for bad in (0, cut_row - 1, cut_row, cut_row + 1, rows - 1):
        lines = [line] * rows
        lines[bad] = b"5.1,3.5,1.4," + cell + b"\n"
        for chunk_rows in (100, rows):
            refusal = _refusal(
                lambda lines=lines, n=chunk_rows: _read_csv(manifest, head + b"".join(lines), rows, n)
            )
            assert [(d["index"], d["field"], d["reason"]) for d in refusal.details] == [
                (bad, "petal_width", reason)
            ]


def test_rows_come_in_chunks_of_the_configured_size_whatever_the_blocks(registry: Registry) -> None:
    """Every chunk but the last holds exactly the configured rows, in the body's order."""
    manifest = registry.get("iris")
    rows = 2 * csv_input.BLOCK_BYTES // 10
    body = ",".join(IRIS).encode() + b"\n" + b"".join(b"%d,1,2,3\n" % i for i in range(rows))
    chunks = list(csv_chunks(Trickle(body, 1 << 30), manifest, 7_000, rows, hashlib.sha256()))  # type: ignore[arg-type]
    assert [len(c) for c in chunks] == [7_000] * (rows // 7_000) + [rows % 7_000]
    assert np.concatenate(chunks)[:, 0].tolist() == list(range(rows))


@pytest.mark.parametrize(
    ("rows", "named"),
    [
        (b"1,2,3,4,x\n", (0, None)),  # a cell past the header's columns: a 422, not an error of the server
        (b"1,2,3,4,5\n1,2,3,4\n", (0, None)),  # the first row too wide, the next right
        (b"1,2,3,4\n#1,2,3,4\n", (1, "sepal_length")),  # no comment lines: a row is never left out
        (b'1,2,3,4\n1,2,3,"4\n"\n', (1, "petal_width")),  # a quoted cell never runs over a line break
        (b"1,2,3,4\n   \n", (1, None)),  # a line of blanks is a row, not a blank line
        (b"1,2,3,4\n1,2,,4\n", (1, "petal_length")),  # an empty cell
    ],
)
def test_rows_numpy_would_misread_are_refused_naming_their_record(
    registry: Registry, rows: bytes, named: tuple[int, str | None]
) -> None:
    """Each of these rows is refused with its own index and cell."""
    body = ",".join(IRIS).encode() + b"\n" + rows
    refusal = _refusal(lambda: _read_csv(registry.get("iris"), body))
    assert [(d["index"], d["field"]) for d in refusal.details] == [named]


def test_quoted_and_blank_padded_numbers_are_taken(registry: Registry) -> None:
    """Quotes around a number, blanks around it, a doubled quote only where it breaks the number."""
    body = ",".join(IRIS).encode() + b'\n"1", 2 ,\t3,"4" \n\n+5E-1,.5,5.,-0\n'
    assert _read_csv(registry.get("iris"), body) == [[1, 2, 3, 4], [0.5, 0.5, 5, 0]]


BOUND_KEYWORDS = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]
BOUNDS = st.sampled_from([None, -1.0, 0.0, 2.5, 3.4e38, -3.4e38, 1e300])
# Mostly ordinary numbers (a table of them may pass), now and then one the model cannot take.
SPECIAL = st.sampled_from([-1.0, 0.0, 2.5, 3.4e38, 3.5e38, -3.5e38, 1e300, float("nan"), float("inf")])
VALUES = st.one_of(st.floats(-10, 10), st.floats(-10, 10), st.floats(-10, 10), st.floats(-10, 10), SPECIAL)


@settings(max_examples=300, deadline=None)
@given(
    bounds=st.lists(st.tuples(st.sampled_from(BOUND_KEYWORDS), BOUNDS), max_size=3),
    table=hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.just(len(IRIS))), elements=VALUES),
)
def test_a_table_checked_from_its_columns_extremes_is_taken_and_refused_as_value_by_value(
    registry: Registry, bounds: list[tuple[str, float | None]], table: np.ndarray[Any, Any]
) -> None:
    """Bounds of each kind, NaN, infinities and numbers past float32: the same rows, or the same refusal."""
    schema: dict[str, Any] = {"type": "number"}
    schema.update({keyword: bound for keyword, bound in bounds if bound is not None})
    manifest = _with_schema(registry.get("iris"), **dict.fromkeys(IRIS, schema))

    def outcome() -> tuple[Any, ...]:
        try:
            return ("taken", check_rows(manifest, table, 7).tobytes())  # type: ignore[union-attr]
        except InvalidInput as exc:
            return ("refused", exc.message, exc.details)

    quick = outcome()
    vouched = validation._plainly_fits(validation.rules_for(manifest), table)
    event(f"{quick[0]}, {'vouched for by the extremes' if vouched else 'checked value by value'}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "_plainly_fits", lambda *_: False)
        assert outcome() == quick

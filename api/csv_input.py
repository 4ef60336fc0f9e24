"""CSV bulk inputs: a header of feature names, one record a row, read and checked block by block."""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Iterator
from typing import IO, Any, Protocol

import numpy as np
import numpy.typing as npt

from shared.chunks import Records
from shared.errors import InvalidInput, InvalidJson
from shared.registry import Manifest

_CELL_RE = re.compile(r"at row (\d+), column (\d+)")
_WIDTH_RE = re.compile(r"at row (\d+)")
MAX_DETAILS = 50
BLOCK_BYTES = 1 << 20


class Digest(Protocol):
    """Anything that digests the body's bytes as they are read (hashlib's objects do)."""

    def update(self, data: bytes, /) -> None:
        """Take in the next bytes."""


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"The CSV body is not UTF-8: {exc}.") from None


def _header(line: str, manifest: Manifest) -> list[str]:
    columns = next(csv.reader([line.rstrip("\r\n")]), [])
    missing = [f for f in manifest.features if f not in columns]
    extra = [c for c in columns if c not in manifest.features]
    if missing or extra or len(columns) != len(set(columns)):
        details: list[dict[str, Any]] = [
            {"index": None, "field": f, "reason": "missing column"} for f in missing
        ]
        details += [{"index": None, "field": c, "reason": "not a feature of this model"} for c in extra]
        if not details:
            details = [{"index": None, "field": None, "reason": "a column is named twice"}]
        raise InvalidInput("The CSV header must name each feature of the model once.", details[:MAX_DETAILS])
    return columns


def _table(lines: bytes, columns: list[str], first_row: int) -> npt.NDArray[np.float32]:
    """Parse whole CSV lines of numbers, naming the row (counted over the body) and column of a bad cell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # blank lines are no rows, not a warning
            table = np.loadtxt(io.BytesIO(lines), delimiter=",", dtype=np.float32, ndmin=2, quotechar='"')
    except ValueError as exc:
        message = str(exc).split(";")[0]
        cell = _CELL_RE.search(message)
        if cell:
            detail = {
                "index": first_row + int(cell[1]),
                "field": columns[int(cell[2]) - 1],
                "reason": "not a number",
            }
        else:
            width = _WIDTH_RE.search(message)
            index = first_row + int(width[1]) - 1 if width else None
            detail = {"index": index, "field": None, "reason": f"expected {len(columns)} columns"}
        raise InvalidInput("A CSV row does not match the input schema.", [detail]) from None
    if table.shape[1] != len(columns):
        detail = {"index": first_row, "field": None, "reason": f"expected {len(columns)} columns"}
        raise InvalidInput("A CSV row does not match the input schema.", [detail])
    bad_rows, bad_cols = np.nonzero(~np.isfinite(table))
    if bad_rows.size:
        details = [
            {
                "index": first_row + r,
                "field": columns[c],
                "reason": "not a finite number within float32 range",
            }
            for r, c in zip(bad_rows[:MAX_DETAILS].tolist(), bad_cols[:MAX_DETAILS].tolist(), strict=True)
        ]
        raise InvalidInput(
            f"{np.unique(bad_rows).size} CSV row(s) hold numbers the model cannot take.", details
        )
    return table


def _numeric_tables(
    stream: IO[bytes], manifest: Manifest, columns: list[str], digest: Digest
) -> Iterator[npt.NDArray[np.float32]]:
    order = [columns.index(f) for f in manifest.features]
    reorder = order != list(range(len(order)))
    rest = b""
    row = 0
    while True:
        block = stream.read(BLOCK_BYTES)
        digest.update(block)
        data = rest + block
        cut = len(data) if not block else data.rfind(b"\n") + 1
        lines, rest = data[:cut], data[cut:]
        if lines.strip():
            _decode(lines)  # a cut at a newline never splits a UTF-8 character
            table = _table(lines, columns, row)
            row += len(table)
            yield np.ascontiguousarray(table[:, order]) if reorder else table
        if not block:
            return


def _text_tables(stream: IO[bytes], digest: Digest) -> Iterator[list[str]]:
    # Quoted text may hold newlines, so text bodies are read whole (they are bounded by the body limit).
    raw = stream.read()
    digest.update(raw)
    rows = list(csv.reader(io.StringIO(_decode(raw))))
    details = [
        {"index": i, "field": "text", "reason": "expected one non-empty text column"}
        for i, row in enumerate(rows)
        if len(row) != 1 or not row[0]
    ]
    if details:
        raise InvalidInput("The CSV rows do not match the input schema.", details[:MAX_DETAILS])
    yield [row[0] for row in rows]


def csv_chunks(
    stream: IO[bytes], manifest: Manifest, chunk_rows: int, max_records: int, digest: Digest
) -> Iterator[Records]:
    """Yield a CSV body's records in feature order, chunk by chunk, raising at the first bad row."""
    header = stream.readline()
    digest.update(header)
    columns = _header(_decode(header), manifest)
    tables: Iterator[Records] = (
        _text_tables(stream, digest)
        if manifest.is_text
        else _numeric_tables(stream, manifest, columns, digest)
    )
    seen = 0
    for table in tables:
        seen += len(table)
        if seen > max_records:
            raise InvalidInput(
                f"Send at most {max_records} records in one job.",
                [{"field": "inputs", "reason": f"more than {max_records} records"}],
            )
        for start in range(0, len(table), chunk_rows):
            yield table[start : start + chunk_rows]
    if seen == 0:
        raise InvalidInput(
            "Send at least one CSV row after the header.", [{"field": "inputs", "reason": "empty"}]
        )

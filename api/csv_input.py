"""CSV bulk inputs: a header of feature names, one record a row, read and checked block by block.

Rows meet the rules JSON records meet (api/validation.py). Bodies are read as spreadsheets export
them: a UTF-8 byte order mark, LF, CRLF or bare CR line endings, quoted cells of any length.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from api.bodies import Readable
from api.validation import check_rows, off_loop
from shared.chunks import Records
from shared.errors import InvalidInput, InvalidJson
from shared.registry import Manifest

# A cell: quoted (a doubled quote inside stands for one, text after the closing quote is kept) or bare.
_CELL = re.compile(r'"(?P<quoted>(?:[^"]|"")*)(?P<close>")?(?P<after>[^,]*)|(?P<bare>[^,]*)')
# What the fast path takes as a number: blanks around it, no digit separators, hex or other scripts.
_NUMBER = re.compile(
    r"[ \t\v\f]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)[ \t\v\f]*",
    re.ASCII | re.IGNORECASE,
)
MAX_DETAILS = 50
# Bytes of the body parsed at once: parsing holds several times this, and a larger block is no quicker.
BLOCK_BYTES = 1 << 18
HEADER_BLOCK_BYTES = 1 << 16
# A header may name this many times the model's columns (repeats, unknown names) and still be
# read; a wider one is refused before it is parsed, or even read whole.
HEADER_FACTOR = 4
# A number is spelt in at most 24 characters: a row longer than this a feature is no row of numbers.
ROW_BYTES_PER_FEATURE = 64
# Text bodies larger than this are parsed on a thread, off the event loop.
OFF_LOOP_BYTES = 1 << 16
# Python's csv module refuses cells over 128 KB; the body limit and the model's schema bound them.
_CELL_LIMIT = (1 << 31) - 1


class Digest(Protocol):
    """Anything that digests the body's bytes as they are read (hashlib's objects do)."""

    def update(self, data: bytes, /) -> None:
        """Take in the next bytes."""


class _Undigested:
    """A digest that takes nothing in, for a body no Idempotency-Key will ever compare."""

    def update(self, data: bytes, /) -> None:
        """Take nothing in."""


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"The CSV body is not UTF-8: {exc}.") from None


def _too_wide(reason: str) -> InvalidInput:
    return InvalidInput(
        "The CSV header is far wider than the model's features: it was refused unread.",
        [{"index": None, "field": "header", "reason": reason}],
    )


def _too_many(max_records: int) -> InvalidInput:
    return InvalidInput(
        f"Send at most {max_records} records in one job.",
        [{"field": "inputs", "reason": f"more than {max_records} records"}],
    )


def _line_end(data: bytes) -> int:
    """Return where the first line of data ends (at a CR or an LF), or -1 when it does not yet."""
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(ends, default=-1)


def _split_header(stream: Readable, digest: Digest, manifest: Manifest) -> tuple[bytes, bytes]:
    """Return the header line and the bytes read past it, reading no more than a bounded header needs."""
    limit = HEADER_FACTOR * sum(len(f.encode()) + 3 for f in manifest.features)  # quoted, comma
    data = b""
    while True:
        block = stream.read(HEADER_BLOCK_BYTES)
        digest.update(block)
        data += block
        end = _line_end(data)
        if end > limit or (end < 0 and len(data) > limit):
            raise _too_wide(f"longer than {limit} bytes")
        # After a CR the next byte must be seen, to take a CRLF as one line ending.
        if end >= 0 and (data[end : end + 1] == b"\n" or end + 1 < len(data) or not block):
            break
        if not block:  # a header and no rows
            return data, b""
    after = end + (2 if data[end : end + 2] == b"\r\n" else 1)
    return data[:end], data[after:]


def _without_bom(line: bytes) -> bytes:
    """Return the header line without the UTF-8 byte order mark Excel's "CSV UTF-8" begins with."""
    return line[len(codecs.BOM_UTF8) :] if line.startswith(codecs.BOM_UTF8) else line


def _header(line: bytes, manifest: Manifest) -> list[str]:
    most = HEADER_FACTOR * len(manifest.features)
    if line.count(b",") >= most:
        raise _too_wide(f"more than {most} columns")
    columns = next(csv.reader([_decode(line)]), [])
    missing = [f for f in manifest.features if f not in columns]
    extra = [c for c in columns if c not in manifest.features]
    if missing or extra or len(columns) != len(set(columns)):
        details: list[dict[str, Any]] = [
            {"index": None, "field": f, "reason": "missing column"} for f in missing
        ]
        details += [{"index": None, "field": c[:64], "reason": "not a feature of this model"} for c in extra]
        if not details:
            details = [{"index": None, "field": None, "reason": "a column is named twice"}]
        raise InvalidInput("The CSV header must name each feature of the model once.", details[:MAX_DETAILS])
    return columns


def _table(lines: bytes, columns: list[str], first_row: int) -> npt.NDArray[np.float64]:
    """Parse whole CSV lines of numbers, naming the row (counted over the body) and column of a bad cell.

    The lines are converted at once in C; only when that fails are they read again one at a time,
    to name the first bad row and cell exactly.
    """
    # A quote left open at a line's end would carry a cell over the line break; such a row is bad.
    if b'"' not in lines or _quotes_pair_on_each_line(lines):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # blank lines are no rows, not a warning
                # Parsed as JSON numbers are (float64), so both meet the schema's bounds alike;
                # comments=None: a row beginning with "#" is a bad row, never one left out unsaid.
                table = np.loadtxt(
                    io.BytesIO(lines), delimiter=",", dtype=np.float64, ndmin=2, quotechar='"', comments=None
                )
        except ValueError:
            pass
        else:
            if table.shape[1] == len(columns):
                return table
    return checked_table(lines, columns, first_row)


def _quotes_pair_on_each_line(lines: bytes) -> bool:
    """Tell whether every line holds an even number of double quotes."""
    data = np.frombuffer(lines, dtype=np.uint8)
    odd = np.bitwise_xor.accumulate(data == ord('"'))
    return not odd[data == ord("\n")].any() and not odd[-1]


def checked_table(lines: bytes, columns: list[str], first_row: int) -> npt.NDArray[np.float64]:
    """Parse CSV lines one at a time as the fast path does, raising at the first bad row naming its cell."""
    rows: list[list[float]] = []
    for line in lines.decode("latin-1").split("\n"):
        if not line:  # a blank line is no row
            continue
        index = first_row + len(rows)
        cells = _cells(line)
        if len(cells) != len(columns):
            detail = {"index": index, "field": None, "reason": f"expected {len(columns)} columns"}
            raise InvalidInput("A CSV row does not match the input schema.", [detail])
        row = []
        for column, cell in zip(columns, cells, strict=True):
            if cell is None or not _NUMBER.fullmatch(cell):
                detail = {"index": index, "field": column, "reason": "not a number"}
                raise InvalidInput("A CSV row does not match the input schema.", [detail])
            row.append(float(cell))
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))


def _cells(line: str) -> list[str | None]:
    """Return a line's cells as the fast path reads them; None for a quoted cell left open."""
    cells: list[str | None] = []
    at = 0
    while True:
        cell = _CELL.match(line, at)
        assert cell is not None  # every alternative may match nothing
        if cell["bare"] is not None:
            cells.append(cell["bare"])
        else:
            closed = cell["close"] is not None
            cells.append(cell["quoted"].replace('""', '"') + cell["after"] if closed else None)
        at = cell.end() + 1  # past the comma
        if at > len(line):
            return cells


def _blocks(stream: Readable, digest: Digest, ahead: bytes) -> Iterator[bytes]:
    """Yield the bytes read ahead, then the body block by block, digesting each."""
    if ahead:
        yield ahead
    while block := stream.read(BLOCK_BYTES):
        digest.update(block)
        yield block


def _numeric_tables(
    blocks: Iterator[bytes], manifest: Manifest, columns: list[str]
) -> Iterator[npt.NDArray[np.float64]]:
    """Yield the body's rows block by block as tables of numbers in feature order, not yet checked."""
    order = [columns.index(f) for f in manifest.features]
    reorder = order != list(range(len(order)))
    # A longer row is refused before it is read whole, let alone parsed.
    row_limit = ROW_BYTES_PER_FEATURE * len(columns) + 1024
    rest = b""
    row = 0
    for block in itertools.chain(blocks, [b""]):  # the empty block at the end takes the last line
        data = rest + block
        if b"\r" in data:  # CRLF or bare CR: a CR is no part of a number
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = len(data) if not block else data.rfind(b"\n") + 1
        lines, rest = data[:cut], data[cut:]
        if lines.strip(b"\n"):  # only line breaks: blank lines, no rows (a line of blanks is a row)
            if not lines.isascii():
                _decode(lines)  # a cut at a newline never splits a UTF-8 character
            table = _table(lines, columns, row)
            yield np.ascontiguousarray(table[:, order]) if reorder else table
            row += len(table)
        if len(rest) > row_limit:
            reason = f"longer than {row_limit} bytes: expected {len(columns)} columns"
            raise InvalidInput(
                "A CSV row does not match the input schema.",
                [{"index": row, "field": None, "reason": reason}],
            )


def _text_rows(raw: bytes, max_records: int) -> list[list[str]]:
    """Return the rows of a text body's CSV, each checked to hold the one text column."""
    if csv.field_size_limit() < _CELL_LIMIT:
        csv.field_size_limit(_CELL_LIMIT)
    # newline="" lets the csv module take any line ending and keep those inside quoted cells.
    # A loop of the interpreter's own, not list(): a thread may give the interpreter up between rows.
    rows = [row for row in csv.reader(io.StringIO(_decode(raw), newline=""))]
    if len(rows) > max_records:
        raise _too_many(max_records)
    details = [
        {"index": i, "field": "text", "reason": "expected one text column"}
        for i, row in enumerate(rows)
        if len(row) != 1
    ]
    if details:
        raise InvalidInput("The CSV rows do not match the input schema.", details[:MAX_DETAILS])
    return rows


def _text_tables(blocks: Iterator[bytes], max_records: int) -> Iterator[list[Any]]:
    """Yield the body's rows of one text cell each, all at once, not yet checked."""
    # Quoted text may hold newlines, so text bodies are read whole (they are bounded by the body limit).
    raw = b"".join(blocks)
    large = len(raw) > OFF_LOOP_BYTES
    yield off_loop(_text_rows, raw, max_records) if large else _text_rows(raw, max_records)


def csv_chunks(
    stream: Readable, manifest: Manifest, chunk_rows: int, max_records: int, digest: Digest | None = None
) -> Iterator[Records]:
    """Yield a CSV body's records in feature order, chunk by chunk, raising at the first bad row.

    The body's bytes go into the digest as they are read, when one is given.
    """
    digest = _Undigested() if digest is None else digest
    header, ahead = _split_header(stream, digest, manifest)
    columns = _header(_without_bom(header), manifest)
    blocks = _blocks(stream, digest, ahead)
    # Parsed here, checked by the rules JSON records meet: rows go on to validation, never back.
    parsed: Iterator[list[Any] | npt.NDArray[np.float64]] = (
        _text_tables(blocks, max_records) if manifest.is_text else _numeric_tables(blocks, manifest, columns)
    )
    seen = 0
    for table in _in_chunks(_checked(manifest, parsed), chunk_rows):
        seen += len(table)
        if seen > max_records:
            raise _too_many(max_records)
        yield table
    if seen == 0:
        raise InvalidInput(
            "Send at least one CSV row after the header.", [{"field": "inputs", "reason": "empty"}]
        )


def _checked(manifest: Manifest, parsed: Iterator[list[Any] | npt.NDArray[np.float64]]) -> Iterator[Records]:
    """Yield each table of parsed rows checked, its rows counted over the body."""
    first = 0
    for rows in parsed:
        table = check_rows(manifest, rows, first)
        first += len(table)
        yield table


def _in_chunks(tables: Iterator[Records], size: int) -> Iterator[Records]:
    """Yield the tables' rows again in chunks of size rows (the last one may hold fewer), in order."""
    held: list[Records] = []
    count = 0
    for table in tables:
        start = 0
        while start < len(table):
            taken = table[start : start + size - count]
            held.append(taken)
            count += len(taken)
            start += len(taken)
            if count == size:
                yield _joined(held)
                held, count = [], 0
    if held:
        yield _joined(held)


def _joined(parts: list[Records]) -> Records:
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [row for part in parts for row in part]

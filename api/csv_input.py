"""CSV bulk inputs: a header of feature names, one record a row, parsed and checked with numpy."""

from __future__ import annotations

import csv
import io
import re
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.errors import InvalidInput, InvalidJson
from shared.registry import Manifest

_CELL_RE = re.compile(r"at row (\d+), column (\d+)")
_WIDTH_RE = re.compile(r"at row (\d+)")
MAX_DETAILS = 50


def _header(text: str, manifest: Manifest) -> list[str]:
    first = text.split("\n", 1)[0].rstrip("\r")
    columns = next(csv.reader([first]), [])
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


def _numbers(text: str, manifest: Manifest, columns: list[str]) -> npt.NDArray[np.float32]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty body is reported below, not as a warning
            table = np.loadtxt(
                io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float32, ndmin=2, quotechar='"'
            )
    except ValueError as exc:
        message = str(exc).split(";")[0]
        cell = _CELL_RE.search(message)
        if cell:
            detail = {"index": int(cell[1]), "field": columns[int(cell[2]) - 1], "reason": "not a number"}
        else:
            width = _WIDTH_RE.search(message)
            detail = {"index": int(width[1]) - 1 if width else None, "field": None, "reason": message}
        raise InvalidInput("A CSV row does not match the input schema.", [detail]) from None
    if table.size == 0:
        raise InvalidInput(
            "Send at least one CSV row after the header.", [{"field": "inputs", "reason": "empty"}]
        )
    bad_rows, bad_cols = np.nonzero(~np.isfinite(table))
    if bad_rows.size:
        details = [
            {"index": int(r), "field": columns[int(c)], "reason": "not a finite number within float32 range"}
            for r, c in zip(bad_rows[:MAX_DETAILS].tolist(), bad_cols[:MAX_DETAILS].tolist(), strict=True)
        ]
        raise InvalidInput(
            f"{np.unique(bad_rows).size} CSV row(s) hold numbers the model cannot take.", details
        )
    order = [columns.index(f) for f in manifest.features]
    return table if order == list(range(len(order))) else np.ascontiguousarray(table[:, order])


def _texts(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(text)))[1:]
    details = [
        {"index": i, "field": "text", "reason": "expected one non-empty text column"}
        for i, row in enumerate(rows)
        if len(row) != 1 or not row[0]
    ]
    if details or not rows:
        raise InvalidInput(
            "The CSV rows do not match the input schema.",
            details[:MAX_DETAILS] or [{"field": "inputs", "reason": "empty"}],
        )
    return [row[0] for row in rows]


def parse_csv(raw: bytes, manifest: Manifest, max_records: int) -> npt.NDArray[np.float32] | list[str]:
    """Return a CSV body's records in feature order, or raise naming the bad row and column."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"The CSV body is not UTF-8: {exc}.") from None
    columns = _header(text, manifest)
    records = _texts(text) if manifest.is_text else _numbers(text, manifest, columns)
    if len(records) > max_records:
        raise InvalidInput(
            f"Send at most {max_records} records in one job.",
            [{"field": "inputs", "reason": f"{len(records)} records"}],
        )
    return records

"""The one interface every model runtime serves, and the outputs it shares among them."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from shared.chunks import Records, as_rows
from shared.registry import Manifest

PROBABILITY_DIGITS = 6
_SCALE = 10**PROBABILITY_DIGITS
_PLACES = (10 ** np.arange(PROBABILITY_DIGITS - 1, -1, -1)).astype(np.int32)
_FRACTION_WIDTH = PROBABILITY_DIGITS + 2  # "0." and the digits
_ARRAY_WRITER_ROWS = 48
Scores = npt.NDArray[np.floating[Any]]


class Predictor(Protocol):
    """A loaded model version that scores many records in one vectorised call."""

    manifest: Manifest

    def scores(self, records: Records) -> Scores:
        """Return class probabilities (one column a label) or values, one row a record."""
        ...


def as_matrix(manifest: Manifest, records: Records) -> npt.NDArray[Any]:
    """Return the records as the 2-D array a runtime feeds its model."""
    rows = as_rows(manifest, records)
    return np.asarray(rows, dtype=object).reshape(-1, 1) if manifest.is_text else np.asarray(rows)


def outputs(manifest: Manifest, scores: Scores) -> list[dict[str, Any]]:
    """Return the API outputs of the scores, one per record."""
    parsed: list[dict[str, Any]] = orjson.loads(
        b"[" + ndjson(manifest, scores).replace(b"\n", b",")[:-1] + b"]"
    )
    return parsed


def predict(predictor: Predictor, records: Records) -> list[dict[str, Any]]:
    """Return a predictor's API outputs for the records, in order."""
    return outputs(predictor.manifest, predictor.scores(records)) if len(records) else []


def ndjson(manifest: Manifest, scores: Scores) -> bytes:
    """Return the outputs of the scores as NDJSON, one line a record, without building objects."""
    values: npt.NDArray[np.float64] = np.asarray(scores, dtype=np.float64).round(PROBABILITY_DIGITS)
    values = values.reshape(len(values), -1)
    labels = manifest.labels or []
    # Probabilities (a NaN fails both comparisons) of many rows are written at once by array
    # operations, of a few rows a line at a time (the arrays' fixed cost: 82 us for one row against
    # 5, even at about 48 rows), the same text either way; anything else a line at a time.
    probabilities = manifest.task != "regression" and len(labels) == values.shape[1] and values.size > 0
    if probabilities and values.min() >= 0 and values.max() <= 1:
        if len(values) < _ARRAY_WRITER_ROWS:
            return _few_probability_lines(labels, values)
        return _probability_lines(labels, values)
    rows = values.tolist()
    # repr() of a float is JSON unless it is nan or inf; orjson writes those as null.
    finite = bool(np.all(np.isfinite(values)))
    if manifest.task == "regression":
        if finite:
            return "".join(f'{{"value":{row[0]!r}}}\n' for row in rows).encode()
        return b"".join(orjson.dumps({"value": row[0]}) + b"\n" for row in rows)
    winners = np.nan_to_num(values, nan=-1.0).argmax(axis=1).tolist()
    if not finite:
        return b"".join(
            orjson.dumps({"label": labels[w], "probabilities": dict(zip(labels, row, strict=True))}) + b"\n"
            for w, row in zip(winners, rows, strict=True)
        )
    names = [orjson.dumps(label).decode() for label in labels]
    line = '{"label":%s,"probabilities":{' + ",".join(f"{n}:%r" for n in names) + "}}\n"
    return "".join(line % (names[w], *row) for w, row in zip(winners, rows, strict=True)).encode()


def _few_probability_lines(labels: list[str], values: npt.NDArray[np.float64]) -> bytes:
    """Return the NDJSON lines of rounded probabilities in [0, 1] as _probability_lines writes them."""
    names = [orjson.dumps(label).decode() for label in labels]
    heads = ['{"label":' + name + ',"probabilities":{' for name in names]
    keys = [name + ":" for name in names]
    lines = [
        heads[winner] + ",".join(key + _decimal(value) for key, value in zip(keys, row, strict=True)) + "}}\n"
        for winner, row in zip(values.argmax(axis=1).tolist(), values.tolist(), strict=True)
    ]
    return "".join(lines).encode()


def _decimal(value: float) -> str:
    """Return a rounded probability as plain decimal digits without trailing zeros: 0.25, 1.0, 0.000001."""
    text = f"{value:.{PROBABILITY_DIGITS}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _probability_lines(labels: list[str], values: npt.NDArray[np.float64]) -> bytes:
    """Return the NDJSON lines of rounded probabilities in [0, 1], written by array operations on bytes.

    Each line is laid out at a fixed width with zero bytes as padding, and the padding taken out
    at the end: JSON text holds no zero byte (orjson escapes one inside a label).
    """
    names = [orjson.dumps(label) for label in labels]
    heads = _padded([b'{"label":' + name + b',"probabilities":{' for name in names])
    keys = [np.frombuffer((b"," if i else b"") + name + b":", dtype=np.uint8) for i, name in enumerate(names)]
    width = heads.shape[1] + sum(len(key) + _FRACTION_WIDTH for key in keys) + 3
    lines = np.empty((len(values), width), dtype=np.uint8)
    lines[:, : heads.shape[1]] = heads[values.argmax(axis=1)]
    texts = _fraction_texts(values)
    at = heads.shape[1]
    for column, key in enumerate(keys):
        lines[:, at : at + len(key)] = key
        at += len(key)
        lines[:, at : at + _FRACTION_WIDTH] = texts[:, column]
        at += _FRACTION_WIDTH
    lines[:, at:] = np.frombuffer(b"}}\n", dtype=np.uint8)
    flat = lines.ravel()
    written: bytes = flat[flat != 0].tobytes()
    return written


def _padded(texts: list[bytes]) -> npt.NDArray[np.uint8]:
    """Return the texts as the rows of a byte matrix, each padded with zero bytes to the longest."""
    matrix = np.zeros((len(texts), max(len(text) for text in texts)), dtype=np.uint8)
    for row, text in enumerate(texts):
        matrix[row, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return matrix


def _fraction_texts(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Return values of [0, 1], already rounded to the digits, as "0.25", "1.0", "0.0" padded with zero bytes.

    units / 10**digits is the double np.round gave, so the text reads back as exactly that value.
    """
    units = np.rint(values * _SCALE).astype(np.int32)
    digits = (units[..., None] // _PLACES % 10).astype(np.uint8) + ord("0")
    trailing_zeros = sum((units % 10**place == 0).astype(np.int32) for place in range(1, PROBABILITY_DIGITS))
    kept = np.where((units == 0) | (units == _SCALE), 1, PROBABILITY_DIGITS - trailing_zeros)
    digits[np.arange(PROBABILITY_DIGITS) >= kept[..., None]] = 0
    texts = np.empty((*units.shape, _FRACTION_WIDTH), dtype=np.uint8)
    texts[..., 0] = np.where(units == _SCALE, ord("1"), ord("0"))
    texts[..., 1] = ord(".")
    texts[..., 2:] = digits
    return texts

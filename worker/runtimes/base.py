"""The one interface every model runtime serves, and the outputs it shares among them."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from shared.chunks import Records, as_rows
from shared.registry import Manifest

PROBABILITY_DIGITS = 6
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
    values = np.round(np.asarray(scores, dtype=np.float64), PROBABILITY_DIGITS)
    if not np.all(np.isfinite(values)):  # repr() of nan or inf is not JSON: let orjson write null
        rows = values.reshape(len(values), -1).tolist()
        return b"".join(orjson.dumps(_as_object(manifest, row)) + b"\n" for row in rows)
    if manifest.task == "regression":
        return "".join(f'{{"value":{v!r}}}\n' for v in values.reshape(-1).tolist()).encode()
    labels = manifest.labels or []
    names = [orjson.dumps(label).decode() for label in labels]
    line = '{"label":%s,"probabilities":{' + ",".join(f"{n}:%r" for n in names) + "}}\n"
    winners = values.argmax(axis=1).tolist()
    return "".join(line % (names[w], *row) for w, row in zip(winners, values.tolist(), strict=True)).encode()


def _as_object(manifest: Manifest, row: list[float]) -> dict[str, Any]:
    if manifest.task == "regression":
        return {"value": row[0]}
    labels = manifest.labels or []
    best = max(range(len(row)), key=lambda i: row[i] if row[i] == row[i] else -1.0)
    return {"label": labels[best], "probabilities": dict(zip(labels, row, strict=True))}

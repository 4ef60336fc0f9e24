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
    rows = values.reshape(len(values), -1).tolist()
    # repr() of a float is JSON unless it is nan or inf; orjson writes those as null.
    finite = bool(np.all(np.isfinite(values)))
    if manifest.task == "regression":
        if finite:
            return "".join(f'{{"value":{row[0]!r}}}\n' for row in rows).encode()
        return b"".join(orjson.dumps({"value": row[0]}) + b"\n" for row in rows)
    labels = manifest.labels or []
    winners = np.nan_to_num(values, nan=-1.0).argmax(axis=1).tolist()
    if not finite:
        return b"".join(
            orjson.dumps({"label": labels[w], "probabilities": dict(zip(labels, row, strict=True))}) + b"\n"
            for w, row in zip(winners, rows, strict=True)
        )
    names = [orjson.dumps(label).decode() for label in labels]
    line = '{"label":%s,"probabilities":{' + ",".join(f"{n}:%r" for n in names) + "}}\n"
    return "".join(line % (names[w], *row) for w, row in zip(winners, rows, strict=True)).encode()

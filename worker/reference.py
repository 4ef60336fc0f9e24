"""Reference rows of a model version: read from the uploaded CSV, and frozen into statistics for drift.

``reference.json`` holds, for each numeric feature, the edges of ten quantile bins and the share
of reference rows in each; for a text feature, the same of the texts' lengths and the share of
their tokens outside the model's vocabulary (when it has one); for the predictions, each label's
share or the bins of the values. A value v falls in bin i when ``edges[i-1] < v <= edges[i]``,
the first and last bins open-ended, so a later window of values is binned the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.errors import InvalidModel
from shared.publishing import PublishMetadata

REFERENCE_JSON = "reference.json"
BINS = 10
# Reference rows beyond this many are not read: statistics and checks need no more.
MAX_ROWS = 100_000
# Runtimes compute in float32: a larger magnitude would silently become infinity.
FLOAT32_MAX = 3.4e38

Rows = npt.NDArray[np.float64] | list[str]


def read_rows(path: Path, metadata: PublishMetadata) -> Rows:
    """Return the reference CSV's rows (numbers in feature order, or texts), refusing a malformed one."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            reader = csv.reader(handle)
            next(reader, None)  # the header, which the API checked names the features
            rows = [row for _, row in zip(range(MAX_ROWS), reader, strict=False)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InvalidModel(f"The reference CSV cannot be read: {exc}; send it as UTF-8 CSV.") from None
    width = len(metadata.features)
    for index, row in enumerate(rows):
        if len(row) != width:
            raise InvalidModel(
                f"Reference row {index + 1} has {len(row)} values; the model has {width} features."
            )
    if metadata.is_text:
        return [row[0] for row in rows]
    try:
        table = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    except ValueError:
        bad = next(i for i, row in enumerate(rows) if not _numbers(row))
        raise InvalidModel(f"Reference row {bad + 1} holds a value that is not a number.") from None
    if not (np.isfinite(table).all() and (np.abs(table) <= FLOAT32_MAX).all()):
        raise InvalidModel(
            "The reference rows hold a value that is not a finite number within float32 range."
        )
    return table


def _numbers(row: list[str]) -> bool:
    try:
        [float(value) for value in row]
    except ValueError:
        return False
    return True


def bins(values: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Return the inner edges of ten quantile bins of the values and the share of values in each."""
    if values.size == 0:
        return {"edges": [], "shares": []}
    edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / values.size).round(6).tolist()}


def text_vocabulary(estimator: Any) -> tuple[Any, set[str]] | None:
    """Return the analyzer and vocabulary of the text vectorizer an estimator holds, if any."""
    steps = [step for _, step in getattr(estimator, "steps", [])] or [estimator]
    for step in steps:
        if hasattr(step, "vocabulary_") and hasattr(step, "build_analyzer"):
            return step.build_analyzer(), set(step.vocabulary_)
    return None


def _text_statistics(texts: list[str], estimator: Any) -> dict[str, Any]:
    found = text_vocabulary(estimator) if estimator is not None else None
    outside: float | None = None
    if found is not None:
        analyze, vocabulary = found
        tokens = [token for text in texts for token in analyze(text)]
        outside = round(sum(t not in vocabulary for t in tokens) / len(tokens), 6) if tokens else 0.0
    lengths = np.asarray([len(text) for text in texts], dtype=np.float64)
    return {"type": "string", "length": bins(lengths), "out_of_vocabulary_share": outside}


def statistics(
    metadata: PublishMetadata,
    rows: Rows,
    scores: npt.NDArray[np.float64],
    labels: list[str] | None,
    estimator: Any,
) -> dict[str, Any]:
    """Return the frozen reference statistics of the rows and of the model's predictions on them."""
    features: dict[str, Any] = {}
    if isinstance(rows, list):
        features["text"] = _text_statistics(rows, estimator)
    else:
        for column, feature in enumerate(metadata.features):
            features[feature.name] = {"type": feature.type, **bins(rows[:, column])}
    predictions: dict[str, Any]
    if labels is not None:
        winners = (
            np.bincount(scores.argmax(axis=1), minlength=len(labels))
            if len(scores)
            else np.zeros(len(labels))
        )
        total = max(1, len(scores))
        predictions = {
            "labels": {label: round(float(n) / total, 6) for label, n in zip(labels, winners, strict=True)}
        }
    else:
        predictions = {"values": bins(scores.reshape(-1))}
    return {
        "rows": len(rows),
        "binning": "bin i holds v with edges[i-1] < v <= edges[i]; the first and last bins are open-ended",
        "features": features,
        "predictions": predictions,
    }

"""The one interface every model runtime serves, and the outputs it shares among them."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from shared.registry import Manifest

PROBABILITY_DIGITS = 6


class Predictor(Protocol):
    """A loaded model version that predicts many records in one vectorised call."""

    manifest: Manifest

    def predict(self, records: list[Any]) -> list[dict[str, Any]]:
        """Return one output per record, in order."""
        ...


def as_matrix(manifest: Manifest, records: list[Any]) -> npt.NDArray[Any]:
    """Return the records as the 2-D array a runtime feeds its model."""
    if manifest.is_text:
        return np.asarray(records, dtype=object).reshape(-1, 1)
    return np.asarray(records, dtype=np.float32).reshape(len(records), len(manifest.features))


def format_outputs(manifest: Manifest, scores: npt.NDArray[Any]) -> list[dict[str, Any]]:
    """Turn class probabilities or regression values, one row a record, into API outputs."""
    if manifest.task == "regression":
        return [{"value": v} for v in scores.reshape(-1).astype(np.float64).tolist()]
    labels = manifest.labels or []
    rounded = np.round(scores.astype(np.float64), PROBABILITY_DIGITS)
    names = [labels[i] for i in scores.argmax(axis=1).tolist()]
    return [
        {"label": name, "probabilities": dict(zip(labels, row, strict=True))}
        for name, row in zip(names, rounded.tolist(), strict=True)
    ]

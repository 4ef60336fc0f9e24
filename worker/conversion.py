"""The two runtimes of a model version compared: scikit-learn's scores, ONNX's, and the conversion between.

A version is served with ONNX only when the converted model agrees with scikit-learn on every
reference row, each fed exactly as a worker feeds it (numbers narrowed to float32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.errors import InvalidModel
from shared.publishing import PublishMetadata
from shared.registry import Manifest
from worker.reference import Rows
from worker.runtimes.onnx import OnnxPredictor

# ONNX serves a version only when it agrees with scikit-learn on every reference row: the same label
# and probabilities within this (classification), or values within this times max(1, |value|).
ONNX_TOLERANCE = 1e-4
PROBABILITY_DIGITS = 6  # what the API answers, so what a label is judged on


def brief(exc: BaseException) -> str:
    """Return an exception's type and message, cut to a reason's length."""
    return f"{type(exc).__name__}: {exc}"[:300]


def _as_served(rows: Rows) -> Any:
    """Return the rows as a runtime receives them: texts, or numbers narrowed to float32."""
    if isinstance(rows, list):
        return rows
    return rows.astype(np.float32).astype(np.float64)


def sklearn_scores(estimator: Any, metadata: PublishMetadata, rows: Rows) -> npt.NDArray[np.float64]:
    """Return the estimator's probabilities or values on the rows, refusing a model that fails on them."""
    try:
        feed = _as_served(rows)
        if metadata.task == "classification":
            scores = np.asarray(estimator.predict_proba(feed), dtype=np.float64)
        else:
            scores = np.asarray(estimator.predict(feed), dtype=np.float64).reshape(len(rows), 1)
    except Exception as exc:  # the estimator refuses rows of this shape: it is not this metadata's model
        raise InvalidModel(f"The model fails to predict on the reference rows ({brief(exc)}).") from None
    return scores


def onnx_scores(manifest: Manifest, path: Path, rows: Rows) -> npt.NDArray[np.float64]:
    """Return what the ONNX runtime serves for the rows, exactly as a worker would serve them."""
    predictor = OnnxPredictor(manifest, path)
    feed: Any = list(rows) if isinstance(rows, list) else rows.astype(np.float32)
    return np.asarray(predictor.scores(feed), dtype=np.float64)


def _disagreement(
    expected: npt.NDArray[np.float64], got: npt.NDArray[np.float64], task: str
) -> tuple[float, str | None]:
    """Return the largest difference and, when past the tolerance, how the two runtimes disagree."""
    if expected.shape != got.shape:
        return float("inf"), f"ONNX answers {got.shape[1:]} values a row, scikit-learn {expected.shape[1:]}"
    diff = np.abs(expected - got)
    largest = float(diff.max()) if diff.size else 0.0
    if task == "classification":
        labels = np.round(expected, PROBABILITY_DIGITS).argmax(axis=1)
        other = np.round(got, PROBABILITY_DIGITS).argmax(axis=1)
        if not np.array_equal(labels, other):
            return largest, f"{int((labels != other).sum())} reference row(s) get another label"
        if largest > ONNX_TOLERANCE:
            return largest, f"probabilities differ by up to {largest:.2g}"
        return largest, None
    if (diff > ONNX_TOLERANCE * np.maximum(1.0, np.abs(expected))).any():
        return largest, f"values differ by up to {largest:.2g}"
    return largest, None


def convert_to_onnx(
    estimator: Any, manifest: Manifest, rows: Rows, expected: npt.NDArray[np.float64], target: Path
) -> dict[str, Any]:
    """Write an ONNX artifact to target when it agrees with scikit-learn's expected scores on the rows.

    Return what was measured: the tolerance, the rows checked, the largest difference, or why not.
    """
    figures: dict[str, Any] = {"onnx_tolerance": ONNX_TOLERANCE, "onnx_check_rows": len(rows)}
    if not len(rows):
        return {**figures, "onnx_refused": "no reference rows to check the conversion on"}
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType

        kind = (
            StringTensorType([None, 1])
            if manifest.is_text
            else FloatTensorType([None, len(manifest.features)])
        )
        options = {"zipmap": False} if manifest.task == "classification" else None
        model = to_onnx(estimator, initial_types=[("input", kind)], options=options, target_opset=17)
        target.write_bytes(model.SerializeToString())
        got = onnx_scores(manifest, target, rows)
    except Exception as exc:  # skl2onnx and onnxruntime raise many kinds for what they cannot convert
        target.unlink(missing_ok=True)
        return {**figures, "onnx_refused": f"conversion failed: {brief(exc)}"}
    largest, refused = _disagreement(expected, got, manifest.task)
    figures["onnx_max_abs_diff"] = largest
    if refused is not None:
        target.unlink()
        figures["onnx_refused"] = f"disagrees with scikit-learn beyond the tolerance: {refused}"
    return figures


def check_onnx(manifest: Manifest, path: Path, rows: Rows) -> npt.NDArray[np.float64]:
    """Return an uploaded ONNX model's scores on the rows, or raise InvalidModel if it cannot serve them."""
    if manifest.task == "classification" and not manifest.labels:
        raise InvalidModel("An ONNX classifier's metadata must name its labels, in the order of its outputs.")
    try:
        scores = onnx_scores(manifest, path, rows)
    except Exception as exc:  # onnxruntime's many errors for a file it cannot load or run
        raise InvalidModel(
            f"The ONNX model cannot be loaded or run on {len(manifest.features)} "
            f"{'text' if manifest.is_text else 'float32'} feature(s): {brief(exc)}"
        ) from None
    width = len(manifest.labels or []) or 1
    if scores.shape[1] != width:
        raise InvalidModel(
            f"The ONNX model answers {scores.shape[1]} value(s) a row; the metadata needs {width}."
        )
    return scores

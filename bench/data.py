"""The records the workloads send: rows of the example models' own data sets, and the bulk CSV body."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_breast_cancer, load_iris

# The corpus models/train.py trains scam-email on.
EMAILS = Path(__file__).resolve().parents[1] / "models" / "data" / "emails.csv"


def _feature_name(raw: str) -> str:
    return raw.strip().lower().replace(" ", "_").removesuffix("_(cm)")


def _rows(features: list[str] | None, names: list[str], data: npt.NDArray[np.float64]) -> list[list[float]]:
    """Return the data's rows with columns in the order of the model's features."""
    normalised = [_feature_name(n) for n in names]
    if features is not None and features != normalised:
        missing = sorted(set(features) - set(normalised))
        if missing:
            raise ValueError(f"the model has features the data set lacks: {missing[:5]}")
        data = data[:, [normalised.index(f) for f in features]]
    rows: list[list[float]] = data.tolist()
    return rows


def breast_cancer_rows(features: list[str] | None = None) -> list[list[float]]:
    """Return the 569 rows of the breast-cancer data set, in the model's feature order."""
    bunch = load_breast_cancer()
    return _rows(features, list(bunch.feature_names), bunch.data)


def iris_rows(features: list[str] | None = None) -> list[list[float]]:
    """Return the 150 rows of the iris data set, in the model's feature order."""
    bunch = load_iris()
    return _rows(features, list(bunch.feature_names), bunch.data)


def email_texts(path: Path = EMAILS) -> list[str]:
    """Return the texts of the scam-email corpus the example model was trained on."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def csv_body(features: list[str], rows: list[list[float]], count: int) -> bytes:
    """Return a CSV document of a header row and count data rows, cycling through the given rows."""
    block = io.StringIO()
    writer = csv.writer(block, lineterminator="\n")
    writer.writerows(rows)
    lines = block.getvalue().encode()
    whole, rest = divmod(count, len(rows))
    tail = b"".join(lines.splitlines(keepends=True)[:rest])
    return ",".join(features).encode() + b"\n" + lines * whole + tail

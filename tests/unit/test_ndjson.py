"""A chunk's NDJSON outputs, written by array operations, read back as the outputs of the scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.registry import Registry
from worker.runtimes.base import PROBABILITY_DIGITS, _few_probability_lines, _probability_lines, ndjson

# Probabilities a model gives, and the values that test rounding: halves of the last digit, the
# smallest digit, exact ends, and numbers whose float32 is just off a decimal.
EDGES = [0.0, 1.0, 1e-6, 5e-7, 4.9999e-7, 0.5, 0.25, 0.1, 0.9999995, 0.9999994, 0.123456, 0.1234565, 1 / 3]
LABEL = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


def _expected(labels: list[str], scores: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    """Return the outputs as the API defines them: the rounded probabilities, the label of the highest."""
    values = np.round(np.asarray(scores, dtype=np.float64), PROBABILITY_DIGITS)
    winners = np.nan_to_num(values, nan=-1.0).argmax(axis=1).tolist()
    return [
        {"label": labels[winner], "probabilities": dict(zip(labels, row, strict=True))}
        for winner, row in zip(winners, values.tolist(), strict=True)
    ]


def _read(lines: bytes) -> list[Any]:
    assert lines.endswith(b"\n")
    assert b"\0" not in lines
    return [orjson.loads(line) for line in lines.split(b"\n")[:-1]]


@settings(max_examples=300, deadline=None)
@given(
    labels=st.lists(LABEL, min_size=2, max_size=5, unique=True),
    rows=st.integers(1, 120),  # a few rows are written a line at a time, more by array operations
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_probabilities_read_back_as_the_rounded_scores_and_the_label_of_the_highest(
    registry: Registry, labels: list[str], rows: int, dtype: type, data: st.DataObject
) -> None:
    """Any probabilities, labels with quotes, controls or any script: each line is the output, in order."""
    manifest = registry.get("iris").model_copy(update={"labels": labels})
    values = st.one_of(st.sampled_from(EDGES), st.floats(0, 1))
    scores = data.draw(hnp.arrays(dtype, (rows, len(labels)), elements=values))
    assert _read(ndjson(manifest, scores)) == _expected(labels, scores)


def test_scores_that_are_no_probabilities_are_written_line_by_line_alike(registry: Registry) -> None:
    """Values past 0 and 1, NaN and infinity (written as null) keep their outputs."""
    manifest = registry.get("iris")
    labels = manifest.labels or []
    scores = np.asarray([[-0.5, 2.25, 0.0], [np.nan, 0.5, 0.5], [np.inf, 0.0, 1.0]])
    lines = _read(ndjson(manifest, scores))
    assert lines[0] == _expected(labels, scores)[0]
    assert lines[1]["probabilities"] == {"setosa": None, "versicolor": 0.5, "virginica": 0.5}
    assert lines[2]["probabilities"] == {"setosa": None, "versicolor": 0.0, "virginica": 1.0}


@pytest.mark.parametrize("copies", [1, 100])  # three rows a line at a time; 300 by array operations
def test_probability_text_is_plain_decimal_without_trailing_zeros(registry: Registry, copies: int) -> None:
    """0.000001 rather than 1e-06, 0.25 rather than 0.250000, 1.0 and 0.0 for the ends."""
    manifest = registry.get("breast-cancer")
    scores = np.asarray([[1e-6, 0.999999], [0.25, 0.75], [1.0, 0.0]] * copies, dtype=np.float32)
    lines = ndjson(manifest, scores)
    assert lines.split(b"\n")[-4:-1] == [
        b'{"label":"malignant","probabilities":{"benign":0.000001,"malignant":0.999999}}',
        b'{"label":"malignant","probabilities":{"benign":0.25,"malignant":0.75}}',
        b'{"label":"benign","probabilities":{"benign":1.0,"malignant":0.0}}',
    ]


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(LABEL, min_size=2, max_size=4, unique=True), rows=st.integers(1, 60), data=st.data())
def test_a_few_rows_are_written_byte_for_byte_as_many_rows_are(
    labels: list[str], rows: int, data: st.DataObject
) -> None:
    """The line-at-a-time writer of a few rows and the array writer give the same bytes."""
    values = st.one_of(st.sampled_from(EDGES), st.floats(0, 1))
    scores = data.draw(hnp.arrays(np.float64, (rows, len(labels)), elements=values))
    rounded = np.round(scores, PROBABILITY_DIGITS)
    assert _few_probability_lines(labels, rounded) == _probability_lines(labels, rounded)

"""The routing's rules, and how a shadow version's outputs are compared with the served ones."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.registry import Manifest
from shared.routing import Routing, RoutingChange
from worker.shadow import compare


def _routing(routes: dict[str, int], shadow: dict[str, Any] | None = None) -> Routing:
    return Routing.model_validate(
        {"routes": routes, "shadow": shadow, "updated_at": "2026-01-01T00:00:00.000Z", "updated_by": "o"}
    )


def _manifest(task: str) -> Manifest:
    """Return a manifest of the given task, as much of one as comparing outputs reads."""
    fields = {
        "name": "m", "version": "1.0.0", "task": task, "features": ["x"], "input_schema": {},
        "output_schema": {}, "labels": ["setosa", "versicolor", "virginica"], "runtime": "onnx",
        "artifact": "model.onnx", "artifact_format": "onnx", "artifacts": {"model.onnx": "0" * 64},
        "created_at": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    return Manifest.model_validate(fields)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"routes": {"1.0.0": 60, "1.1.0": 39}}, "the weights sum to 99, not 100"),
        ({"routes": {}}, "the weights sum to 0, not 100"),
        ({"routes": {"1.0.0": 101, "1.1.0": -1}}, "each weight is an integer from 0 to 100"),
        ({"routes": {"latest": 100}}, "routes are keyed by version"),
        ({"routes": {"1.0.0": 100}, "shadow": {"version": "1.1.0", "sample": 0}}, "greater than 0"),
        (
            {"routes": {"1.0.0": 100}, "shadow": {"version": "1.1.0", "sample": 1.5}},
            "less than or equal to 1",
        ),
        ({"routes": {"1.0.0": 100}, "weights": {}}, "Extra inputs are not permitted"),
        ({"routes": {"1.0.0": 50.5, "1.1.0": 49.5}}, "integer"),
    ],
)
def test_a_routing_change_is_integer_weights_by_version_summing_to_100(
    body: dict[str, Any], reason: str
) -> None:
    """Each way a routing can be wrong is refused with a reason that says it."""
    with pytest.raises(ValidationError) as refused:
        RoutingChange.model_validate(body)
    assert reason in str(refused.value)


def test_the_heaviest_version_is_the_default_and_routed_means_weight_or_shadow() -> None:
    """The default is the largest weight, the newest of equals; weight 0 and not the shadow is not routed."""
    routing = _routing(
        {"1.0.0": 45, "1.10.0": 45, "1.2.0": 10, "2.0.0": 0}, {"version": "3.0.0", "sample": 0.1}
    )
    assert routing.heaviest() == "1.10.0"
    assert [v for v in ("1.0.0", "1.2.0", "2.0.0", "3.0.0", "9.0.0") if routing.routed(v)] == [
        "1.0.0", "1.2.0", "3.0.0",
    ]  # fmt: skip


def test_classifications_agree_on_the_label_and_differ_by_the_largest_probability_gap() -> None:
    """Two records: the first agrees (gap 0.1), the second does not (gap 0.6)."""
    manifest = _manifest("classification")
    served = [
        {"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0}},
        {"label": "versicolor", "probabilities": {"setosa": 0.1, "versicolor": 0.8, "virginica": 0.1}},
    ]
    shadowed = [
        {"label": "setosa", "probabilities": {"setosa": 0.8, "versicolor": 0.2, "virginica": 0.0}},
        {"label": "virginica", "probabilities": {"setosa": 0.1, "versicolor": 0.2, "virginica": 0.7}},
    ]
    compared, agreed, diff = compare(manifest, served, shadowed)
    assert (compared, agreed) == (2, 1)
    assert diff == pytest.approx(0.1 + 0.6)


def test_regressions_agree_within_a_millionth_of_the_served_value() -> None:
    """|Δ| ≤ 1e-6·max(1, |y|) agrees; anything more does not, and every gap is summed."""
    manifest = _manifest("regression")
    served = [{"value": 1000.0}, {"value": 0.5}, {"value": 2.0}]
    shadowed = [{"value": 1000.0005}, {"value": 0.5000009}, {"value": 2.1}]
    compared, agreed, diff = compare(manifest, served, shadowed)
    assert (compared, agreed) == (3, 2)
    assert diff == pytest.approx(0.0005 + 0.0000009 + 0.1)

"""Schemathesis drives generated requests from /openapi.json: no 5xx, every answer as the spec says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation

from tests.integration.conftest import KEY
from tools.stack import Stack, free_port

EXAMPLES = 100
MIN_REQUESTS = 1000


@pytest.fixture(scope="module")
def fuzzed_api(stack_factory: Callable[..., Stack], api_base: str) -> str:
    """Start an API whose waits are short, so generated Prefer headers cannot stall the run."""
    return stack_factory(INFER_MAX_WAIT_S="0.2", INFER_MAX_BODY_BYTES="65536").start_api(free_port())


def _fuzz(operation: Any, mode: GenerationMode, base: str, sent: list[str]) -> None:
    """Send generated requests to one operation and validate each answer against the spec."""
    headers = {"Authorization": f"Bearer {KEY}"} if operation.path.startswith("/v1") else None

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        sent.append(operation.label)
        header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
        # A case made invalid in its headers (the key dropped or garbled) is sent as generated.
        invalid_headers = header is not None and header.mode == GenerationMode.NEGATIVE
        case.call_and_validate(base_url=base, headers=None if invalid_headers else headers)

    try:
        check()
    except Unsatisfiable:  # a route without parameters has no invalid request to make
        assert mode == GenerationMode.NEGATIVE


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_no_5xx_and_answers_match_the_spec(
    fuzzed_api: str, mode: GenerationMode
) -> None:
    """Every generated request, valid by the spec or not, is answered without a 5xx, as the spec describes."""
    openapi = schemathesis.openapi.from_url(fuzzed_api + "/openapi.json")
    sent: list[str] = []
    for result in openapi.get_all_operations():
        _fuzz(result.ok(), mode, fuzzed_api, sent)
    # Two modes of at least half the total each: together at least MIN_REQUESTS.
    assert len(sent) >= MIN_REQUESTS // 2, f"only {len(sent)} requests were generated"

"""Schemathesis drives generated requests from /openapi.json: no 5xx, every answer as the spec says.

Each operation alone, with requests valid by the spec and not; then sequences that follow the
document's links from a submitted job to its poll, cancel and outputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation

from tests.integration.conftest import KEY
from tools.stack import Stack, free_port

EXAMPLES = 60
MIN_REQUESTS = 600
SCENARIOS = 40
STEPS = 6
# Rounds of scenarios at most, until one has submitted jobs and followed their links.
ROUNDS = 3
AUTH = {"Authorization": f"Bearer {KEY}"}
IRIS_ROW = [6.2, 2.9, 4.3, 1.3]
SUBMIT = "POST /v1/models/{name}/jobs"
LINKED = ("GET /v1/jobs/{job_id}", "POST /v1/jobs/{job_id}/cancel", "GET /v1/jobs/{job_id}/outputs")
# How the checks read this API. A request too long for the HTTP server to read is refused with 414 or
# 431 before the app sees it: a rejection like any 4xx. A record's schema is its model's
# (GET /v1/models/{name}), not the document's: a submission valid by the document may still not fit
# the model, and then its documented answer is 422.
CHECKS = f"""
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429",
                     "431", "5xx"]

[[operations]]
include-name = "{SUBMIT}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422",
                                                     "429", "5xx"]
"""


def _schema(base: str) -> Any:
    """Return the live document as schemathesis reads it, with the checks configured for this API."""
    config = schemathesis.config.SchemathesisConfig.from_str(CHECKS)
    return schemathesis.openapi.from_url(base + "/openapi.json", config=config)


@pytest.fixture(scope="module")
def fuzzed_api(stack_factory: Callable[..., Stack], api_base: str) -> str:
    """Start an API whose waits are short and limits small, so generated requests cannot stall the run."""
    # Few records a job, so a body made to break maxItems stays small.
    limits = {"INFER_MAX_WAIT_S": "0.2", "INFER_MAX_BODY_BYTES": "65536", "INFER_MAX_RECORDS": "20"}
    return stack_factory(**limits).start_api(free_port())


def _fuzz(operation: Any, mode: GenerationMode, base: str, sent: list[str]) -> None:
    """Send generated requests to one operation and validate each answer against the spec."""
    headers = AUTH if operation.path.startswith("/v1") else None

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
    openapi = _schema(fuzzed_api)
    sent: list[str] = []
    for result in openapi.get_all_operations():
        _fuzz(result.ok(), mode, fuzzed_api, sent)
    # Two modes of at least half the total each: together at least MIN_REQUESTS.
    assert len(sent) >= MIN_REQUESTS // 2, f"only {len(sent)} requests were generated"


def test_sequences_along_the_links_find_no_failure(fuzzed_api: str) -> None:
    """Submitted jobs are polled, canceled and read through the links, every answer as the spec says."""
    openapi = _schema(fuzzed_api)
    answered: Counter[tuple[str, int]] = Counter()

    class Sequences(openapi.as_state_machine()):  # type: ignore[misc]
        """Scenarios of linked calls on the module's API, with the test's key."""

        def before_call(self, case: Any) -> None:
            # Generated records rarely fit the model; a valid submission has a known model and a real
            # record, so the links lead to real jobs (any other field stays as generated).
            if case.operation.label == SUBMIT and isinstance(case.body, dict) and "inputs" in case.body:
                valid = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
                if valid:
                    case.path_parameters["name"] = "iris"
                    case.body = {**case.body, "inputs": [IRIS_ROW]}
                    case.body.pop("version", None)
                    # Answered once the job ended (this API caps a wait at 0.2 s, ample for one
                    # record), so the linked calls that follow (cancel: 409, outputs: 200) answer the
                    # same whenever the scenario is replayed, whatever the worker's speed.
                    case.query = {**(case.query or {}), "wait": "30"}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": fuzzed_api, "headers": AUTH if case.path.startswith("/v1") else {}}

        def after_call(self, response: Any, case: Any) -> None:
            answered[case.operation.label, response.status_code] += 1
            super().after_call(response, case)

    def reached_jobs() -> bool:
        # The links took real job ids to the job's routes: answers other than unknown_job came back.
        followed = sum(n for (label, status), n in answered.items() if label in LINKED and status != 404)
        return answered[SUBMIT, 202] + answered[SUBMIT, 200] > 0 and followed > 0

    # Hypothesis chooses which operations each scenario calls, steered by the answers: a round can
    # (CI did, derandomized by Hypothesis's CI profile) call the submit only twice, both refused, and
    # so follow no link to a job. Such a round found no failure but tested no link, so another round,
    # with other draws, follows; any failure a round finds ends the test at once.
    for _ in range(ROUNDS):
        Sequences.run(
            settings=settings(
                max_examples=SCENARIOS,
                stateful_step_count=STEPS,
                phases=[Phase.generate],
                deadline=None,
                database=None,
                derandomize=False,
                suppress_health_check=list(HealthCheck),
            )
        )
        if reached_jobs():
            break
    assert reached_jobs(), answered

"""A client that openapi-python-client generates from the live /openapi.json works against the real API."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import requests

from tests.integration.conftest import KEY, Api

PACKAGE = "generated_inference_client"  # not the project's own client package
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]


@pytest.fixture(scope="module")
def generated(api_base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Generate a client package from the served document, unmodified, and make it importable."""
    root = tmp_path_factory.mktemp("generated")
    spec = root / "openapi.json"
    spec.write_bytes(requests.get(api_base + "/openapi.json", timeout=10).content)
    # Only the package's name and no formatting hooks (ruff is not on the test's PATH) are configured.
    config = root / "config.json"
    config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec),
               "--meta", "none", "--output-path", str(root / PACKAGE), "--config", str(config)]  # fmt: skip
    made = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    # The generator reads everything but a text/csv request body, which it has no type for.
    warnings = [line for line in made.stdout.splitlines() if line.startswith("WARNING")]
    assert warnings in ([], ["WARNING parsing POST /v1/models/{name}/jobs within jobs."]), made.stdout
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_client_submits_polls_reads_outputs_and_gets_typed_errors(
    generated: Path, api: Api
) -> None:
    """The generated client submits, polls to succeeded, reads outputs, and types a 422 and a 404."""
    client_module, models = _module("client"), _module("models")
    submit_job, get_job = _module("api.jobs.submit_job"), _module("api.jobs.get_job")
    get_job_outputs = _module("api.jobs.get_job_outputs")
    client = client_module.AuthenticatedClient(base_url=api.base, token=KEY, timeout=httpx.Timeout(60))
    with client:
        accepted = submit_job.sync_detailed("iris", client=client, body=models.SubmitBody(inputs=IRIS_ROWS))
        assert accepted.status_code == 202
        job = accepted.parsed
        assert isinstance(job, models.Job)
        assert job.status == models.JobStatus.QUEUED
        assert accepted.headers["Location"] == job.urls.get
        for _ in range(10):  # each poll holds the answer until the job ends, so one is enough
            job = get_job.sync(job.id, client=client, wait=10)
            assert isinstance(job, models.Job)
            if job.status != models.JobStatus.QUEUED and job.status != models.JobStatus.RUNNING:
                break
        assert job.status == models.JobStatus.SUCCEEDED
        assert [output.label for output in job.outputs] == ["setosa", "versicolor"]
        assert job.progress.done == job.progress.total == 2
        streamed = get_job_outputs.sync_detailed(job.id, client=client)
        assert streamed.status_code == 200
        lines = [json.loads(line) for line in streamed.content.decode().splitlines()]
        assert [line["label"] for line in lines] == ["setosa", "versicolor"]

        bad = submit_job.sync_detailed(
            "iris", client=client, body=models.SubmitBody(inputs=[[5.1, 3.5, 1.4], [6.2, 2.9, 4.3, 1.3]])
        )
        assert bad.status_code == 422
        assert isinstance(bad.parsed, models.Error)
        assert bad.parsed.error.code == models.ErrorCode.INVALID_INPUT
        assert bad.parsed.error.details[0].index == 0
        missing = get_job.sync_detailed("0" * 32, client=client)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Error)
        assert missing.parsed.error.code == models.ErrorCode.UNKNOWN_JOB

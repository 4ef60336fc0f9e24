"""The `infer` command line as a user runs it: a subprocess against the real service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference_client import Client

from tests.client.conftest import KEY, breast_cancer_csv
from tools.stack import Stack, free_port

INFER = [sys.executable, "-m", "inference_client"]


def _env(api: str, key: str = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFER_")}
    env.update({"INFER_API": api, "INFER_API_KEY": key, "COLUMNS": "120"})
    return env


def _run(api: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INFER, *args], env=_env(api, key), capture_output=True, text=True, timeout=60)


def test_predict_resumes_the_same_job_after_ctrl_c(
    stack_factory: Callable[..., Stack], clean_redis: Any, tmp_path: Path
) -> None:
    """Ctrl-C leaves the job running and its id in out.csv.job; a rerun waits for it and writes out.csv."""
    # No worker takes the job until after the Ctrl-C, so it is surely unfinished when interrupted.
    stack = stack_factory(INFER_QUEUE_NAME="cli-resume")
    api_base = stack.start_api(free_port())
    rows = tmp_path / "rows.csv"
    rows.write_bytes(breast_cancer_csv(100_000))
    out = tmp_path / "out.csv"
    state = tmp_path / "out.csv.job"
    argv = [*INFER, "predict", "breast-cancer", str(rows), "-o", str(out)]
    first = subprocess.Popen(argv, env=_env(api_base), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (state.exists() and "job" in json.loads(state.read_text() or "{}")):
        assert time.monotonic() < deadline, "no job id in the state file"
        time.sleep(0.05)
    job_id = json.loads(state.read_text())["job"]
    first.send_signal(signal.SIGINT)
    _, said = first.communicate(timeout=30)
    assert first.returncode == 130, said
    assert "keeps running" in said
    assert state.exists()
    assert not out.exists()

    stack.start_worker("worker-cli-resume", 1)
    second = subprocess.run(
        [str(Path(sys.executable).parent / "infer"), "predict", "breast-cancer", str(rows), "-o", str(out)],
        env=_env(api_base),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    assert f"Resuming job {job_id}" in second.stderr
    assert "100,000 outputs" in second.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 100_001  # the header and one row a record
    assert not state.exists()
    with Client(api_base, KEY) as client:
        assert [job.id for job in client.jobs()] == [job_id]


def test_models_jobs_and_cancel_print_tables(api_base: str, clean_redis: Any) -> None:
    """`models` lists the examples, `models iris` its features, `jobs` the key's jobs."""
    listed = _run(api_base, "models")
    assert listed.returncode == 0, listed.stderr
    assert "iris" in listed.stdout
    assert "breast-cancer" in listed.stdout
    described = _run(api_base, "models", "iris")
    assert "sepal_length: number" in described.stdout
    with Client(api_base, KEY) as client:
        job = client.submit("iris", [[5.1, 3.5, 1.4, 0.2]]).wait(30)
    jobs = _run(api_base, "jobs")
    assert job.id in jobs.stdout
    ended = _run(api_base, "cancel", job.id)
    assert ended.returncode == 6
    assert "already ended" in ended.stderr


def test_errors_have_their_own_exit_codes_and_say_what_to_do(
    api_base: str, clean_redis: Any, tmp_path: Path
) -> None:
    """A wrong key, an unknown job, refused records and no service each exit with their code and a hint."""
    denied = _run(api_base, "models", key="wrong")
    assert denied.returncode == 3
    assert "INFER_API_KEY" in denied.stderr
    missing = _run(api_base, "cancel", "0" * 32)
    assert missing.returncode == 4
    assert "infer jobs" in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\nwide,3,1,0.2\n")
    refused = _run(api_base, "predict", "iris", str(bad), "-o", str(tmp_path / "out.csv"))
    assert refused.returncode == 5, refused.stderr
    assert "record 1" in refused.stderr
    assert not (tmp_path / "out.csv.job").exists()
    nobody = _run("http://127.0.0.1:9", "models")
    assert nobody.returncode == 8
    assert "Is the service running" in nobody.stderr

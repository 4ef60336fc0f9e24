"""The README's walk-through without curl, run line by line as printed: rows.csv, then tools.call."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.conftest import KEY, Api

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ".venv/bin/python"


def _readme_lines(start: str) -> list[str]:
    return [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(start)]


def test_the_readmes_rows_csv_line_makes_the_breast_cancer_models_features(
    tmp_path: Path, registry: Any
) -> None:
    """The one-liner writes rows.csv: a header of the model's 30 features, then 569 rows."""
    (line,) = [line for line in _readme_lines(f"{VENV_PYTHON} -c ") if "rows.csv" in line]
    argv = shlex.split(line)
    subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, check=True, timeout=60)
    rows = list(csv.reader((tmp_path / "rows.csv").read_text().splitlines()))
    assert rows[0] == registry.get("breast-cancer").features
    assert len(rows) == 1 + 569
    assert all(len(row) == 30 for row in rows[1:])


def test_the_readmes_tools_call_lines_work_in_order_against_the_api(api: Api, tmp_path: Path) -> None:
    """Each `python -m tools.call` line, `<id>` being the job last submitted, answers 2xx as described."""
    (make_csv,) = [line for line in _readme_lines(f"{VENV_PYTHON} -c ") if "rows.csv" in line]
    subprocess.run([sys.executable, *shlex.split(make_csv)[1:]], cwd=tmp_path, check=True, timeout=60)
    lines = _readme_lines(f"{VENV_PYTHON} -m tools.call ")
    assert len(lines) == 5
    env = {**os.environ, "KEY": KEY, "API": api.base, "PYTHONPATH": str(ROOT)}
    answers: dict[tuple[str, str], tuple[str, bytes]] = {}
    job_id = ""
    for line in lines:
        argv = shlex.split(line, comments=True)
        method, path = argv[3], argv[4]
        if "<id>" in line:
            assert job_id, line
        run = [sys.executable, *(word.replace("<id>", job_id) for word in argv[1:])]
        done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, timeout=90, check=False)
        assert done.returncode == 0, (line, done.stderr, done.stdout[:300])
        answers[(method, path)] = (done.stderr.decode(), done.stdout)
        if method == "POST" and path.endswith("/jobs"):
            job_id = json.loads(done.stdout)["id"]

    def body(method: str, path: str) -> Any:
        return json.loads(answers[(method, path)][1])

    assert {m["name"] for m in body("GET", "/v1/models")["models"]} >= {"iris", "breast-cancer", "scam-email"}
    assert answers[("POST", "/v1/models/iris/jobs")][0].startswith("HTTP 202")
    iris = body("GET", "/v1/jobs/<id>?wait=10")
    assert iris["status"] == "succeeded"
    assert iris["outputs"][0]["label"] == "versicolor"
    bulk = body("POST", "/v1/models/breast-cancer/jobs")
    assert answers[("POST", "/v1/models/breast-cancer/jobs")][0].startswith("HTTP 200")
    assert bulk["status"] == "succeeded"
    assert bulk["progress"] == {"done": 569, "total": 569}
    table = list(csv.reader(io.StringIO(answers[("GET", "/v1/jobs/<id>/outputs")][1].decode())))
    assert table[0] == ["label", "probability_benign", "probability_malignant"]
    assert len(table) == 1 + 569

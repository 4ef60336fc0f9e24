"""`make run` (python -m tools.run) from a cold start, and the files it leaves in its .run folder."""

from __future__ import annotations

import dbm
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tools.stack import Stack, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> set[int]:
    """Return every process below pid, children's children included."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:  # the task ended while we looked
                continue
            todo += children - found
            found |= children
    return found


def _running(pid: int) -> bool:
    """Tell whether a process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _dbm_names(folder: Path, name: str) -> set[str]:
    """Return the names of the files a shelve called name gets from this Python's dbm module."""
    folder.mkdir()
    with dbm.open(str(folder / name), "n") as probe:  # what shelve.open does underneath
        probe[b"x"] = b"1"
    return {p.name for p in folder.iterdir()}


def test_make_run_shows_its_banner_in_a_file_at_once_and_ctrl_c_stops_every_process(
    registry_path: Path, tmp_path: Path
) -> None:
    """With stdout to a file, the URLs and both keys are in it while the stack runs; SIGINT stops it all.

    A cold start: nothing answers at INFER_REDIS_URL, so it starts a private redis-server, then a
    worker, the API and Flower. Its Flower state is the shelve .run/flower (flower.db with Berkeley
    DB's dbm, as Debian's Python has; never flower.db.db).
    """
    api_port, flower_port = free_port(), free_port()
    # A newcomer's shell sets no PYTHONUNBUFFERED; with it the buffering would go unseen.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFER_") and k != "PYTHONUNBUFFERED"}
    env.update(
        INFER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens: it starts its own
        INFER_REGISTRY_PATH=str(registry_path),
        API_PORT=str(api_port),
        FLOWER_PORT=str(flower_port),
        WORKERS="1",
        CONCURRENCY="1",
        PYTHONPATH=str(ROOT),
    )
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:  # its own folder as working directory: its .run is the test's
        run = subprocess.Popen(
            [sys.executable, "-m", "tools.run"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    started: set[int] = set()
    try:
        wait_until(lambda: "API key" in log.read_text() or run.poll() is not None, 35, "the banner")
        text = log.read_text()
        assert run.poll() is None, text  # the banner arrived while it runs, not at its exit
        assert "started a private redis-server" in text
        assert f"http://127.0.0.1:{api_port}" in text
        assert f"http://127.0.0.1:{flower_port}" in text
        key = re.search(r"API key\s+(\S+)", text)
        assert key, text
        answer = requests.get(
            f"http://127.0.0.1:{api_port}/v1/models",
            headers={"Authorization": f"Bearer {key.group(1)}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        # One key of each scope: only the admin key may route traffic.
        admin = re.search(r"Admin key\s+(\S+)", text)
        assert admin, text
        routing = f"http://127.0.0.1:{api_port}/v1/models/iris/routing"
        for sent, status in ((key.group(1), 403), (admin.group(1), 200)):
            headers = {"Authorization": f"Bearer {sent}"}
            put = requests.put(routing, json={"routes": {"1.0.0": 100}}, headers=headers, timeout=10)
            assert put.status_code == status, put.text
        # The banner's line without curl, as printed, from the repository (its .venv/bin/python is ours).
        line = text.split("or without curl (one line):\n", 1)[1].splitlines()[0]
        words = shlex.split(line)
        assert words[2:5] == [".venv/bin/python", "-m", "tools.call"]
        variables = dict(assignment.split("=", 1) for assignment in words[:2])
        assert variables == {"KEY": key.group(1), "API": f"http://127.0.0.1:{api_port}"}
        tried = subprocess.run(
            [sys.executable, *words[3:]],
            env={**env, **variables},
            cwd=ROOT,
            capture_output=True,
            timeout=15,
            check=False,
        )
        assert tried.returncode == 0, tried.stderr
        assert json.loads(tried.stdout)["status"] == "succeeded"
        started = _descendants(run.pid)
        assert len(started) >= 4, started  # redis-server, the worker, the API and Flower at least
        run.send_signal(signal.SIGINT)
        assert run.wait(20) == 0
        wait_until(lambda: not any(_running(pid) for pid in started), 5, "every process to stop")
        assert "stopping" in log.read_text()
    finally:
        if run.poll() is None:  # a failure above: stop what it started, whatever state it is in
            started |= _descendants(run.pid)
            run.kill()
            run.wait()
        for pid in started:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    flower_files = {p.name for p in (tmp_path / ".run").glob("flower*") if ".log" not in p.name}
    assert flower_files == _dbm_names(tmp_path / "probe", "flower")


def test_each_run_starts_its_logs_fresh_and_keeps_the_previous_one_as_log_1(tmp_path: Path) -> None:
    """A second stack on the same folder moves NAME.log to NAME.log.1; a restart within a run appends."""
    first = Stack(tmp_path)
    first.start_redis(free_port())
    first_pid = first.procs["redis"].pid
    first.stop()
    second = Stack(tmp_path)
    port = free_port()
    second.start_redis(port)
    second_pid = second.procs["redis"].pid
    restarted = second.procs.pop("redis")  # a process of this run started again: same log
    restarted.terminate()
    restarted.wait(10)
    second.start_redis(port)
    third_pid = second.procs["redis"].pid
    second.stop()
    current = (tmp_path / "redis.log").read_text()
    previous = (tmp_path / "redis.log.1").read_text()
    assert f"{first_pid}:" in previous
    assert f"{first_pid}:" not in current
    assert f"{second_pid}:" in current
    assert f"{third_pid}:" in current
    assert not (tmp_path / "redis.log.2").exists()

"""Truthful under load and abuse: lost messages come back, bursts are served, one key cannot stop others."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import redis
import requests

from shared.celery_app import make_celery
from shared.settings import Settings
from shared.store import JobStore, NewJob, connect, new_job_id
from tests.integration.conftest import KEY, OTHER_KEY, Api
from tools.stack import Stack, free_port, http_status, wait_until

ROW = [6.2, 2.9, 4.3, 1.3]
REDELIVERY_S = 3.0


def _stack(stack_factory: Callable[..., Stack], queue: str, **overrides: str) -> tuple[Stack, Api]:
    stack = stack_factory(INFER_QUEUE_NAME=queue, INFER_REDELIVERY_S=str(REDELIVERY_S), **overrides)
    return stack, Api(stack.start_api(free_port()))


@contextmanager
def _consuming_paused(stack: Stack, worker: str) -> Iterator[None]:
    """Stop the worker taking messages off its queue (its main process and reaper keep running)."""
    settings = Settings(redis_url=stack.env["INFER_REDIS_URL"], queue_name=stack.env["INFER_QUEUE_NAME"])
    control = make_celery(settings).control
    destination = [f"{worker}@{socket.gethostname()}"]
    wait_until(lambda: control.ping(destination=destination, timeout=1), 60, "the worker")
    assert control.cancel_consumer(settings.queue_name, destination=destination, reply=True)
    try:
        yield
    finally:
        control.add_consumer(settings.queue_name, destination=destination, reply=True)


def _wait_all(api: Api, job_ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    jobs = []
    for job_id in job_ids:
        jobs.append(api.wait_job(job_id, seconds=max(1.0, deadline - time.monotonic())))
    return jobs


def _owner(key: str) -> str:
    from api.auth import OWNER_LENGTH
    from shared.settings import hash_api_key

    return hash_api_key(key)[:OWNER_LENGTH]


def _epoch(rfc3339: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_messages_taken_off_the_queue_and_never_held_are_published_again_within_the_bound(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis
) -> None:
    """A worker killed between BRPOP and recording the message as held loses it: the reaper brings it back.

    Taking the messages off the list by hand is exactly what such a worker leaves: the message is
    neither in the queue nor in kombu's unacked hash. Every job (single records, and a bulk job of
    three chunks) must start within INFER_REDELIVERY_S of the loss, and run once.
    """
    queue = "lost"
    stack, api = _stack(stack_factory, queue, INFER_CHUNK_SIZE="2")
    stack.start_worker("worker-lost", 1)
    with _consuming_paused(stack, "worker-lost"):
        job_ids = [api.submit("iris", [ROW]).json()["id"] for _ in range(5)]
        job_ids.append(api.submit("iris", [ROW] * 5).json()["id"])  # three chunks of one job
        wait_until(lambda: clean_redis.llen(queue) >= 1, 10, "the messages")
        while clean_redis.rpop(queue) is not None:  # the messages leave Redis for good
            pass
        lost_at = time.time()
        assert clean_redis.hlen("unacked") == 0
    jobs = _wait_all(api, job_ids, timeout=30)
    assert [j["status"] for j in jobs] == ["succeeded"] * 6, jobs
    assert [j["progress"] for j in jobs] == [{"done": 1, "total": 1}] * 5 + [{"done": 5, "total": 5}]
    assert all(len(j["outputs"]) == j["progress"]["total"] for j in jobs)
    late = [_epoch(j["started_at"]) - lost_at for j in jobs]
    assert max(late) <= REDELIVERY_S, late


def test_a_job_written_by_an_api_killed_before_it_published_still_runs(
    api: Api, store: JobStore, clean_redis: redis.Redis
) -> None:
    """A record with no message (the API died between the two) is published by the reaper and runs."""
    # The session's queue: its worker's reaper looks for such records every INFER_REDELIVERY_S too.
    job_id = new_job_id()
    new = NewJob(id=job_id, owner=_owner(KEY), model="iris", version="1.0.0", total=1, chunks=1)
    created = store.create(new, np.asarray([ROW], dtype=np.float32).tobytes())
    assert created.outcome == "created"
    assert clean_redis.llen(store.queue) == 0  # no message anywhere
    job = api.wait_job(job_id, seconds=20)
    assert job["status"] == "succeeded"
    assert job["outputs"][0]["label"] == "versicolor"
    assert _epoch(job["started_at"]) - created.created_at <= REDELIVERY_S


def test_idempotent_retries_of_a_queued_job_never_multiply_its_messages(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis
) -> None:
    """300 retries of one Idempotency-Key while its job waits leave exactly one message on the queue."""
    queue = "retries"
    _, api = _stack(stack_factory, queue, INFER_RATE_LIMIT_PER_S="50")
    headers = {"Idempotency-Key": "once"}
    first = api.submit("iris", [ROW], headers=headers).json()["id"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: api.submit("iris", [ROW], headers=headers), range(300)))
    assert {r.status_code for r in answers} == {202}
    assert {r.json()["id"] for r in answers} == {first}
    assert clean_redis.llen(queue) == 1
    assert api.submit("iris", [ROW]).status_code == 202  # retries did not use up the key's rate


def test_a_burst_of_submits_and_of_waking_long_polls_is_served_without_a_false_503(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis
) -> None:
    """400 simultaneous submits are all accepted; 500 long-polls woken at once all answer the job."""
    queue = "burst"
    # The key may hold exactly the 500 long-polls, so a 501st request tells that they all wait.
    stack, api = _stack(stack_factory, queue, INFER_MAX_OPEN_REQUESTS_PER_KEY="500")
    stack.start_worker("worker-burst", 1)
    start = threading.Barrier(400)

    def submit(_: int) -> requests.Response:
        own = Api(api.base)
        start.wait()
        return own.submit("iris", [ROW])

    with ThreadPoolExecutor(400) as pool:
        answers = list(pool.map(submit, range(400)))
    assert [r.status_code for r in answers] == [202] * 400, {r.status_code for r in answers}
    job_ids = [r.json()["id"] for r in answers]
    assert len(set(job_ids)) == 400
    assert all(j["status"] == "succeeded" for j in _wait_all(api, job_ids))

    with _consuming_paused(stack, "worker-burst"):
        job_id = api.submit("iris", [ROW]).json()["id"]
        ready = threading.Barrier(501)

        def poll(_: int) -> requests.Response:
            own = Api(api.base)
            ready.wait()
            for _ in range(100):
                answer = own.request("GET", f"/v1/jobs/{job_id}?wait=30")
                if answer.status_code != 429:  # a probe below held the key's 500th place a moment
                    break
                time.sleep(0.05)
            return answer

        with ThreadPoolExecutor(500) as pool:
            polls = [pool.submit(poll, i) for i in range(500)]
            ready.wait()
            wait_until(lambda: api.request("GET", f"/v1/jobs/{job_id}").status_code == 429, 30, "500 waiting")
            answers = []
            stack_settings = Settings(redis_url=stack.env["INFER_REDIS_URL"], queue_name=queue)
            make_celery(stack_settings).control.add_consumer(
                queue, destination=[f"worker-burst@{socket.gethostname()}"], reply=True
            )
            answers = [p.result() for p in polls]
    assert [r.status_code for r in answers] == [200] * 500, {r.status_code for r in answers}
    assert {r.json()["status"] for r in answers} == {"succeeded"}


def _hold(base: str, count: int, path: str) -> list[socket.socket]:
    """Open count connections that each send a request of KEY and never read the answer."""
    host, port = base.removeprefix("http://").split(":")
    held = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
        held.append(sock)
    return held


def _answered(socks: list[socket.socket]) -> list[socket.socket]:
    """Return the sockets that have an answer to read (poll, since select stops at descriptor 1024)."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(500)]


def test_one_key_holding_a_thousand_connections_cannot_stop_the_others(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis
) -> None:
    """1,000 long-polls and slow uploads from one key: past its share it gets 429; others stay served."""
    _, api = _stack(stack_factory, "held", INFER_MAX_OPEN_REQUESTS_PER_KEY="100")
    job_id = api.submit("iris", [ROW]).json()["id"]  # no worker: it stays queued
    # A long-poll does not notice its client leave, so it holds its place until its wait ends.
    held = _hold(api.base, 1000, f"/v1/jobs/{job_id}?wait=5")
    try:
        # Every request past the key's 100 is answered at once (429); its first 100 hang on.
        wait_until(lambda: len(_answered(held)) == 900, 30, "900 answers")
        assert all(b" 429 " in sock.recv(200) for sock in _answered(held))
        refused = api.request("GET", f"/v1/jobs/{job_id}?wait=1")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["Retry-After"] == "1"
        took = []
        for _ in range(5):
            started = time.monotonic()
            assert http_status(api.base + "/healthz") == 200
            took.append(time.monotonic() - started)
        assert sorted(took)[2] < 0.1, took
        other = api.submit("iris", [ROW], key=OTHER_KEY)
        assert other.status_code == 202
        assert api.request("GET", f"/v1/jobs/{other.json()['id']}", key=OTHER_KEY).status_code == 200
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: api.submit("iris", [ROW]).status_code == 202, 30, "the key served again")


def test_per_key_limits_on_unfinished_jobs_and_stored_bytes_are_429_and_spare_other_keys(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis
) -> None:
    """A key at its unfinished jobs or stored bytes gets 429 with Retry-After; another key does not."""
    _, api = _stack(stack_factory, "quota", INFER_MAX_OPEN_JOBS_PER_KEY="5")
    assert [api.submit("iris", [ROW]).status_code for _ in range(5)] == [202] * 5
    full = api.submit("iris", [ROW])
    assert full.status_code == 429
    assert full.json()["error"]["code"] == "queue_full"
    assert full.headers["Retry-After"] == "5"
    assert api.submit("iris", [ROW], key=OTHER_KEY).status_code == 202
    queued = api.request("GET", "/v1/jobs?status=queued&limit=1").json()
    assert len(queued["jobs"]) == 1
    assert queued["next_cursor"]

    clean_redis.delete(*clean_redis.keys("bytes:*"))  # count from nothing for the second limit
    _, small = _stack(stack_factory, "bytes", INFER_MAX_STORED_BYTES_PER_KEY="4000")
    answers = [small.submit("iris", [ROW] * 50) for _ in range(6)]  # 800 bytes of inputs each
    assert [r.status_code for r in answers[:5]] == [202] * 5
    assert answers[5].status_code == 429
    assert answers[5].json()["error"]["code"] == "rate_limited"
    assert "bytes" in answers[5].json()["error"]["message"]
    assert int(answers[5].headers["Retry-After"]) >= 1
    assert small.submit("iris", [ROW] * 50, key=OTHER_KEY).status_code == 202


def test_a_filtered_list_of_queued_jobs_is_complete(
    api: Api, redis_url: str, clean_redis: redis.Redis
) -> None:
    """Two queued jobs older than 50 finished ones are listed by status=queued, whatever the page size."""
    from shared.store import FinishedChunk

    settings = Settings(redis_url=redis_url, queue_name="unwatched")  # no worker or reaper there

    store = JobStore(connect(settings), settings)

    def write() -> str:
        job_id = new_job_id()
        store.create(NewJob(id=job_id, owner=_owner(KEY), model="iris", version="1.0.0", total=1, chunks=1))
        return job_id

    queued = [write() for _ in range(2)]
    finished = [write() for _ in range(50)]
    assert store.claim([(j, "iris") for j in finished]) == ["running"] * 50
    store.finish_chunks([FinishedChunk(j, 0, b'{"value": 1}\n', 1, 0.1) for j in finished])
    first = api.request("GET", "/v1/jobs?status=queued&limit=1").json()
    assert [j["id"] for j in first["jobs"]] == [queued[1]]
    second = api.request("GET", f"/v1/jobs?status=queued&limit=1&cursor={first['next_cursor']}").json()
    assert [j["id"] for j in second["jobs"]] == [queued[0]]
    assert second["next_cursor"] is None
    everything = api.request("GET", "/v1/jobs?limit=500").json()["jobs"]
    assert [j["id"] for j in everything] == (queued + finished)[::-1]


def test_a_frozen_redis_answers_503_truthfully_and_a_retry_finds_the_job(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis
) -> None:
    """A submit while Redis is frozen is 503 saying whether it may have been accepted; no orphan is left."""
    queue = "frozen"
    stack = stack_factory(INFER_QUEUE_NAME=queue, INFER_REDELIVERY_S=str(REDELIVERY_S))
    stack.start_redis(free_port(), password="frozen-secret")
    api = Api(stack.start_api(free_port()))
    stack.start_worker("worker-frozen", 1)
    wait_until(lambda: http_status(api.base + "/readyz") == 200, 60, "ready")
    headers = {"Idempotency-Key": "frozen-once"}
    assert api.submit("iris", [ROW], wait=10).status_code == 200  # warm: connections made, memory read
    server = stack.procs["redis"].pid
    os.kill(server, signal.SIGSTOP)
    try:
        answer = api.submit("iris", [ROW], headers=headers)
    finally:
        os.kill(server, signal.SIGCONT)
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "unavailable"
    retried = api.submit("iris", [ROW], headers=headers, wait=20)
    assert retried.status_code == 200
    if "may have been accepted" in error["message"]:
        maybe = error["details"][0]["reason"]
        if api.request("GET", f"/v1/jobs/{maybe}").status_code == 200:  # it was: the retry found it
            assert retried.json()["id"] == maybe
    else:
        assert "nothing was accepted" in error["message"]
    listed = api.request("GET", "/v1/jobs?limit=10").json()["jobs"]
    assert [j["status"] for j in listed] == ["succeeded", "succeeded"]  # the warm-up and exactly one more
    assert retried.json()["id"] == listed[0]["id"]


def test_redis_at_its_memory_limit_refuses_new_jobs_with_429_and_finishes_accepted_ones(
    stack_factory: Callable[..., Stack],
) -> None:
    """One key fills a Redis with a small maxmemory: 429 (never 500), accepted jobs end, no crash."""
    queue = "memory"
    stack = stack_factory(INFER_QUEUE_NAME=queue, INFER_REDELIVERY_S=str(REDELIVERY_S))
    url = stack.start_redis(free_port(), password="memory-secret")
    api = Api(stack.start_api(free_port()))
    stack.start_worker("worker-memory", 1)
    wait_until(lambda: http_status(api.base + "/readyz") == 200, 60, "ready")
    worker = stack.procs["worker-memory"]
    server = redis.Redis.from_url(url)
    server.config_set("maxmemory", int(server.info("memory")["used_memory"]) + 16 * 1024 * 1024)
    rows = [ROW] * 1000  # 16 KB of inputs, about 90 KB of outputs a job
    accepted: list[str] = []
    statuses: list[int] = []
    for _ in range(600):
        answer = api.submit("iris", rows)
        statuses.append(answer.status_code)
        if answer.status_code == 202:
            accepted.append(answer.json()["id"])
        elif answer.status_code == 429:
            assert answer.json()["error"]["code"] == "queue_full"
            assert "nothing was accepted" in answer.json()["error"]["message"]
            assert int(answer.headers["Retry-After"]) > 0
            break
    assert set(statuses) <= {202, 429}, statuses
    assert statuses[-1] == 429
    assert http_status(api.base + "/readyz") in (200, 503)
    assert worker.poll() is None  # the worker's main process did not crash
    # Outputs of the jobs in flight may take Redis past its limit, where a message cannot be published
    # (kombu's writes are refused): such an accepted job waits, kept, until Redis takes writes again
    # (its keys expire, or the operator raises the limit, as here); then every one succeeds.
    server.config_set("maxmemory", int(server.info("memory")["used_memory"]) + 64 * 1024 * 1024)
    jobs = _wait_all(api, accepted, timeout=60)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert worker.poll() is None

    # Past the limit itself (no headroom kept), creating a job is refused whole: 429, nothing written.
    strict = stack_factory(INFER_QUEUE_NAME=queue, INFER_REDIS_URL=url, INFER_MEMORY_HIGH_WATER="1")
    edge = Api(strict.start_api(free_port()))
    server.config_set("maxmemory", int(server.info("memory")["used_memory"]) - 1024 * 1024)
    keys_before = server.dbsize()
    refused = edge.submit("iris", [ROW])
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "queue_full"
    assert server.dbsize() == keys_before
    server.config_set("maxmemory", 0)


def test_a_bulk_job_is_published_one_chunk_a_message_so_it_spreads_over_workers(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis
) -> None:
    """A job of five chunks puts five messages on the queue; five small jobs at once may share one."""
    queue = "spread"
    _, api = _stack(stack_factory, queue, INFER_CHUNK_SIZE="2")
    assert api.submit("iris", [ROW] * 10).status_code == 202
    assert clean_redis.llen(queue) == 5

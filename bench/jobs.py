"""What every workload says to the API: authenticated requests, job submission and waiting for a job."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from bench.client import Connection, Response

TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
LONG_POLL_S = 30


@dataclass(frozen=True)
class Target:
    """The API under test and the key the benchmark uses."""

    host: str
    port: int
    key: str

    def connect(self) -> Connection:
        """Return a new keep-alive connection to the API."""
        return Connection(self.host, self.port)

    def headers(self, **extra: str) -> dict[str, str]:
        """Return the Authorization header plus the given ones (underscores become dashes)."""
        found = {"Authorization": f"Bearer {self.key}"}
        found.update({name.replace("_", "-"): value for name, value in extra.items()})
        return found


def job_body(record: Any) -> bytes:
    """Return the JSON submission of one record."""
    return orjson.dumps({"inputs": [record]})


async def submit(conn: Connection, target: Target, model: str, body: bytes, wait_s: int = 0) -> Response:
    """Submit a JSON job, asking the API to hold the answer up to wait_s seconds when wait_s > 0."""
    headers = target.headers(Content_Type="application/json")
    if wait_s > 0:
        headers["Prefer"] = f"wait={wait_s}"
    return await conn.request("POST", f"/v1/models/{model}/jobs", headers, body)


async def wait_job(conn: Connection, target: Target, job_id: str, timeout_s: float) -> dict[str, Any] | None:
    """Long-poll a job until it is terminal and return it, or None when it is gone or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        wait = max(1, min(LONG_POLL_S, int(deadline - time.monotonic())))
        answer = await conn.request("GET", f"/v1/jobs/{job_id}?wait={wait}", target.headers())
        if answer.status != 200:
            return None
        job: dict[str, Any] = answer.json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() >= deadline:
            return None

"""Helpers of tests that talk to the real service: its keys, its environment, a client, the error check."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import requests

KEY = "test-key-alpha"
OTHER_KEY = "test-key-beta"
# The one admin key of the test stacks: it may also publish, route and retire model versions.
ADMIN_KEY = "test-key-admin"
# Short enough that a killed worker's message comes back within the test's patience.
VISIBILITY_TIMEOUT_S = 4
RESTORE_INTERVAL_S = 1
# A lost message (neither queued nor held) is published again within this long.
REDELIVERY_S = 3


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def error_of(status_code: int, body: Any, text: str, status: int, code: str) -> dict[str, Any]:
    """Check an answer is the error body of the contract with this status and code; return the error."""
    assert status_code == status, text
    assert isinstance(body, dict), text
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    error: dict[str, Any] = body["error"]
    return error


class Api:
    """A client of one running API process, with the test's key unless told otherwise."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def request(self, method: str, path: str, key: str | None = KEY, **kwargs: Any) -> requests.Response:
        """Send a request with the Bearer key and return the response."""
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.session.request(method, self.base + path, headers=headers, timeout=90, **kwargs)

    def submit(
        self,
        model: str,
        inputs: list[Any],
        wait: float | None = None,
        key: str | None = KEY,
        headers: dict[str, str] | None = None,
        **body: Any,
    ) -> requests.Response:
        """Submit a JSON job (extra keyword arguments go into the body) and return the response."""
        sent = {"Prefer": f"wait={wait:g}"} if wait is not None else {}
        sent.update(headers or {})
        path = f"/v1/models/{model}/jobs"
        return self.request("POST", path, key=key, json={"inputs": inputs, **body}, headers=sent)

    def wait_job(self, job_id: str, seconds: float = 30) -> dict[str, Any]:
        """Long-poll a job until it ends and return it."""
        body: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}?wait={seconds}").json()
        return body


def stack_env(redis_url: str, registry_path: Path, **overrides: str) -> dict[str, str]:
    """Return the environment of the service's processes in tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFER_")}
    env.update(
        {
            "INFER_REDIS_URL": redis_url,
            "INFER_REGISTRY_PATH": str(registry_path),
            "INFER_API_KEY_HASHES": f"{_hash(KEY)},{_hash(OTHER_KEY)}",
            "INFER_ADMIN_KEY_HASHES": _hash(ADMIN_KEY),
            "INFER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            "INFER_RESTORE_INTERVAL_S": str(RESTORE_INTERVAL_S),
            "INFER_REDELIVERY_S": str(REDELIVERY_S),
            "INFER_MAX_WAIT_S": "60",
        }
    )
    env.update(overrides)
    return env

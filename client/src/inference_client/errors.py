"""The client's exceptions: one class per family of the API's error codes, carrying the error body.

```
InferenceError
├── ApiError (status, code, message, details)
│   ├── InvalidInput      400 invalid_json, 413 payload_too_large, 415, 422 invalid_input
│   ├── Unauthorized      401 unauthorized
│   │   └── Forbidden     403 forbidden
│   ├── NotFound          404 unknown_model, unknown_version, unknown_job, not_found
│   ├── Conflict          409 conflict
│   ├── RateLimited       429 rate_limited (retry_after)
│   │   └── QueueFull     429 queue_full
│   └── Unavailable       503 unavailable
├── ServiceUnreachable    no answer at all after the retries
├── JobFailed             the job ended failed, canceled or expired
└── WaitTimeout           the job did not end within the time given
```
"""

from __future__ import annotations

from typing import Any


class InferenceError(Exception):
    """Anything the client raises on purpose."""


class ApiError(InferenceError):
    """An error answer of the API: its status and the body's code, message and details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: list[Any] = details or []
        self.retry_after = retry_after


class InvalidInput(ApiError):
    """The request or its records were refused as they are (400, 413, 415, 422)."""


class Unauthorized(ApiError):
    """The API key is missing or wrong (401)."""


class Forbidden(Unauthorized):
    """The API key may not use this route (403)."""


class NotFound(ApiError):
    """No such model, version or job for this key (404)."""


class Conflict(ApiError):
    """The job is not in a state that allows this, or an Idempotency-Key was reused (409)."""


class RateLimited(ApiError):
    """Too many requests for now; `retry_after` says how many seconds to wait (429)."""


class QueueFull(RateLimited):
    """The model's queue or this key's open jobs are at their limit (429 queue_full)."""


class Unavailable(ApiError):
    """The service cannot accept work right now (503)."""


class ServiceUnreachable(InferenceError):
    """No answer from the service: it refused the connection, or the network failed, every attempt."""


class JobFailed(InferenceError):
    """The job ended without outputs: failed, canceled or expired."""

    def __init__(self, job_id: str, status: str, error: dict[str, Any] | None) -> None:
        reason = (error or {}).get("message") or status
        super().__init__(f"job {job_id} ended {status}: {reason}")
        self.job_id = job_id
        self.status = status
        self.error = error or {}


class WaitTimeout(InferenceError, TimeoutError):
    """The job did not end within the time the caller allowed; it keeps running."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id} did not end within {timeout:g} s; it keeps running")
        self.job_id = job_id


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    415: InvalidInput,
    422: InvalidInput,
    429: RateLimited,
    503: Unavailable,
}


def error_for(status: int, body: Any, retry_after: float | None = None) -> ApiError:
    """Return the exception for an error answer from its status and its (JSON) body."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": f"http_{status}", "message": f"The service answered {status} without an error body."}
    code = str(error.get("code", f"http_{status}"))
    cls = QueueFull if code == "queue_full" else _BY_STATUS.get(status, ApiError)
    details = error.get("details")
    return cls(
        status,
        code,
        str(error.get("message", "")),
        details if isinstance(details, list) else None,
        retry_after,
    )

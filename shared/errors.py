"""The one error hierarchy of the service, each class carrying its HTTP status and code.

::

    ServiceError (500 internal)
    ├── InvalidJson (400 invalid_json)
    ├── Unauthorized (401 unauthorized)
    ├── NotFound (404 not_found)
    │   ├── UnknownModel (404 unknown_model)
    │   ├── UnknownVersion (404 unknown_version)
    │   └── UnknownJob (404 unknown_job)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── Conflict (409 conflict)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── InvalidInput (422 invalid_input)
    ├── QueueFull (429 queue_full)
    ├── RateLimited (429 rate_limited)
    ├── Unavailable (503 unavailable)
    │   └── MaybeAccepted (503 unavailable): the job may have been written; its id is in details
    └── ModelLoadError (500 model_unavailable): raised in workers, recorded on the job
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the service reports, with an HTTP status and a stable code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """Return the error body of the HTTP contract."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidJson(ServiceError):
    """The body is not parseable JSON or CSV."""

    status = 400
    code = "invalid_json"


class Unauthorized(ServiceError):
    """The API key is missing or wrong."""

    status = 401
    code = "unauthorized"


class NotFound(ServiceError):
    """No route or resource answers to the path."""

    status = 404
    code = "not_found"


class UnknownModel(NotFound):
    """No model of that name is published."""

    code = "unknown_model"


class UnknownVersion(NotFound):
    """The model has no such version."""

    code = "unknown_version"


class UnknownJob(NotFound):
    """No job of that id exists for this key."""

    code = "unknown_job"


class MethodNotAllowed(ServiceError):
    """The route does not accept this HTTP method."""

    status = 405
    code = "method_not_allowed"


class Conflict(ServiceError):
    """The request conflicts with the job's state or an earlier request."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    """The body is over the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """The body is neither JSON nor CSV."""

    status = 415
    code = "unsupported_media_type"


class InvalidInput(ServiceError):
    """The inputs do not match the model's input schema."""

    status = 422
    code = "invalid_input"


class QueueFull(ServiceError):
    """The model's queue holds as many jobs as it may."""

    status = 429
    code = "queue_full"


class RateLimited(ServiceError):
    """The key has sent more requests than its rate allows."""

    status = 429
    code = "rate_limited"


class Unavailable(ServiceError):
    """The broker or job store cannot be reached, so nothing was accepted (unless a subclass says)."""

    status = 503
    code = "unavailable"


class MaybeAccepted(Unavailable):
    """Redis stopped answering while a job was written: it may exist, and its record will say."""


class ModelLoadError(ServiceError):
    """A model's artifact is missing, tampered with or fails to load."""

    code = "model_unavailable"

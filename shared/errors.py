"""The one error hierarchy of the service, each class carrying its HTTP status and code.

::

    ServiceError (500 internal)
    ├── InvalidJson (400 invalid_json)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden): a user key on an admin route
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
    ├── ModelLoadError (500 model_unavailable): raised in workers, recorded on the job
    └── InvalidModel (422 invalid_model): a publish upload a worker refused, recorded on the job
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    """The stable code of every error the service reports: each class's below, and the HTTP server's own."""

    INTERNAL = "internal"
    INVALID_JSON = "invalid_json"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_JOB = "unknown_job"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_INPUT = "invalid_input"
    QUEUE_FULL = "queue_full"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    MODEL_UNAVAILABLE = "model_unavailable"
    INVALID_MODEL = "invalid_model"
    # Answered by the HTTP server (api/server.py) to what never reaches the app.
    INVALID_REQUEST = "invalid_request"
    URI_TOO_LONG = "uri_too_long"
    HEADER_TOO_LARGE = "header_too_large"


class ServiceError(Exception):
    """Base of every error the service reports, with an HTTP status and a stable code."""

    status: ClassVar[int] = 500
    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

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
    code = ErrorCode.INVALID_JSON


class Unauthorized(ServiceError):
    """The API key is missing or wrong."""

    status = 401
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ServiceError):
    """The API key is valid but its scope does not allow this route."""

    status = 403
    code = ErrorCode.FORBIDDEN


class NotFound(ServiceError):
    """No route or resource answers to the path."""

    status = 404
    code = ErrorCode.NOT_FOUND


class UnknownModel(NotFound):
    """No model of that name is published."""

    code = ErrorCode.UNKNOWN_MODEL


class UnknownVersion(NotFound):
    """The model has no such version."""

    code = ErrorCode.UNKNOWN_VERSION


class UnknownJob(NotFound):
    """No job of that id exists for this key."""

    code = ErrorCode.UNKNOWN_JOB


class MethodNotAllowed(ServiceError):
    """The route does not accept this HTTP method."""

    status = 405
    code = ErrorCode.METHOD_NOT_ALLOWED


class Conflict(ServiceError):
    """The request conflicts with the job's state or an earlier request."""

    status = 409
    code = ErrorCode.CONFLICT


class PayloadTooLarge(ServiceError):
    """The body is over the configured limit."""

    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(ServiceError):
    """The body is neither JSON nor CSV."""

    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class InvalidInput(ServiceError):
    """The inputs do not match the model's input schema."""

    status = 422
    code = ErrorCode.INVALID_INPUT


class QueueFull(ServiceError):
    """The model's queue holds as many jobs as it may."""

    status = 429
    code = ErrorCode.QUEUE_FULL


class RateLimited(ServiceError):
    """The key has sent more requests than its rate allows."""

    status = 429
    code = ErrorCode.RATE_LIMITED


class Unavailable(ServiceError):
    """The broker or job store cannot be reached, so nothing was accepted (unless a subclass says)."""

    status = 503
    code = ErrorCode.UNAVAILABLE


class MaybeAccepted(Unavailable):
    """Redis stopped answering while a job was written: it may exist, and its record will say."""


class ModelLoadError(ServiceError):
    """A model's artifact is missing, tampered with or fails to load."""

    code = ErrorCode.MODEL_UNAVAILABLE


class InvalidModel(ServiceError):
    """An uploaded artifact cannot be served: wrong type, corrupt, untrusted or mismatched."""

    status = 422
    code = ErrorCode.INVALID_MODEL

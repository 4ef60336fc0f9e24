"""The one error handler: every failure becomes the error body of the HTTP contract."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from api.responses import json_response
from shared import errors

log = logging.getLogger(__name__)

_FRAMEWORK: dict[int, type[errors.ServiceError]] = {
    400: errors.InvalidJson,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}

_FRAMEWORK_MESSAGES: dict[int, str] = {
    400: "The request body could not be read.",
    404: "No route answers to this path.",
    405: "This route does not accept that method.",
    413: "The request body is over the configured limit.",
}


def _service_error_response(exc: errors.ServiceError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    return json_response(exc.body(), exc.status, headers)


def _http_error_response(exc: HTTPException) -> Response:
    status = exc.code or 500
    kind = _FRAMEWORK.get(status, errors.ServiceError)
    message = _FRAMEWORK_MESSAGES.get(status, exc.description or "The request failed.")
    response = json_response(kind(message).body(), status)
    for name, value in exc.get_headers():
        if name == "Allow":
            response.headers[name] = value
    return response


def _unavailable_response(exc: Exception) -> Response:
    log.warning("backend unreachable: %s", exc)
    return _service_error_response(
        errors.Unavailable("The job store or broker cannot be reached; nothing was accepted.")
    )


def _full_response(exc: Exception) -> Response:
    log.warning("job store full: %s", exc)
    return _service_error_response(
        errors.Unavailable("The job store is full; nothing was changed. Try again once older jobs expire.")
    )


def _unexpected_response(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _service_error_response(errors.ServiceError("An unexpected error occurred."))


def register_error_handlers(app: Flask) -> None:
    """Map the service's errors, the framework's and the backends' to the error body."""
    app.register_error_handler(errors.ServiceError, _service_error_response)
    app.register_error_handler(HTTPException, _http_error_response)
    for backend_error in (redis.ConnectionError, redis.TimeoutError, OperationalError):
        app.register_error_handler(backend_error, _unavailable_response)
    app.register_error_handler(redis.exceptions.OutOfMemoryError, _full_response)
    app.register_error_handler(Exception, _unexpected_response)

"""The gunicorn settings the API ships with (`gunicorn -c python:api.server`) and its gevent worker."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import ssl
import struct
import tempfile
import termios
import time
from datetime import datetime
from http import HTTPStatus
from typing import Any

import gevent
import orjson
from gevent.local import local
from gunicorn import util  # type: ignore[import-untyped]  # gunicorn ships no type information
from gunicorn.http import errors  # type: ignore[import-untyped]
from gunicorn.http.wsgi import Response, default_environ  # type: ignore[import-untyped]
from gunicorn.workers.ggevent import GeventWorker  # type: ignore[import-untyped]

from shared.errors import ErrorCode

# gunicorn takes each module-level name that is one of its settings as that setting.
worker_class = "api.server.JsonErrorWorker"
# Greenlets are cheap; a per-key cap on open requests keeps one key from holding them all.
worker_connections = 4096
# gunicorn's own defaults, written out because the 431 and 414 answers quote them.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# prometheus_client's multiprocess mode: each process writes its counters to files in this folder and
# any of them answers /metrics with the sum. prometheus_client must not be imported here: a process
# forked from one that imported it before the variable was set would count in memory only.
_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"

_BAD_LINE = "The request line is not 'METHOD /path HTTP/1.1'."
_BAD_HEADER = "A request header is malformed: send each as 'Name: value' on one line."
_BAD_CHUNK = "The chunked request body is malformed."
# The parser's refusals that are the client's fault, each with its status and what to do instead.
_INVALID_REQUESTS: tuple[tuple[type[BaseException], int, str], ...] = (
    (errors.InvalidRequestLine, 400, _BAD_LINE),
    (errors.InvalidRequestMethod, 400, _BAD_LINE),
    (errors.InvalidHTTPVersion, 400, "Only HTTP/1.0 and HTTP/1.1 are served."),
    (errors.InvalidHeaderName, 400, _BAD_HEADER),
    (errors.InvalidHeader, 400, _BAD_HEADER),
    (errors.ObsoleteFolding, 400, _BAD_HEADER),
    (errors.InvalidChunkSize, 400, _BAD_CHUNK),
    (errors.ChunkMissingTerminator, 400, _BAD_CHUNK),
    (errors.InvalidChunkExtension, 400, _BAD_CHUNK),
    (errors.UnsupportedTransferCoding, 501, "Send the body with Content-Length or chunked."),
    (errors.ExpectationFailed, 417, "Only 'Expect: 100-continue' is understood."),
    (errors.ParseException, 400, "The request is not valid HTTP/1.1."),
    (ssl.SSLError, 400, "The TLS handshake failed."),
)
# After answering, read what the client still sends for this long (and this much) before closing:
# a close with unread bytes makes the kernel reset the connection, which can destroy the answer.
_LINGER_S = 2.0
_LINGER_BYTES = 1 << 20
# How long a new connection may take to send its request's head. gunicorn waits only its keep-alive
# (2 s) for it, so a client that connects and is slow to send, or one of a burst of hundreds, was
# closed without an answer; later requests on the connection keep gunicorn's 2 s.
_FIRST_REQUEST_S = 10.0


def on_starting(server: Any) -> None:
    """Give the processes an empty folder for their counters: the one configured, else a private one."""
    folder = os.environ.get(_MULTIPROC)
    if folder:
        os.makedirs(folder, exist_ok=True)
        for stale in os.scandir(folder):  # the last run's files would be summed with this run's
            if stale.name.endswith(".db"):
                os.unlink(stale.path)
    else:
        os.environ[_MULTIPROC] = server.metrics_dir = tempfile.mkdtemp(prefix="infer-metrics-")


def child_exit(server: Any, worker: Any) -> None:
    """Drop the live gauges of a process that exited; its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped upstream


def on_exit(server: Any) -> None:
    """Remove the private counters' folder made at the start, if one was."""
    folder = getattr(server, "metrics_dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _answer(exc: BaseException, cfg: Any) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)):
        # The app's fault, not the client's.
        return 500, _body(ErrorCode.INTERNAL, "An unexpected error occurred.")
    if isinstance(exc, errors.LimitRequestHeaders):
        key_max = cfg.limit_request_field_size - len("Authorization: Bearer \r\n")
        message = (
            f"Send shorter headers: each line is at most {cfg.limit_request_field_size} bytes and at most "
            f"{cfg.limit_request_fields} are read, so an API key is at most {key_max} characters."
        )
        return 431, _body(ErrorCode.HEADER_TOO_LARGE, message, exc, "headers")
    if isinstance(exc, errors.LimitRequestLine):
        message = (
            f"Send a shorter request line: method, path, query and version take at most "
            f"{cfg.limit_request_line} bytes."
        )
        return 414, _body(ErrorCode.URI_TOO_LONG, message, exc, "request line")
    if isinstance(exc, errors.ForbiddenProxyRequest):
        message = "This address may not tell the server who the client is."
        return 403, _body(ErrorCode.FORBIDDEN, message, exc, "X-Forwarded-For")
    if isinstance(exc, errors.ConfigurationProblem):
        return 500, _body(ErrorCode.INTERNAL, "The server is misconfigured for this request.")
    for kind, status, message in _INVALID_REQUESTS:
        if isinstance(exc, kind):
            return status, _body(ErrorCode.INVALID_REQUEST, message, exc, "request")
    return 500, _body(ErrorCode.INTERNAL, "An unexpected error occurred.")


def _body(
    code: ErrorCode, message: str, exc: BaseException | None = None, field: str | None = None
) -> dict[str, Any]:
    """Return the API's error body (api/contract.py's Error) for a request the HTTP server refused."""
    # Imported when a worker answers, not with this module: gunicorn's master reads it as its settings
    # before prometheus_client's folder is set (see _MULTIPROC), and the contract imports the app.
    from api.contract import Error, ErrorDetail, ErrorInfo

    details = [ErrorDetail(field=field, reason=str(exc)[:200])] if exc is not None else []
    return Error(error=ErrorInfo(code=code, message=message, details=details)).model_dump(mode="json")


def _send_and_linger(client: socket.socket, data: bytes) -> None:
    try:
        client.settimeout(_LINGER_S)
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER_S
        drained = 0
        while drained < _LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            client.settimeout(left)
            chunk = client.recv(65536)
            if not chunk:
                return
            drained += len(chunk)
    except OSError:
        return  # the client went away or stalled: nobody is left to answer


def _bytes_waiting(client: socket.socket) -> bool:
    try:
        waiting = fcntl.ioctl(client.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False  # closed meanwhile: nothing left to read
    return bool(struct.unpack("i", waiting)[0])


class _Idle(BaseException):
    """Raised into a connection's greenlet when no request came in time; like gevent.Timeout, no Exception."""


class _RequestWait:
    """Bound the wait for a request's head, yet never close a connection whose request has arrived.

    gevent's own timeout fires as soon as its timer is due: when the process was busy (a burst), the
    timer and the arrived request fall due together and the timer won, closing the connection unanswered.
    """

    def __init__(self, client: socket.socket, seconds: float) -> None:
        self._client = client
        self._seconds = seconds
        self._idle = _Idle()
        self._greenlet = gevent.getcurrent()
        self._timer: Any = None

    def __enter__(self) -> None:
        self._start()

    def _start(self) -> None:
        self._timer = gevent.get_hub().loop.timer(self._seconds)
        self._timer.start(self._expire)

    def _expire(self) -> None:
        self._timer.close()
        if _bytes_waiting(self._client):
            self._start()  # the request is there: the greenlet reads it when the process gets to it
        else:
            self._greenlet.throw(self._idle)

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> bool:
        self._timer.close()
        return exc is self._idle  # gunicorn then finds no request and closes the connection


class JsonErrorWorker(GeventWorker):  # type: ignore[misc]  # subclassing an untyped class
    """gunicorn's gevent worker, answering what it refuses outside the app with the API's error body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connection = local()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        """Serve one connection, remembering it for the waits for its requests."""
        self._connection.client, self._connection.first = client, True
        super().handle(listener, client, addr)

    def timeout_ctx(self) -> _RequestWait:
        """Wait for the connection's next request: longer for its first, and never past one that arrived."""
        first, self._connection.first = self._connection.first, False
        return _RequestWait(self._connection.client, _FIRST_REQUEST_S if first else self.cfg.keepalive)

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """Log the error and answer it with the API's JSON error body, then close the connection."""
        started = datetime.now()
        addr = addr or ("", -1)  # a unix socket has no peer address
        status, body = _answer(exc, self.cfg)
        if status < 500:
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        else:
            self.log.exception("Error handling request", exc_info=exc)
        payload = orjson.dumps(body)
        reason = HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {reason}\r\nDate: {util.http_date()}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        if req is None and isinstance(exc, (errors.InvalidHeader, errors.InvalidHeaderName)):
            req = getattr(exc, "req", None)  # a bad header carries the request read so far
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            response = Response(req, client, self.cfg)
            response.status = f"{status} {reason}"
            response.response_length = len(payload)
            self.log.access(response, req, environ, datetime.now() - started)
        _send_and_linger(client, head.encode("latin-1") + payload)

"""Request bodies: read through a size limit, chunked or not, and inflated when sent gzip-compressed."""

from __future__ import annotations

import zlib
from typing import Protocol

from flask import Request

from shared.errors import InvalidJson, PayloadTooLarge, UnsupportedMediaType

READ_BYTES = 1 << 16


class Readable(Protocol):
    """Anything a request body is read from, a block at a time."""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to size bytes (all that is left when size is negative), b"" at the end."""


def _too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is over the configured limit of {limit:,} bytes{what}.",
        [{"field": None, "reason": f"more than {limit} bytes{what}"}],
    )


class LimitedBody:
    """A request body read through a cap that refuses it with 413 as soon as more than the limit arrived."""

    def __init__(self, stream: Readable, limit: int, what: str = "") -> None:
        self._stream = stream
        self._limit = limit
        self._left = limit
        self._what = what

    def read(self, size: int = -1, /) -> bytes:
        """Return up to size bytes of the body (all of it when size is negative), b"" at its end."""
        if size < 0:
            return b"".join(iter(lambda: self.read(READ_BYTES), b""))
        # One byte past the limit tells a longer body from one of exactly the limit.
        data = self._stream.read(min(size, self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise _too_large(self._limit, self._what)
        return data


class GunzipBody:
    """A gzip-compressed body, inflated as it is read; 400 when corrupt or cut short."""

    def __init__(self, compressed: Readable) -> None:
        self._compressed = compressed
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to size inflated bytes (all of them when size is negative), b"" at the end."""
        if size < 0:
            return b"".join(iter(lambda: self.read(READ_BYTES), b""))
        while True:
            try:
                # max_length bounds what one call inflates, so a small bomb never fills memory.
                data = self._inflate.decompress(self._pending, size)
                self._pending = self._inflate.unconsumed_tail
                if data or self._inflate.eof:
                    return data
                self._pending = self._compressed.read(READ_BYTES)
            except zlib.error as exc:
                raise InvalidJson(f"The gzip-compressed body is corrupt: {exc}; send it again.") from None
            if not self._pending:
                raise InvalidJson("The gzip-compressed body ends before its end: send all of it again.")


def request_body(request: Request, limit: int) -> Readable:
    """Return the request's body, whatever its framing and encoding, refused with 413 past the limit.

    A gzip-compressed body may be at most the limit both as sent and once inflated.
    """
    request.max_content_length = limit  # a declared Content-Length over it is refused here, unread
    stream: Readable = request.stream
    if "wsgi.input_terminated" in request.environ:
        # The server ends the body (Content-Length or the last chunk), and Werkzeug's own cap would
        # cut a chunked body at the limit silently or refuse one of exactly the limit: count here.
        stream = request.environ["wsgi.input"]
    body: Readable = LimitedBody(stream, limit)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "gzip":
        return LimitedBody(GunzipBody(body), limit, " once inflated")
    if encoding != "identity":
        raise UnsupportedMediaType("Send the body as it is, or compressed with Content-Encoding: gzip.")
    return body

"""A small asyncio HTTP/1.1 keep-alive client, cheap enough to share two cores with the service it loads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

HEAD_LIMIT = 64 * 1024
UPLOAD_SLICE = 4 * 1024 * 1024


class HttpError(Exception):
    """The server broke the HTTP/1.1 exchange: closed early or answered something unparseable."""


@dataclass(frozen=True)
class Response:
    """One complete HTTP answer: status, lower-cased header names and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return orjson.loads(self.body)


def parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    """Return the status and the lower-cased headers of a response head ending in a blank line."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def render_head(method: str, path: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    """Return the request line and headers of a request with a body of the given length."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Connection:
    """One keep-alive connection to a server on loopback, reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _ensure_open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._reader.at_eof():
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT)
        return self._reader, self._writer

    async def close(self) -> None:
        """Close the connection if it is open."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _send(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        _, writer = await self._ensure_open()
        head = render_head(method, path, f"{self.host}:{self.port}", headers, len(body))
        if len(body) <= UPLOAD_SLICE:
            writer.write(head + body)
        else:
            writer.write(head)
            view = memoryview(body)
            for start in range(0, len(body), UPLOAD_SLICE):
                writer.write(view[start : start + UPLOAD_SLICE])
                await writer.drain()
        await writer.drain()

    async def _head(self) -> tuple[int, dict[str, str]]:
        assert self._reader is not None
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise HttpError("the server closed the connection before answering") from exc
        return parse_head(raw)

    async def _body(self, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
        assert self._reader is not None
        reader = self._reader
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        return
                    piece = await reader.readexactly(size + 2)
                    yield piece[:-2]
            elif "content-length" in headers:
                remaining = int(headers["content-length"])
                while remaining > 0:
                    piece = await reader.read(min(remaining, 1 << 20))
                    if not piece:
                        raise HttpError("the server closed the connection inside a body")
                    remaining -= len(piece)
                    yield piece
            else:
                while piece := await reader.read(1 << 20):
                    yield piece
        except asyncio.IncompleteReadError as exc:
            raise HttpError("the server closed the connection inside a body") from exc

    async def _finish(self, headers: Mapping[str, str]) -> None:
        if headers.get("connection", "").lower() == "close" or not (
            "content-length" in headers or "transfer-encoding" in headers
        ):
            await self.close()

    async def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> Response:
        """Send one request and return the whole response, closing the connection on any failure."""
        try:
            await self._send(method, path, headers or {}, body)
            status, head = await self._head()
            content = b"".join([piece async for piece in self._body(head)])
        except BaseException:
            await self.close()
            raise
        await self._finish(head)
        return Response(status, head, content)

    async def stream(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """Send one request and yield (status, piece) for each piece of the body as it arrives."""
        try:
            await self._send(method, path, headers or {}, body)
            status, head = await self._head()
            async for piece in self._body(head):
                yield status, piece
        except BaseException:
            await self.close()
            raise
        await self._finish(head)

"""One webhook POST, bounded in time and held to the address policy at the moment it connects.

httpcore (the engine under httpx) connects through a network backend we give it: ours resolves the
host, refuses it if any address is one the policy forbids, and connects to an address it just
checked, so a name cannot be re-pointed at a private address between the check and the connection
(DNS rebinding). TLS still verifies the certificate against the URL's host name. Every read and
write is cut at the attempt's deadline, so a receiver that answers one byte at a time holds its
thread no longer than a silent one. Redirects are never followed: httpcore does not follow them.
"""

from __future__ import annotations

import ssl
import time
import typing
from dataclasses import dataclass

import httpcore

from shared.webhook_store import Attempt
from shared.webhooks import AddressPolicy, Target, UnsafeUrl, split_url

# A write is cut into pieces this large so each one waits at most until the deadline.
_WRITE_PIECE = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """How long one attempt may take: to connect, and in all."""

    connect_s: float = 3.0
    total_s: float = 10.0


class _Bounded(httpcore.NetworkStream):
    """A connection whose every read and write ends by the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the attempt used up its time")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_PIECE):
            piece = buffer[start : start + _WRITE_PIECE]
            self._inner.write(piece, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = self._left(timeout, httpcore.ConnectTimeout)
        return _Bounded(self._inner.start_tls(ssl_context, server_hostname, left), self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _CheckedBackend(httpcore.NetworkBackend):
    """Connects only to addresses the policy allows, checked as the connection is made."""

    def __init__(self, policy: AddressPolicy, deadline: float) -> None:
        self._policy = policy
        self._deadline = deadline
        self._plain = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._policy.resolve(Target("http", host, port))
        failure: Exception = httpcore.ConnectError(f"no address of {host} answered")
        for address in addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the attempt used up its time")
            wait = left if timeout is None else min(timeout, left)
            try:
                stream = self._plain.connect_tcp(address, port, wait, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _Bounded(stream, self._deadline)
        raise failure

    def sleep(self, seconds: float) -> None:
        self._plain.sleep(seconds)


class Sender:
    """Posts webhook deliveries, each on a fresh connection held to the policy and the limits."""

    def __init__(self, policy: AddressPolicy, limits: Limits) -> None:
        self.policy = policy
        self.limits = limits
        # Made once: loading the system's certificate authorities takes a few milliseconds.
        self._tls = ssl.create_default_context()

    def post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        """Send one POST and return how it went: the status, or the error in words, and the time it took."""
        at, started = time.time(), time.monotonic()
        deadline = started + self.limits.total_s
        timeouts = {"connect": self.limits.connect_s, "read": self.limits.total_s,
                    "write": self.limits.total_s, "pool": self.limits.total_s}  # fmt: skip
        status: int | None = None
        error: str | None = None
        try:
            split_url(url)
            backend = _CheckedBackend(self.policy, deadline)
            pool = httpcore.ConnectionPool(ssl_context=self._tls, max_connections=1, network_backend=backend)
            sent = pool.stream("POST", url, headers=list(headers.items()), content=body,
                               extensions={"timeout": timeouts})  # fmt: skip
            with pool, sent as response:
                status = response.status  # the answer's body is never read: only its status counts
        except UnsafeUrl as exc:
            error = f"refused: {exc.reason}"
        except httpcore.ConnectTimeout:
            error = f"no connection within {self.limits.connect_s:g} s"
        except (httpcore.TimeoutException, TimeoutError):
            error = f"no answer within {self.limits.total_s:g} s"
        except Exception as exc:  # whatever a receiver does, the sender goes on; the reason is recorded
            error = f"{type(exc).__name__}: {exc}"[:300]
        return Attempt(at, status, error, (time.monotonic() - started) * 1000)

"""kombu's Redis transports, with one client a channel instead of one made for every acknowledgement.

kombu's Redis channel makes a new redis-py client (about 150 µs of CPU: its table of response
callbacks is built each time) whenever it needs one without holding one: on receiving every message
(recorded as unacknowledged) and on acknowledging it, on the latency of every job. Here a channel
keeps one client for its connection pool and makes another only when kombu replaced the pool (after
a fork or a lost connection). The pool, not the client, holds connections, so sharing it is safe.

The Sentinel channel also fails as a lost connection, not a crash, once its connection closed: after
the master died, Celery still acknowledges, on the old channel, the messages that channel delivered,
and closing it hands back the messages it held; both need a client, which kombu's sentinel channel
makes from a connection that is already gone and fails with AttributeError, which Celery does not
expect and dies of. Here that is a redis.ConnectionError, one of the transport's connection errors,
which Celery logs and carries on from; the messages stay in the broker's unacked hash and come back
after the visibility timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class _HeldClient:
    """A channel's conn_or_acquire that hands out one client per connection pool."""

    _held: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """Yield the client given, else the channel's own client for its current pool."""
        if client:
            yield client
            return
        pool = self.pool  # type: ignore[attr-defined]  # kombu's channel, which this is mixed into
        if self._held is None or self._held.connection_pool is not pool:
            self._held = self._create_client()  # type: ignore[attr-defined]
        yield self._held


class Channel(_HeldClient, kombu_redis.Channel):
    """kombu's Redis channel holding one client."""


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above."""

    Channel = Channel


class SentinelChannel(_HeldClient, kombu_redis.SentinelChannel):
    """A sentinel channel holding one client; used after its connection closed, a connection error."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection of this channel was closed")
        return super()._connparams(asynchronous)  # type: ignore[misc]  # kombu's stubs omit this helper


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Redis Sentinel transport with the channel above."""

    Channel = SentinelChannel

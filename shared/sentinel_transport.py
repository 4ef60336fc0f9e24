"""kombu's Redis Sentinel transport, with a closed channel failing as a lost connection, not a crash.

Once a worker's broker connection is lost (the master died), Celery still acknowledges, on the old
channel, the messages that channel delivered, and closing it hands back the messages it held: both
need a client, which kombu's sentinel channel makes from a connection that is already gone and
fails with AttributeError, which Celery does not expect and dies of. Here that is a
redis.ConnectionError, one of the transport's connection errors, which Celery logs and carries on
from; the messages stay in the broker's unacked hash and come back after the visibility timeout.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport.redis import SentinelChannel, SentinelTransport


class Channel(SentinelChannel):
    """A sentinel channel that reports being used after its connection closed as a connection error."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection of this channel was closed")
        return super()._connparams(asynchronous)  # type: ignore[misc]  # kombu's stubs omit this helper


class Transport(SentinelTransport):
    """kombu's Redis Sentinel transport with the channel above."""

    Channel = Channel

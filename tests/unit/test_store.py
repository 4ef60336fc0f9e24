"""Which failures of Redis surely left nothing behind (so a submit may say nothing was accepted)."""

from __future__ import annotations

import pytest
import redis

from shared.store import never_sent


@pytest.mark.parametrize(
    ("error", "unsent"),
    [
        (redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), True),
        (redis.TimeoutError("Timeout connecting to server"), True),
        (redis.ConnectionError("No connection available."), True),
        (redis.ConnectionError("Error while reading from 127.0.0.1:6379 : (104, 'reset')"), False),
        (redis.ConnectionError("Connection closed by server."), False),
        (redis.TimeoutError("Timeout reading from 127.0.0.1:6379"), False),
        (redis.ConnectionError("Error 32 while writing to socket. Broken pipe."), False),
    ],
)
def test_only_a_connection_never_made_counts_as_never_sent(error: redis.RedisError, unsent: bool) -> None:
    """A command whose connection failed before it was written never ran; after that, nobody knows."""
    assert never_sent(error) is unsent

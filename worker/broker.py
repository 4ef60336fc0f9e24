"""The worker's consumer for a Sentinel-managed broker: it reconnects within a second of the new master."""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)

# Celery's consumer waits 2 s, then 4, 6... between reconnections; a failover is over in a few
# seconds, so it tries every INTERVAL_MAX_S at most, starting at once.
INTERVAL_START_S = 0.0
INTERVAL_STEP_S = 0.25
INTERVAL_MAX_S = 1.0


class PromptConsumer(Consumer):
    """Celery's consumer, reconnecting to the broker in steps of at most a second."""

    def ensure_connected(self, conn: Any) -> Any:
        """Connect, retrying at short intervals until the broker's master answers."""
        conn.ensure_connection = functools.partial(
            conn.ensure_connection,
            interval_start=INTERVAL_START_S,
            interval_step=INTERVAL_STEP_S,
            interval_max=INTERVAL_MAX_S,
        )
        return super().ensure_connected(conn)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Drop the lost connection as Celery does, surviving kombu's sentinel channel failing to close."""
        if self.connection is not None:
            # Only this connection's close, which Celery calls next, is wrapped.
            self.connection.close = functools.partial(_close, self.connection.close)  # type: ignore[method-assign]
        super().on_connection_error_after_connected(exc)


def _close(close: Any) -> None:
    # Closing a sentinel channel puts the messages it holds back through a new pool, made from the
    # connection that is already gone (AttributeError): they stay in the broker's unacked hash, and
    # come back after the visibility timeout instead, so the worker need not die of it.
    try:
        close()
    except AttributeError as exc:
        log.warning(
            "the lost broker connection could not hand its messages back (%r); they come back later", exc
        )

"""The worker's consumer for a Sentinel-managed broker: it reconnects within a second of the new master."""

from __future__ import annotations

import functools
from typing import Any

from celery.worker.consumer import Consumer

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

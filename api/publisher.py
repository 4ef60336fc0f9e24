"""Publishing chunk messages, coalescing the ones that requests submit at the same moment.

The first request to arrive publishes at once, so a quiet system waits for nothing; requests
that arrive while a publish is under way queue up and the next of them publishes them all as
one message. Under load the batches grow by themselves, and so does what each message carries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shared.tasks import ChunkMessage

Send = Callable[[Sequence[ChunkMessage]], None]


@dataclass
class _Slot:
    messages: Sequence[ChunkMessage]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    error: BaseException | None = None


class CoalescingPublisher:
    """Sends chunk messages through send(), several requests' messages in one call when they overlap."""

    def __init__(self, send: Send, max_batch: int) -> None:
        self._send = send
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._busy = False

    def publish(self, messages: Sequence[ChunkMessage]) -> None:
        """Publish the messages, returning once they are with the broker, or raising why not."""
        slot = _Slot(messages)
        with self._lock:
            self._pending.append(slot)
            slot.lead = not self._busy
            self._busy = True
        if not slot.lead:
            slot.done.wait()
        if slot.lead:  # this request publishes for everyone waiting, then hands the turn on
            # Yield once: requests already running get to join this batch; when none are, the
            # cost is nothing (under gevent this is a switch to whatever else is ready).
            time.sleep(0)
            self._flush()
        if slot.error is not None:
            raise slot.error

    def _flush(self) -> None:
        with self._lock:
            batch: list[_Slot] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0].messages) <= self._max_batch):
                slot = self._pending.pop(0)
                batch.append(slot)
                count += len(slot.messages)
        try:
            self._send([m for slot in batch for m in slot.messages])
        except Exception as exc:  # every request in the batch learns that its jobs were not sent
            for slot in batch:
                slot.error = exc
        for slot in batch:
            slot.lead = False
            slot.done.set()
        with self._lock:
            if self._pending:
                successor = self._pending[0]
                successor.lead = True
                successor.done.set()
            else:
                self._busy = False

"""The deliverer: sends due webhook deliveries from each worker's main process, off the prediction path.

It leases due deliveries (so no two senders try the same one at once, and a dead sender's come
due again), hands them to a bounded set of sender threads and records each attempt. One attempt
holds one thread for at most its time limit; a host already receiving its share of deliveries
gets the next ones later, so a receiver that hangs slows its own deliveries and no one else's.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter

import orjson

from shared.job_view import job_view
from shared.settings import Settings
from shared.store import SUCCEEDED, JobStore, record_of
from shared.webhook_store import DELIVERED, FAILED, PENDING, Attempt, DeliveryStore, Leased
from shared.webhooks import AddressPolicy, RetrySchedule, UnsafeUrl, key_secret, signature, split_url
from worker.webhook_http import Limits, Sender

log = logging.getLogger(__name__)

# How often the deliverer looks for due deliveries, how long a host that has its share in flight
# waits, and how many due deliveries a pass may look at (per thread) to find ones for other hosts.
POLL_S = 0.2
HOST_BUSY_S = 2.0
SCAN_PER_THREAD = 8


def payload(store: JobStore, leased: Leased, inline_limit: int) -> bytes:
    """Return a delivery's body: the Job as the event found it, outputs included when inline."""
    record = record_of(leased.job, leased.snapshot)
    outputs = None
    if record.status == SUCCEEDED and record.total <= inline_limit:
        outputs = store.outputs(record.id, record.chunks)  # a finished job's outputs never change
    return orjson.dumps(job_view(record, outputs))


def signed_headers(secret: bytes, leased: Leased, body: bytes, now: float) -> dict[str, str]:
    """Return the headers of a delivery, signed as Standard Webhooks signs."""
    timestamp = int(now)
    return {
        "content-type": "application/json",
        "user-agent": "infer-webhooks/1",
        "webhook-id": leased.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, leased.id, timestamp, body),
        "webhook-event": leased.event,
    }


def _host(url: str) -> str:
    try:
        target = split_url(url)
    except UnsafeUrl:
        return ""
    return f"{target.host.lower()}:{target.port}"


class Deliverer:
    """Leases due deliveries and sends them on a bounded pool of threads, a few at a time per host."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        if settings.webhook_secret is None:
            raise ValueError("webhooks need INFER_WEBHOOK_SECRET")
        self.store = store
        self.deliveries = DeliveryStore(store.client)
        self.server_secret = settings.webhook_secret.get_secret_value()
        self.inline_limit = settings.inline_limit
        self.schedule = RetrySchedule.of(settings)
        self.sender = Sender(
            AddressPolicy.of(settings), Limits(settings.webhook_connect_timeout_s, settings.webhook_timeout_s)
        )
        self.threads = settings.webhook_threads
        self.per_host = settings.webhook_per_host
        # A lease outlasts any attempt (its connect, its whole time and a slow name lookup) by far.
        self.lease_s = 2 * (settings.webhook_connect_timeout_s + settings.webhook_timeout_s) + 30
        self._work: queue.Queue[Leased] = queue.Queue()
        self._busy: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._random = random.Random()  # noqa: S311 (spreads retries; nothing secret)

    def in_flight(self) -> int:
        """Return how many deliveries this deliverer holds, queued for a thread or being sent."""
        with self._lock:
            return sum(self._busy.values())

    def run_once(self, now: float | None = None) -> int:
        """Lease as many due deliveries as there are free threads and queue them; return how many."""
        free = self.threads - self.in_flight()
        if free <= 0:
            return 0
        now = time.time() if now is None else now
        taken = seen = 0
        # Deliveries for a host that has its share in flight wait, with no attempt counted, and the
        # pass goes on to the next due ones: a backlog for one host does not hold up the others.
        while taken < free and seen < self.threads * SCAN_PER_THREAD:
            asked = free - taken
            batch = self.deliveries.lease(now, self.lease_s, asked)
            seen += len(batch)
            for leased in batch:
                if self._reserve(_host(leased.url)):
                    self._work.put(leased)
                    taken += 1
                else:
                    self.deliveries.settle(leased, None, PENDING, now + HOST_BUSY_S)
            if len(batch) < asked:
                break
        return taken

    def _reserve(self, host: str) -> bool:
        """Count a delivery in flight to the host, unless the host already has its share."""
        with self._lock:
            if self._busy[host] >= self.per_host:
                return False
            self._busy[host] += 1
            return True

    def deliver(self, leased: Leased) -> None:
        """Send one delivery and record the attempt: delivered, failed for good, or due again later."""
        try:
            body = payload(self.store, leased, self.inline_limit)
        except (KeyError, ValueError) as exc:  # a record this version cannot read: trying again won't help
            unreadable = Attempt(time.time(), None, f"the job's record could not be read ({exc!r})", 0.0)
            self.deliveries.settle(leased, unreadable, FAILED)
            return
        secret = key_secret(self.server_secret, leased.owner)
        attempt = self.sender.post(leased.url, signed_headers(secret, leased, body, time.time()), body)
        if attempt.ok:
            self.deliveries.settle(leased, attempt, DELIVERED)
            return
        now = time.time()
        due = self.schedule.next_try(leased.tried + 1, leased.created_at, now, self._random.random())
        if due is None:
            log.warning("webhook delivery %s failed for good after %d attempts", leased.id, leased.tried + 1)
        self.deliveries.settle(leased, attempt, PENDING if due is not None else FAILED, due or 0.0)

    def _send_forever(self) -> None:
        while True:
            leased = self._work.get()
            try:
                self.deliver(leased)
            except Exception:  # Redis away: the lease runs out and the delivery comes due again
                log.exception("webhook delivery %s could not be recorded", leased.id)
            finally:
                with self._lock:
                    self._busy[_host(leased.url)] -= 1
                    self._busy += Counter()  # drops hosts with nothing in flight

    def run_forever(self, stop: threading.Event) -> None:
        """Lease and queue due deliveries until stop is set."""
        while not stop.wait(POLL_S):
            try:
                self.run_once()
            except Exception:  # Redis away: the next pass tries again
                log.exception("webhook lease pass failed")

    def start(self) -> threading.Event:
        """Start the sender threads and the leasing loop as daemons; set the returned event to stop it."""
        for number in range(self.threads):
            threading.Thread(target=self._send_forever, name=f"webhook-{number}", daemon=True).start()
        stop = threading.Event()
        threading.Thread(target=self.run_forever, args=(stop,), name="webhooks", daemon=True).start()
        return stop

"""The Celery application factory, configured the same way for the API and the workers."""

from __future__ import annotations

from celery import Celery

from shared.redis_connect import broker_sentinel_options, broker_transport, broker_url
from shared.settings import Settings


def make_celery(settings: Settings) -> Celery:
    """Return a Celery app bound to the settings' Redis, JSON only, acking after the work is done."""
    app = Celery("infer", broker=broker_url(settings), set_as_current=False)
    app.conf.broker_transport = broker_transport(settings)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=settings.queue_name,
        # A message is acknowledged only once its job record holds the outcome, and a
        # worker process that dies mid-task puts its message back: no accepted job is lost.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Each process reserves a few messages so it never idles between them, yet a slow
        # chunk cannot hoard the queue while other workers wait.
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.restore_interval_s,
            "socket_connect_timeout": settings.broker_timeout_s,
            "socket_timeout": max(5.0, settings.broker_timeout_s),
            # In Sentinel mode: the master's name and how to reach the sentinels.
            **broker_sentinel_options(settings),
        },
        broker_connection_retry_on_startup=True,
        # Flower switches task events on while it watches (its enable_events); off, they cost nothing.
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app

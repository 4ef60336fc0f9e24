"""The entry module Celery loads (``celery -A worker.main worker``): the app, with its tasks."""

from __future__ import annotations

from celery import Celery

from shared.celery_app import make_celery
from shared.redis_connect import sentinel_mode
from shared.settings import Settings
from worker.tasks import register_tasks


def create_worker_app(settings: Settings | None = None) -> Celery:
    """Return the worker's Celery app with its tasks registered."""
    settings = settings or Settings()
    app = make_celery(settings)
    if sentinel_mode(settings):  # a failover is over in seconds: reconnect at once, not 2 s, 4 s, 6 s later
        app.conf.worker_consumer = "worker.broker:PromptConsumer"
    register_tasks(app, settings)
    return app


# Celery's command line needs a module attribute; building it opens no connection.
app = create_worker_app()

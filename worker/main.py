"""The entry module Celery loads (``celery -A worker.main worker``): the app, with its tasks."""

from __future__ import annotations

from celery import Celery

from shared.celery_app import make_celery
from shared.settings import Settings
from worker.tasks import register_tasks


def create_worker_app(settings: Settings | None = None) -> Celery:
    """Return the worker's Celery app with its tasks registered."""
    settings = settings or Settings()
    app = make_celery(settings)
    register_tasks(app, settings)
    return app


# Celery's command line needs a module attribute; building it opens no connection.
app = create_worker_app()

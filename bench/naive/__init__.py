"""The naive baseline: a tutorial-style Flask + Celery app, one task per request, results in Redis."""

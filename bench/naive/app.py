"""A tutorial-style prediction app: Flask enqueues one Celery task per request, clients poll its result."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from bench.limit import variants
from shared.chunks import as_rows
from shared.registry import Registry
from shared.storage import LocalStorage
from worker.cache import load_predictor
from worker.runtimes.base import Predictor
from worker.runtimes.base import predict as predict_outputs


def make_celery() -> Celery:
    """Return the Celery app of the tutorial: Redis as broker and as result backend, JSON messages."""
    url = os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/0")
    app = Celery("naive", broker=url, backend=url, set_as_current=False)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    return app


# Celery's command line (celery -A bench.naive.app) needs a module attribute; making it connects nowhere.
celery = make_celery()


@functools.cache
def _predictor(model: str) -> Predictor:
    """Load a model once a process with the runtime NAIVE_RUNTIME names (sklearn, as tutorials do)."""
    root = Path(os.environ["NAIVE_REGISTRY"])
    registry = Registry(LocalStorage(root))
    registry.refresh()
    runtime = os.environ.get("NAIVE_RUNTIME", "sklearn")
    manifest = next(v for v in variants(registry.get(model)) if v.runtime == runtime)
    return load_predictor(root, manifest)


@celery.task(name="naive.predict")
def predict(model: str, inputs: list[Any]) -> list[dict[str, Any]]:
    """Predict the records of one request."""
    predictor = _predictor(model)
    return predict_outputs(predictor, as_rows(predictor.manifest, inputs))


def create_app() -> Flask:
    """Return the tutorial's Flask app: POST enqueues a task, GET reads its result from Redis."""
    app = Flask(__name__)

    @app.post("/predict/<model>")
    def submit(model: str) -> ResponseReturnValue:
        body = request.get_json(force=True)
        task = predict.delay(model, body["inputs"])
        return jsonify({"id": task.id}), 202

    @app.get("/result/<task_id>")
    def result(task_id: str) -> ResponseReturnValue:
        found: AsyncResult[Any] = AsyncResult(task_id, app=celery)
        if not found.ready():
            return jsonify({"status": found.status}), 202
        outputs = found.get(timeout=1) if found.successful() else None
        return jsonify({"status": found.status, "outputs": outputs})

    return app

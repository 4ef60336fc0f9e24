"""The Flask application factory: everything the API needs is built here, nothing at import time."""

from __future__ import annotations

import functools
import time

from flask import Flask, Response, g, request

from api.auth import caller_of_request
from api.errors import register_error_handlers
from api.limits import OpenRequests, StoreCapacity
from api.metrics import Metrics
from api.publisher import CoalescingPublisher
from api.routes import docs, events, health, jobs, models, publishing, routing, web, webhooks
from api.routes import watch as watching
from api.routing import RoutingTable
from api.services import EXTENSION, Services, WorkerProbe, services
from api.waiter import CompletionWaiter
from shared.celery_app import make_celery
from shared.registry import GenerationWatch, make_registry
from shared.settings import Settings
from shared.store import JobStore, connect
from shared.task_messages import TaskSender

PROTECTED_PREFIXES = ("/v1/", "/v2/")


def create_app(settings: Settings | None = None) -> Flask:
    """Return the API app built from the settings (read from the environment when not given)."""
    settings = settings or Settings()
    app = Flask(__name__)
    # A doubled slash (an empty job id) is a path no route answers: 404, not a 308 to another route.
    app.url_map.merge_slashes = False
    # Werkzeug refuses a longer body from its Content-Length before reading any of it.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    client = connect(settings)
    registry = make_registry(settings)
    registry.refresh()
    celery = make_celery(settings)
    store = JobStore(client, settings)
    generation = GenerationWatch(client, registry)
    workers = WorkerProbe(celery)
    sender = TaskSender(celery, settings.queue_name, client)
    app.extensions[EXTENSION] = Services(
        settings=settings,
        store=store,
        registry=registry,
        celery=celery,
        waiter=CompletionWaiter(connect(settings, blocking=True)),
        metrics=Metrics(
            client, settings.queue_name, registry, workers.census, store.lifetime_s, generation.check
        ),
        workers=workers,
        sender=sender,
        publisher=CoalescingPublisher(sender.chunks, settings.max_batch_jobs),
        capacity=StoreCapacity(client, settings.memory_high_water, settings.queue_full_retry_s),
        open_requests=OpenRequests(settings.max_open_requests_per_key),
        routing=RoutingTable(client, registry),
    )
    blueprints = (
        jobs.bp,
        events.bp,
        models.bp,
        publishing.bp,
        routing.bp,
        watching.bp,
        webhooks.bp,
        health.bp,
        docs.bp,
        web.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    app.before_request(functools.partial(_follow_registry, generation))
    app.before_request(_authenticate)
    app.after_request(_observe)
    app.teardown_request(_release)
    return app


def _follow_registry(watch: GenerationWatch) -> None:
    # A version published or retired through any process is listed here within a second.
    if request.path.startswith(PROTECTED_PREFIXES):
        watch.check()


def _authenticate() -> None:
    g.started = time.perf_counter()
    if request.path.startswith(PROTECTED_PREFIXES):
        settings = services().settings
        caller = caller_of_request(settings.api_key_hashes, settings.admin_key_hashes)
        g.owner, g.scope = caller.owner, caller.scope
        # One key's long-polls and slow uploads hold at most its share of this process's connections.
        services().open_requests.enter(g.owner)
        g.holding = True


def _release(_: BaseException | None) -> None:
    if g.pop("holding", False):
        services().open_requests.leave(g.owner)


def _observe(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule else "unmatched"
    metrics = services().metrics
    metrics.count_request(request.method, route, response.status_code)
    if "started" in g:
        metrics.latency.labels(route).observe(time.perf_counter() - g.started)
    return response

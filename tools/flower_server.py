"""Flower with every route behind its basic auth: ``python -m tools.flower_server [FLOWER OPTIONS]``.

Flower 2.2 asks for credentials on its pages and API but serves ``/metrics``, ``/healthcheck``,
its static files and its login page to anyone. This runs ``celery flower`` with Flower's
application checking the credentials before it routes a request, so every path, present or
future, answers 401 without them. Nothing secret goes on the command line: the broker comes
from ``CELERY_BROKER_URL`` (or, for a Sentinel-managed Redis, from the service's own
``INFER_REDIS_SENTINELS``, ``INFER_REDIS_MASTER_NAME`` and passwords) and the credentials from
``FLOWER_BASIC_AUTH=user:password`` (both read by Celery and Flower themselves); without
credentials it refuses to start.

``python -m tools.flower_server --healthcheck [PORT]`` is the containers' health check: it GETs
``/healthcheck`` on 127.0.0.1 (port 5555 unless given) with the credentials of the environment.

Run it from the repository's root (or with it on PYTHONPATH); it imports only Celery, Flower,
Tornado and the standard library, so the Flower image needs nothing else of the project.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote

import tornado.web
from tornado.httputil import HTTPServerRequest

CREDENTIALS_VARIABLE = "FLOWER_BASIC_AUTH"
# The broker's transport options as JSON, when it needs some (Redis Sentinel: master_name, sentinel_kwargs).
TRANSPORT_OPTIONS_VARIABLE = "CELERY_BROKER_TRANSPORT_OPTIONS"
DEFAULT_PORT = 5555


def authorized(header: str, allowed: list[str]) -> bool:
    """Tell whether an Authorization header carries one of the allowed ``user:password`` pairs."""
    scheme, _, encoded = header.partition(" ")
    if scheme != "Basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    matches = [hmac.compare_digest(given, pair.encode()) for pair in allowed]  # all compared: no early exit
    return any(matches)


class Unauthorized(tornado.web.RequestHandler):
    """Answers any request with 401 and a Basic challenge, running nothing else."""

    def check_xsrf_cookie(self) -> None:
        """Skip the XSRF check, so a POST without credentials is 401 too."""

    def prepare(self) -> None:
        """Finish the request with 401 before any method runs."""
        self.set_status(401)
        self.set_header("WWW-Authenticate", 'Basic realm="flower"')
        self.finish("Access denied")


def guarded_flower() -> type[Any]:
    """Return Flower's application class, made to check the credentials before routing any request."""
    from flower.app import Flower  # type: ignore[import-untyped]

    class GuardedFlower(Flower):  # type: ignore[misc]  # Flower ships no type information
        """Flower, routing a request only when it carries one of the basic-auth pairs."""

        def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
            """Route the request as Flower would, or to Unauthorized without the credentials."""
            allowed = list(self.options.basic_auth or [])
            if authorized(request.headers.get("Authorization", ""), allowed):
                return super().find_handler(request, **kwargs)
            return self.get_handler_delegate(request, Unauthorized)

    return GuardedFlower


def healthcheck(port: int) -> int:
    """Return 0 when Flower answers /healthcheck with 200 to the environment's credentials, else 1."""
    pair = os.environ.get(CREDENTIALS_VARIABLE, "").split(",")[0]
    token = base64.b64encode(pair.encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthcheck", headers={"Authorization": f"Basic {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 (a fixed loopback URL)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


def follow_sentinels(env: MutableMapping[str, str]) -> None:
    """Point Celery at the Sentinel-managed broker the service's INFER_REDIS_* variables name, if any.

    The same URL and options as shared/redis_connect.py gives the service's own processes, made
    here again because the Flower image carries no other file of the project.
    """
    sentinels = [part.strip() for part in env.get("INFER_REDIS_SENTINELS", "").split(",") if part.strip()]
    if not sentinels:
        return
    password = env.get("INFER_REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    env["CELERY_BROKER_URL"] = ";".join(f"sentinel://{auth}{address}/0" for address in sentinels)
    sentinel_kwargs = {"password": env.get("INFER_REDIS_SENTINEL_PASSWORD") or None, "socket_timeout": 5}
    master = env.get("INFER_REDIS_MASTER_NAME") or "inference"
    env[TRANSPORT_OPTIONS_VARIABLE] = json.dumps({"master_name": master, "sentinel_kwargs": sentinel_kwargs})


def main(argv: list[str]) -> int:
    """Run Flower with the given options, every route behind the credentials; or run the health check."""
    if argv[:1] == ["--healthcheck"]:
        return healthcheck(int(argv[1]) if len(argv) > 1 else DEFAULT_PORT)
    if not os.environ.get(CREDENTIALS_VARIABLE):
        print(f"set {CREDENTIALS_VARIABLE}=user:password: Flower never runs open", file=sys.stderr)
        return 2
    from celery.bin.celery import celery
    from flower import command  # type: ignore[import-untyped]

    command.Flower = guarded_flower()  # the class `celery flower` builds its application from
    follow_sentinels(os.environ)
    options = os.environ.get(TRANSPORT_OPTIONS_VARIABLE)
    if options:  # a Sentinel-managed broker: the master's name and the sentinels' password
        from celery import current_app

        current_app.conf.broker_transport_options = json.loads(options)
    celery.main(args=["flower", *argv], prog_name="celery", auto_envvar_prefix="CELERY")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

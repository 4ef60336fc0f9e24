"""Sentinel settings: the sentinels' addresses, the broker URLs made of them, when jobs wait for replicas."""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from pydantic import ValidationError

from shared.redis_connect import (
    broker_sentinel_options,
    broker_transport,
    broker_url,
    replicas_to_wait,
    sentinel_addresses,
)
from shared.settings import Settings
from tools.flower_server import TRANSPORT_OPTIONS_VARIABLE, follow_sentinels

SENTINELS = "s1.example:26379, s2.example:26380,[::1]:26381"


def test_without_sentinels_the_one_redis_url_is_used_and_nothing_waits_for_replicas() -> None:
    """The default: redis_url for the store and the broker, no transport options, no replica wait."""
    settings = Settings(redis_url="redis://:pw@host:6390/2")
    assert broker_url(settings) == "redis://:pw@host:6390/2"
    assert broker_sentinel_options(settings) == {}
    assert broker_transport(settings) == "shared.broker_transport:Transport"
    assert replicas_to_wait(settings) == 0
    assert replicas_to_wait(Settings(redis_min_replicas=2)) == 2


def test_sentinels_are_a_comma_list_of_host_port_and_a_job_then_waits_for_one_replica() -> None:
    """INFER_REDIS_SENTINELS is split and parsed; in Sentinel mode a job waits for one replica by default."""
    settings = Settings(redis_sentinels=SENTINELS, redis_password="p@ss word", redis_sentinel_password="sp")
    assert sentinel_addresses(settings) == [("s1.example", 26379), ("s2.example", 26380), ("::1", 26381)]
    assert replicas_to_wait(settings) == 1
    assert replicas_to_wait(Settings(redis_sentinels=SENTINELS, redis_min_replicas=0)) == 0
    urls = broker_url(settings).split(";")
    assert [url.split("@")[1] for url in urls] == [
        "s1.example:26379/0", "s2.example:26380/0", "[::1]:26381/0",
    ]  # fmt: skip
    assert {unquote(url.split("@")[0].removeprefix("sentinel://:")) for url in urls} == {"p@ss word"}
    options = broker_sentinel_options(settings)
    assert options["master_name"] == "inference"
    assert options["sentinel_kwargs"]["password"] == "sp"
    assert broker_transport(settings) == "shared.broker_transport:SentinelTransport"


@pytest.mark.parametrize("bad", ["s1.example", "s1.example:port", ":26379"])
def test_a_sentinel_without_host_and_port_is_refused_saying_how_to_give_it(bad: str) -> None:
    """A sentinel address that is not host:port stops the process at start with what to write instead."""
    with pytest.raises(ValidationError, match="host:port"):
        Settings(redis_sentinels=f"ok.example:26379,{bad}")


def test_empty_passwords_and_replica_count_from_compose_mean_unset() -> None:
    """Compose passes ${VAR:-} as empty strings: no password, and the mode's default replica wait."""
    settings = Settings(
        redis_sentinels="", redis_password="", redis_sentinel_password="", redis_min_replicas=""
    )
    assert settings.redis_sentinels == []
    assert settings.redis_password is None
    assert settings.redis_sentinel_password is None
    assert replicas_to_wait(settings) == 0


def test_flower_is_pointed_at_the_same_sentinels_as_the_service() -> None:
    """tools/flower_server.py builds, from the same variables, the broker URL and options the service uses."""
    env = {
        "INFER_REDIS_SENTINELS": SENTINELS,
        "INFER_REDIS_MASTER_NAME": "main",
        "INFER_REDIS_PASSWORD": "p@ss word",
        "INFER_REDIS_SENTINEL_PASSWORD": "sp",
        "CELERY_BROKER_URL": "redis://redis:6379/0",
    }
    follow_sentinels(env)
    settings = Settings(
        redis_sentinels=SENTINELS, redis_master_name="main", redis_password="p@ss word",
        redis_sentinel_password="sp",
    )  # fmt: skip
    assert env["CELERY_BROKER_URL"] == broker_url(settings)
    options = json.loads(env[TRANSPORT_OPTIONS_VARIABLE])
    expected = broker_sentinel_options(settings)
    assert options["master_name"] == expected["master_name"]
    assert options["sentinel_kwargs"]["password"] == expected["sentinel_kwargs"]["password"]
    untouched = {"CELERY_BROKER_URL": "redis://redis:6379/0", "INFER_REDIS_SENTINELS": ""}
    follow_sentinels(untouched)
    assert untouched == {"CELERY_BROKER_URL": "redis://redis:6379/0", "INFER_REDIS_SENTINELS": ""}

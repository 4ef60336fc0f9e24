"""Connections to Redis for every process: the one server at redis_url, or the master Sentinel names.

With ``redis_sentinels`` set, clients ask the sentinels where the master is and ask again after a
failover: a command that meets a dead or demoted master (refused connection, timeout, READONLY)
is retried with backoff for up to ``redis_failover_s``, on the master the sentinels promoted. The
broker (kombu's ``sentinel://`` transport) and Flower follow the same sentinels. Without it,
nothing changes: the one Redis at ``redis_url``, no retry, and no wait for replicas.
"""

from __future__ import annotations

import math
import socket
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from shared.settings import Settings

# The pause between two tries during a failover grows from BACKOFF_BASE_S up to BACKOFF_CAP_S.
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 0.5

# Rewrites a key's own expiry (a write that changes nothing) so the WAIT after it, on the same
# connection, covers every write the master took before it, and tells whether the key is there at
# all: after a failover, on the new master, a record that never reached a replica is missing.
# KEYS: the key (it must have an expiry); returns 1 when it exists, else 0.
TOUCH = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""


class _MasterConnection(SentinelManagedConnection):
    """A connection that asks the sentinels where the master is whenever it connects again.

    redis-py's own asks only when the pool hands out a new connection; one that lost its socket
    mid-command reconnects to the address it had, a dead master, until its retries run out.
    """

    def connect(self) -> None:
        """Connect to the master the sentinels name now, retrying over a failover."""
        self.retry.call_with_retry(self.connect_check_health, lambda _: None)

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        """Connect, unless connected, to the master the sentinels name now (one try: callers retry)."""
        if self._sock:
            return
        self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A pool of connections to the master the sentinels name, where a burst waits for a free one."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(  # type: ignore[no-untyped-call]  # redis-py's sentinel module has no hints
            service_name, sentinel_manager, connection_class=_MasterConnection, **kwargs
        )


def sentinel_mode(settings: Settings) -> bool:
    """Tell whether the processes follow a Sentinel-managed master rather than one Redis."""
    return bool(settings.redis_sentinels)


def replicas_to_wait(settings: Settings) -> int:
    """Return how many replicas must hold a job's record before it is acknowledged (0: no wait)."""
    if settings.redis_min_replicas is not None:
        return settings.redis_min_replicas
    return 1 if sentinel_mode(settings) else 0


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    """Return each sentinel's (host, port)."""
    found = []
    for address in settings.redis_sentinels:
        host, _, port = address.rpartition(":")
        found.append((host.strip("[]"), int(port)))
    return found


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "password": _secret(settings.redis_sentinel_password),
        "socket_connect_timeout": settings.broker_timeout_s,
        "socket_timeout": max(1.0, settings.broker_timeout_s),
    }


def failover_retry(settings: Settings) -> Retry:
    """Return the retry that carries a command over a failover: backoff up to redis_failover_s in all."""
    tries = math.ceil(settings.redis_failover_s / BACKOFF_CAP_S) + 3  # the first few pauses are shorter
    errors = (redis.ConnectionError, redis.TimeoutError, socket.timeout)
    return Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), tries, supported_errors=errors)


def connect_redis(settings: Settings, *, blocking: bool = False, decode: bool = True) -> redis.Redis:
    """Return a client whose pool holds at most redis_max_connections, a burst waiting for a free one.

    blocking: the client's commands may block without limit (a subscription). decode: replies as
    str, else bytes.
    """
    options: dict[str, Any] = {
        "max_connections": settings.redis_max_connections,
        "timeout": settings.redis_pool_timeout_s,
        "decode_responses": decode,
        "socket_connect_timeout": settings.broker_timeout_s,
        "socket_timeout": None if blocking else max(5.0, settings.broker_timeout_s),
        "health_check_interval": 30,
    }
    if not sentinel_mode(settings):
        pool = redis.BlockingConnectionPool.from_url(settings.redis_url, retry_on_timeout=False, **options)
        return redis.Redis(connection_pool=pool)
    sentinels = Sentinel(  # type: ignore[no-untyped-call]  # redis-py's sentinel module has no hints
        sentinel_addresses(settings), sentinel_kwargs=_sentinel_kwargs(settings)
    )
    master: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        settings.redis_master_name,
        connection_pool_class=_BlockingSentinelPool,
        password=_secret(settings.redis_password),
        db=0,
        retry=failover_retry(settings),
        **options,
    )
    return master


def broker_url(settings: Settings) -> str:
    """Return Celery's broker URL: redis_url, or one sentinel:// URL a sentinel, joined by ';'."""
    if not sentinel_mode(settings):
        return settings.redis_url
    password = _secret(settings.redis_password)
    auth = f":{quote(password, safe='')}@" if password else ""
    return ";".join(f"sentinel://{auth}{address}/0" for address in settings.redis_sentinels)


def broker_sentinel_options(settings: Settings) -> dict[str, Any]:
    """Return the broker's transport options naming the master and how to reach the sentinels."""
    if not sentinel_mode(settings):
        return {}
    return {"master_name": settings.redis_master_name, "sentinel_kwargs": _sentinel_kwargs(settings)}


def broker_transport(settings: Settings) -> str:
    """Return the kombu transport class for the broker (shared/broker_transport.py)."""
    return f"shared.broker_transport:{'SentinelTransport' if sentinel_mode(settings) else 'Transport'}"


class ReplicaWait:
    """Proves that what the master took reached replicas: a touch of a key, then WAIT, on one connection."""

    def __init__(self, client: redis.Redis, replicas: int, timeout_s: float) -> None:
        self.replicas = replicas
        self._client = client
        self._timeout_ms = max(1, int(timeout_s * 1000))

    def confirm(self, key: str) -> bool:
        """Tell whether the key is on the master and every earlier write reached enough replicas.

        Raises redis.RedisError when Redis could not be asked.
        """
        if self.replicas <= 0:
            return True
        pipe = self._client.pipeline(transaction=False)
        pipe.eval(TOUCH, 1, key)  # EVAL, not EVALSHA: a pipeline of scripts asks first whether they exist
        pipe.execute_command("WAIT", self.replicas, self._timeout_ms)  # type: ignore[no-untyped-call]
        found, reached = pipe.execute()
        return bool(found) and int(reached) >= self.replicas

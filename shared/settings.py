"""Settings of every process, read from environment variables prefixed ``INFER_``."""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def hash_api_key(key: str) -> str:
    """Return the SHA-256 hex digest under which an API key is configured and owns jobs."""
    return hashlib.sha256(key.encode()).hexdigest()


class Settings(BaseSettings):
    """Configuration of the API, the workers and the tools, one field per variable."""

    model_config = SettingsConfigDict(env_prefix="INFER_", extra="ignore")

    redis_url: str = "redis://localhost:6379/0"
    registry_path: Path = Path("models/registry")
    # Where the model registry lives: unset, the folder registry_path (one host); s3://bucket/prefix,
    # object storage over the S3 API, shared by processes on several hosts.
    registry_url: str | None = Field(default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    # The S3 endpoint (unset: AWS's), its keys (no default) and region, read only with registry_url.
    s3_endpoint_url: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str | None = None
    # Bytes of model artifacts one worker process holds loaded at most; the least recently used goes.
    worker_model_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    # Hashes, never the keys: a leaked config file does not leak a credential. User keys submit and
    # read their own jobs; admin keys may also publish, route and retire model versions.
    api_key_hashes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_key_hashes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    retention_s: int = Field(default=86_400, gt=0)
    # The longest an unfinished job is kept, so a job whose messages were lost cannot stay forever.
    max_job_age_s: int = Field(default=7 * 86_400, gt=0)
    inline_limit: int = Field(default=1_000, gt=0)
    max_records: int = Field(default=1_000_000, gt=0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # A CSV (bulk) body may be larger: it is read, checked and stored block by block. A body sent with
    # Content-Encoding: gzip may be at most this both as sent and once inflated.
    max_bulk_body_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # A publish upload (artifact, metadata and reference rows together) may be at most this.
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_wait_s: float = Field(default=60.0, ge=0)
    max_queued_per_model: int = Field(default=100_000, gt=0)
    queue_full_retry_s: int = Field(default=5, gt=0)
    # Job submissions a second per API key; 0 means no limit.
    rate_limit_per_s: int = Field(default=0, ge=0)
    # Single-record jobs submitted together travel in one message of at most this many jobs.
    max_batch_jobs: int = Field(default=64, gt=0)
    chunk_size: int = Field(default=5_000, gt=0)
    queue_name: str = "inference"
    # A message unacknowledged this long (its worker died) goes back to the queue.
    visibility_timeout_s: int = Field(default=60, gt=0)
    restore_interval_s: float = Field(default=10.0, gt=0)
    prefetch_multiplier: int = Field(default=4, gt=0)
    broker_timeout_s: float = Field(default=1.0, gt=0)
    # Connections each process opens to Redis at most; a burst past them waits for one instead of failing.
    redis_max_connections: int = Field(default=64, gt=0)
    redis_pool_timeout_s: float = Field(default=10.0, gt=0)
    # Redis Sentinel: unset, the one Redis at redis_url; set (host:port of each sentinel, comma
    # separated), every process follows the master the sentinels name (db 0 of it) through a failover,
    # with redis_password for Redis and redis_sentinel_password for the sentinels.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_master_name: str = "inference"
    redis_password: SecretStr | None = None
    redis_sentinel_password: SecretStr | None = None
    # How long a command keeps retrying while Sentinel promotes a replica (Sentinel mode only).
    redis_failover_s: float = Field(default=30.0, gt=0)
    # A job is answered 202 only once its record reached this many replicas (WAIT), else a truthful
    # 503; unset: 1 in Sentinel mode, 0 (no wait) with one Redis. Waits at most redis_replica_timeout_s.
    redis_min_replicas: int | None = Field(default=None, ge=0)
    redis_replica_timeout_s: float = Field(default=2.0, gt=0)
    # A job whose message was lost (a worker killed as it took it, an API killed before it published)
    # is published again within this long once no worker holds it and the queue has moved past it.
    redelivery_s: float = Field(default=30.0, gt=0)
    # What one API key may hold: unfinished jobs, bytes of inputs and outputs kept in Redis, and
    # requests open at once in one API process (long-polls, uploads).
    max_open_jobs_per_key: int = Field(default=100_000, gt=0)
    max_stored_bytes_per_key: int = Field(default=512 * 1024 * 1024, gt=0)
    max_open_requests_per_key: int = Field(default=256, gt=0)
    # An events stream (GET /v1/jobs/{id}/events) closes after this long with a retry hint, and the
    # client resumes it with Last-Event-ID, so no connection is held forever.
    events_max_s: float = Field(default=300.0, gt=0)
    # New jobs are refused (429) once Redis uses this share of its maxmemory, so accepted jobs can finish.
    memory_high_water: float = Field(default=0.9, gt=0, le=1)
    # Webhooks: the server secret every key's signing secret is derived from (no default: webhooks
    # are refused until it is set); addresses a webhook may reach beyond the public internet; the
    # retry schedule (backoff doubling from webhook_backoff_s up to webhook_backoff_max_s, tried for
    # at least webhook_retry_for_s) and the bounds of one attempt and of the senders.
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    webhook_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )
    webhook_backoff_s: float = Field(default=5.0, gt=0)
    webhook_backoff_max_s: float = Field(default=1_800.0, gt=0)
    webhook_retry_for_s: float = Field(default=3_600.0, ge=0)
    webhook_connect_timeout_s: float = Field(default=3.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_threads: int = Field(default=16, gt=0)
    webhook_per_host: int = Field(default=4, gt=0)
    # The prediction log (GET /v1/models/{name}/predictions): the share of served records a worker
    # adds to it (every failed job is added whatever the share) and the entries kept per model.
    prediction_log_rate: float = Field(default=0.01, ge=0, le=1)
    prediction_log_max: int = Field(default=10_000, gt=0)

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "registry_url",
        "s3_endpoint_url",
        "s3_access_key",
        "s3_secret_key",
        "s3_region",
        "webhook_secret",
        "redis_password",
        "redis_sentinel_password",
        "redis_min_replicas",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes ${VAR:-} as an empty string: that means the setting is not given.
        return None if value == "" else value

    @field_validator("api_key_hashes", "admin_key_hashes", mode="before")
    @classmethod
    def _split_hashes(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for address in value if isinstance(value, list) else []:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"{address!r} is not host:port; give each sentinel as host:port, comma separated"
                )
        return value

"""How a job looks in HTTP answers and webhook deliveries: the Job of the contract, made from its record."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.store import SUCCEEDED, JobRecord


def rfc3339(timestamp: float | None) -> str | None:
    """Return an epoch time as an RFC 3339 UTC string, or None."""
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(start: float | None, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if start is not None and end is not None else None


def job_urls(job_id: str) -> dict[str, str]:
    """Return the links of a job's routes."""
    base = f"/v1/jobs/{job_id}"
    return {"get": base, "cancel": f"{base}/cancel", "outputs": f"{base}/outputs"}


def job_view(record: JobRecord, outputs: list[Any] | None = None) -> dict[str, Any]:
    """Return the Job of the HTTP contract for a record and, when inline, its outputs."""
    return {
        "id": record.id,
        "kind": record.kind,
        "model": record.model,
        "version": record.version,
        "status": record.status,
        "created_at": rfc3339(record.created_at),
        "started_at": rfc3339(record.started_at),
        "completed_at": rfc3339(record.completed_at),
        "progress": {"done": record.done, "total": record.total},
        "outputs": outputs if record.status == SUCCEEDED else None,
        "error": record.error,
        "metrics": {
            "queue_ms": _ms(record.created_at, record.started_at),
            "predict_ms": round(record.predict_ms, 3) if record.started_at else None,
            "total_ms": _ms(record.created_at, record.completed_at),
        },
        "urls": job_urls(record.id),
    }

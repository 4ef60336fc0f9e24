"""W3 bulk: one job of many rows sent as CSV, finished when every output row has been downloaded."""

from __future__ import annotations

import time
from typing import Any

import orjson

from bench.client import HttpError
from bench.jobs import Target, wait_job


async def bulk(target: Target, model: str, body: bytes, rows: int, timeout_s: float) -> dict[str, Any]:
    """Send one CSV job, wait for it, stream its NDJSON outputs and return the timings of each phase."""
    conn = target.connect()
    started = time.perf_counter()
    try:
        path = f"/v1/models/{model}/jobs"
        answer = await conn.request("POST", path, target.headers(Content_Type="text/csv"), body)
        accepted = time.perf_counter()
        if answer.status == 415:
            return {"rows": rows, "skipped": "the API answered 415 to text/csv: CSV submission is missing"}
        if answer.status not in (200, 202):
            return {"rows": rows, "error": f"submit HTTP {answer.status}: {answer.body[:300]!r}"}
        job_id = str(answer.json()["id"])
        job = await wait_job(conn, target, job_id, timeout_s)
        finished = time.perf_counter()
        if job is None or job["status"] != "succeeded":
            status = "lost" if job is None else job["status"]
            return {"rows": rows, "error": f"the job ended {status}", "job": job_id}
        lines, first = 0, b""
        headers = target.headers(Accept="application/x-ndjson")
        async for status, piece in conn.stream("GET", f"/v1/jobs/{job_id}/outputs", headers):
            if status != 200:
                return {"rows": rows, "error": f"outputs HTTP {status}", "job": job_id}
            if not first:
                first = piece.split(b"\n", 1)[0]
            lines += piece.count(b"\n")
        downloaded = time.perf_counter()
    except (HttpError, OSError) as exc:
        return {"rows": rows, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await conn.close()
    total = downloaded - started
    return {
        "rows": rows,
        "body_mb": round(len(body) / 1e6, 1),
        "rows_downloaded": lines,
        "rows_lost": rows - lines,
        "first_output": orjson.loads(first) if first else None,
        "seconds": round(total, 3),
        "rows_per_s": round(lines / total) if total > 0 else None,
        "phases_s": {
            "upload_and_accept": round(accepted - started, 3),
            "queue_and_predict": round(finished - accepted, 3),
            "download": round(downloaded - finished, 3),
        },
        "server_metrics": job.get("metrics"),
    }

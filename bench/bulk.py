"""W3 bulk: one job of many rows sent as CSV, finished when every output row has been downloaded."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from bench import memory
from bench.client import HttpError
from bench.jobs import Target, wait_job
from shared.settings import Settings

# The shipped limit of a CSV body: a larger one is sent gzip-compressed, as a user would.
BULK_LIMIT = Settings.model_fields["max_bulk_body_bytes"].default

# How often the API's resident memory is read while the job runs.
RSS_SAMPLE_S = 0.02


class _RssPeaks:
    """The largest resident memory of any of some processes, by the phase it was seen in."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.phase = "before"
        self.peaks_mb: dict[str, float] = {}

    def sample(self) -> None:
        """Read each process's resident memory now and keep the largest under the current phase."""
        kib = max((memory.status_kib(pid).get("VmRSS", 0) for pid in self.pids), default=0)
        mb = round(kib * 1024 / 1e6, 1)
        self.peaks_mb[self.phase] = max(self.peaks_mb.get(self.phase, 0.0), mb)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(RSS_SAMPLE_S)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[_RssPeaks]:
        """Sample in the background while the block runs, and once more at its end."""
        self.sample()
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.sample()

    def figures(self) -> dict[str, float | None]:
        """Return the peaks by phase and how far the upload raised the memory above where it was."""
        before, upload = self.peaks_mb.get("before"), self.peaks_mb.get("upload_and_accept")
        return {
            **self.peaks_mb,
            "upload_growth": round(upload - before, 1) if before is not None and upload is not None else None,
        }


async def bulk(
    target: Target, model: str, body: bytes, rows: int, timeout_s: float, api_pids: Sequence[int] = ()
) -> dict[str, Any]:
    """Send one CSV job, wait for it, stream its NDJSON outputs and return the timings of each phase.

    The API processes' resident memory is read all along, its peak reported for each phase.
    """
    peaks = _RssPeaks(api_pids)
    async with peaks.sampling():
        figures = await _bulk_job(target, model, body, rows, timeout_s, peaks)
    if api_pids:
        figures["api_rss_mb"] = peaks.figures()
    return figures


def _encoding(body: bytes) -> dict[str, str]:
    """Return the headers the body is sent with: gzip-compressed only when over the shipped limit."""
    headers = {"Content_Type": "text/csv"}
    if len(body) > BULK_LIMIT:
        headers["Content_Encoding"] = "gzip"
    return headers


def _encoded(body: bytes) -> bytes:
    return zlib.compress(body, 1, wbits=31) if len(body) > BULK_LIMIT else body


async def _bulk_job(
    target: Target, model: str, body: bytes, rows: int, timeout_s: float, peaks: _RssPeaks
) -> dict[str, Any]:
    conn = target.connect()
    upload_headers, payload = target.headers(**_encoding(body)), _encoded(body)  # compressed before timing
    started = time.perf_counter()
    try:
        path = f"/v1/models/{model}/jobs"
        peaks.phase = "upload_and_accept"
        answer = await conn.request("POST", path, upload_headers, payload)
        accepted = time.perf_counter()
        peaks.phase = "queue_and_predict"
        if answer.status == 415:
            return {"rows": rows, "skipped": "the API answered 415 to text/csv: CSV submission is missing"}
        if answer.status not in (200, 202):
            return {"rows": rows, "error": f"submit HTTP {answer.status}: {answer.body[:300]!r}"}
        job_id = str(answer.json()["id"])
        job = await wait_job(conn, target, job_id, timeout_s)
        finished = time.perf_counter()
        peaks.phase = "download"
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
        "sent": _encoding(body).get("Content_Encoding", "raw"),
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

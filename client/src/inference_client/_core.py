"""What the sync and async clients share: building each request, encoding rows, retrying, parsing answers.

Nothing here does I/O; `Client` and `AsyncClient` only send the `Call`s built here and hand the
answers back to the parsers, so the two cannot drift apart.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from inference_client.errors import JobFailed, ServiceUnreachable, WaitTimeout, error_for

# Rows above this count travel as a CSV body (smaller and streamed by the API) unless the job
# names a version or a deadline, which only the JSON body carries.
CSV_THRESHOLD = 1000
# The API holds a long-poll at most this long (INFER_MAX_WAIT_S, 60 by default).
MAX_WAIT_S = 60.0
# How long a request may take beyond the time the API was asked to hold it.
SLACK_S = 30.0
TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
# An events stream silent this long (the API sends a keep-alive every 15 s) is opened again.
EVENTS_SILENCE_S = 45.0
MAX_PAGE = 500


@dataclass(frozen=True)
class Call:
    """One HTTP request, before it is sent."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    timeout: float | None = None
    # Whether sending it again after a network error cannot do anything twice.
    repeatable: bool = True


@dataclass(frozen=True)
class Retry:
    """When to send a call again: network errors and 503 with backoff, 429 after its Retry-After."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_delay_s: float = 30.0

    def after_error(self, attempt: int, call: Call) -> float | None:
        """Return the seconds to wait before another try after a network error, or None to give up."""
        if not call.repeatable or attempt + 1 >= self.attempts:
            return None
        return self._backoff(attempt)

    def after_answer(self, attempt: int, response: httpx.Response) -> float | None:
        """Return the seconds to wait before another try after this answer, or None to keep it."""
        if response.status_code not in (429, 503) or attempt + 1 >= self.attempts:
            return None
        if response.status_code == 429:
            after = retry_after(response)
            return min(after, self.max_delay_s) if after is not None else self._backoff(attempt)
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_s * 2**attempt, self.max_delay_s))


def retry_after(response: httpx.Response) -> float | None:
    """Return the Retry-After header in seconds, when it is a number."""
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def headers(api_key: str | None) -> dict[str, str]:
    """Return the headers every request carries."""
    sent = {"User-Agent": "inference-client/0.1"}
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"
    return sent


def raise_for(response: httpx.Response) -> None:
    """Raise the typed error for an error answer; do nothing for a success."""
    if response.is_success:
        return
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    raise error_for(response.status_code, body, retry_after(response))


# Requests ---------------------------------------------------------------------------------------


def list_models() -> Call:
    """Return the call listing the models."""
    return Call("GET", "/v1/models")


def get_model(name: str, version: str | None = None) -> Call:
    """Return the call describing a model's default version, or the version named."""
    path = f"/v1/models/{name}" + (f"/versions/{version}" if version else "")
    return Call("GET", path)


def submit(model: str, content: bytes, content_type: str, key: str | None = None) -> Call:
    """Return the call submitting a job; its Idempotency-Key makes every retry of it safe."""
    sent = {"Content-Type": content_type, "Idempotency-Key": key or str(uuid.uuid4())}
    return Call("POST", f"/v1/models/{model}/jobs", headers=sent, content=content)


def get_job(job_id: str, wait: float | None = None) -> Call:
    """Return the call reading a job, held by the API up to `wait` seconds until it ends."""
    if wait is None or wait <= 0:
        return Call("GET", f"/v1/jobs/{job_id}")
    wait = min(wait, MAX_WAIT_S)
    return Call("GET", f"/v1/jobs/{job_id}", params={"wait": f"{wait:g}"}, timeout=wait + SLACK_S)


def cancel(job_id: str) -> Call:
    """Return the call canceling a job (a second cancel would answer 409, so never resent)."""
    return Call("POST", f"/v1/jobs/{job_id}/cancel", repeatable=False)


def list_jobs(status: str | None, model: str | None, limit: int, cursor: str | None) -> Call:
    """Return the call reading one page of this key's jobs, newest first."""
    params = {"limit": str(limit)}
    for name, value in (("status", status), ("model", model), ("cursor", cursor)):
        if value is not None:
            params[name] = value
    return Call("GET", "/v1/jobs", params=params)


def publish(
    model: str,
    artifact: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    reference: str | os.PathLike[str] | None = None,
) -> Call:
    """Return the call uploading a model version (sent again it could only be refused: never resent)."""
    parts: list[tuple[str, str | None, bytes, str]] = [
        ("metadata", None, json.dumps(metadata).encode(), "application/json")
    ]
    for name, path in (("artifact", artifact), ("reference", reference)):
        if path is not None:
            parts.append((name, os.path.basename(path), read_csv(path), "application/octet-stream"))
    boundary = uuid.uuid4().hex
    body = bytearray()
    for name, filename, data, media_type in parts:
        shown = f'; filename="{filename.replace(chr(34), "_")}"' if filename else ""
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{shown}\r\n'.encode()
        body += f"Content-Type: {media_type}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    return Call("POST", f"/v1/models/{model}/versions", headers={"Content-Type": content_type},
                content=bytes(body), timeout=300, repeatable=False)  # fmt: skip


def events(job_id: str, last_event_id: str | None, deadline: float | None = None) -> Call:
    """Return the call opening a job's events stream, after the event of that id when one was seen."""
    sent = {"Accept": "text/event-stream"}
    if last_event_id:
        sent["Last-Event-ID"] = last_event_id
    # The API writes at least every 15 s (an event or a keep-alive): a longer silence is a lost stream.
    read = (
        EVENTS_SILENCE_S if deadline is None else max(0.1, min(EVENTS_SILENCE_S, deadline - time.monotonic()))
    )
    return Call("GET", f"/v1/jobs/{job_id}/events", headers=sent, timeout=read)


def outputs(job_id: str, accept: str = "application/x-ndjson") -> Call:
    """Return the call streaming a succeeded job's outputs."""
    return Call("GET", f"/v1/jobs/{job_id}/outputs", headers={"Accept": accept}, timeout=300)


# Rows -------------------------------------------------------------------------------------------


def is_dataframe(rows: object) -> bool:
    """Tell whether rows is a pandas DataFrame, without importing pandas."""
    return type(rows).__name__ == "DataFrame" and hasattr(rows, "to_csv")


def needs_features(rows: Any, version: str | None, deadline_s: float | None) -> bool:
    """Tell whether encoding these rows needs the model's feature names (many rows given as lists)."""
    if is_dataframe(rows) or version is not None or deadline_s is not None:
        return False
    return len(rows) > CSV_THRESHOLD and not isinstance(rows[0], Mapping)


def encode_rows(
    rows: Any,
    version: str | None = None,
    deadline_s: float | None = None,
    features: Sequence[str] | None = None,
) -> tuple[bytes, str]:
    """Return the body and its media type for these rows: JSON, or CSV for many rows."""
    if is_dataframe(rows):
        if version is None and deadline_s is None:
            return rows.to_csv(index=False).encode(), "text/csv"
        rows = json.loads(rows.to_json(orient="records"))
    records = list(rows)
    if not records:
        raise ValueError("rows is empty: give at least one record")
    if len(records) > CSV_THRESHOLD and version is None and deadline_s is None:
        return _csv(records, features), "text/csv"
    body: dict[str, Any] = {"inputs": records}
    if version is not None:
        body["version"] = version
    if deadline_s is not None:
        body["deadline_s"] = deadline_s
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode(), "application/json"


def _csv(records: list[Any], features: Sequence[str] | None) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if isinstance(records[0], Mapping):
        names = list(dict.fromkeys(k for r in records for k in r))
        writer.writerow(names)
        writer.writerows([r.get(n, "") for n in names] for r in records)
    else:
        if features is None:
            raise ValueError("rows given as lists need the model's feature names to go as CSV")
        writer.writerow(features)
        writer.writerows(records)
    return out.getvalue().encode()


# Answers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Records done of the job's total."""

    done: int
    total: int


@dataclass(frozen=True)
class Model:
    """A model version as the API describes it (schemas and labels empty in the list of models)."""

    name: str
    version: str
    versions: list[str]
    task: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    labels: list[str] | None
    raw: dict[str, Any]

    @property
    def features(self) -> list[str]:
        """Return the input feature names in the order an array record lists them."""
        required = self.input_schema.get("required")
        return list(required) if required else list(self.input_schema.get("properties", {}))


def parse_model(body: dict[str, Any]) -> Model:
    """Return the model described by an answer of GET /v1/models/{name}."""
    return Model(
        name=body["name"],
        version=body.get("version", ""),
        versions=list(body.get("versions", [])),
        task=body.get("task", ""),
        description=body.get("description", ""),
        input_schema=body.get("input_schema", {}),
        output_schema=body.get("output_schema", {}),
        labels=body.get("labels"),
        raw=body,
    )


def parse_models(body: dict[str, Any]) -> list[Model]:
    """Return the models listed by GET /v1/models."""
    return [parse_model(m) for m in body.get("models", [])]


class JobView:
    """A job as last read from the API; `Job` and `AsyncJob` add what can be done with it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _update(self, data: dict[str, Any]) -> None:
        self.data = data

    @property
    def id(self) -> str:
        """Return the job's id."""
        return str(self.data["id"])

    @property
    def status(self) -> str:
        """Return queued, running, succeeded, failed, canceled or expired."""
        return str(self.data["status"])

    @property
    def model(self) -> str:
        """Return the model's name."""
        return str(self.data.get("model", ""))

    @property
    def version(self) -> str:
        """Return the version that serves (or served) the job."""
        return str(self.data.get("version", ""))

    @property
    def progress(self) -> Progress:
        """Return the records done of the total."""
        got = self.data.get("progress") or {}
        return Progress(int(got.get("done", 0)), int(got.get("total", 0)))

    @property
    def error(self) -> dict[str, Any] | None:
        """Return the error's code and message once the job failed, was canceled or expired."""
        error = self.data.get("error")
        return error if isinstance(error, dict) else None

    @property
    def terminal(self) -> bool:
        """Tell whether the job has ended (it will never change again)."""
        return self.status in TERMINAL

    def __repr__(self) -> str:
        p = self.progress
        return f"<{type(self).__name__} {self.id} {self.model} {self.status} {p.done}/{p.total}>"


def ndjson_line(line: str) -> dict[str, Any] | None:
    """Return the output on one NDJSON line, or None for a blank line."""
    line = line.strip()
    return json.loads(line) if line else None


def to_dataframe(outputs: Iterable[dict[str, Any]]) -> Any:
    """Return outputs as a DataFrame, nested fields flattened (`probabilities.setosa`)."""
    try:
        import pandas as pd  # optional: imported only when a DataFrame is asked for
    except ImportError as exc:
        raise ImportError("to_dataframe() needs pandas: pip install 'inference-client[pandas]'") from exc
    return pd.json_normalize(list(outputs))


def page_size(limit: int | None, page: int) -> int:
    """Return how many jobs to ask for in one page."""
    return max(1, min(page, MAX_PAGE, limit if limit is not None else MAX_PAGE))


def prepare(rows: Any) -> Any:
    """Return rows as a list (or the DataFrame as it is), so they can be counted and read twice."""
    return rows if is_dataframe(rows) else list(rows)


def read_csv(source: bytes | str | os.PathLike[str]) -> bytes:
    """Return a CSV body (or any file's bytes): bytes as they are, else the file at that path."""
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as f:
        return f.read()


def wait_call(job: JobView, deadline: float | None, timeout: float | None) -> Call | None:
    """Return the next long-poll of a job being waited for, None once it ended; raise when time is up."""
    if job.terminal:
        return None
    left = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout(job.id, timeout or 0.0)
    return get_job(job.id, max(left, 0.001))


def deadline_for(timeout: float | None) -> float | None:
    """Return the monotonic time by which a wait of `timeout` seconds ends."""
    return None if timeout is None else time.monotonic() + timeout


def succeeded(job: JobView) -> None:
    """Raise JobFailed unless the job succeeded."""
    if job.status != "succeeded":
        raise JobFailed(job.id, job.status, job.error)


class EventReader:
    """Reads the lines of a job's events stream (Server-Sent Events) and remembers where it got to."""

    def __init__(self, job_id: str, timeout: float | None = None) -> None:
        self.job_id = job_id
        self.last_id: str | None = None
        self.retry_s = 1.0
        self.ended = False
        self._timeout = timeout
        self._deadline = deadline_for(timeout)
        self._data: list[str] = []
        self._event = ""

    def _check_time(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise WaitTimeout(self.job_id, self._timeout or 0.0)

    def feed(self, line: str) -> dict[str, Any] | None:
        """Take one line; return the Job (without outputs) when it completes a `job` event, else None."""
        self._check_time()
        if not line:
            data, event = "\n".join(self._data), self._event
            self._data, self._event = [], ""
            if not data or event != "job":
                return None
            job: dict[str, Any] = json.loads(data)
            self.ended = job.get("status") in TERMINAL
            return job
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_s = int(value) / 1000
        return None  # a comment (a line starting with ':') or a field this client does not use

    def call(self) -> Call:
        """Return the call opening the stream, after the last event seen."""
        self._check_time()
        return events(self.job_id, self.last_id, self._deadline)

    def delay(self, failures: int, retry: Retry) -> float:
        """Return the seconds to wait before opening the stream again; give up after too many failures."""
        self._check_time()
        if failures == 0:
            return self.retry_s  # the service closed it on time and said when to come back
        delay = retry.after_error(failures - 1, self.call())
        if delay is None:
            raise ServiceUnreachable(
                f"the events stream of job {self.job_id} failed {failures} times in a row"
            )
        return delay


class JobPages:
    """Walks this key's job list page by page, following next_cursor, up to a limit."""

    def __init__(self, status: str | None, model: str | None, limit: int | None, page: int) -> None:
        self._filters = (status, model)
        self._left = limit
        self._page = page
        self._cursor: str | None = None
        self._done = False

    def next_call(self) -> Call | None:
        """Return the call reading the next page, or None when there is none."""
        if self._done or (self._left is not None and self._left <= 0):
            return None
        return list_jobs(*self._filters, page_size(self._left, self._page), self._cursor)

    def take(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the jobs of a page just read and remember where the next one starts."""
        jobs: list[dict[str, Any]] = list(body.get("jobs", []))
        if self._left is not None:
            jobs = jobs[: self._left]
            self._left -= len(jobs)
        self._cursor = body.get("next_cursor")
        self._done = self._cursor is None
        return jobs

"""The synchronous client: `Client`, the `Job` it returns and a job's streamed `Outputs`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from inference_client import _admin, _core
from inference_client._admin import Routing, Shadow, ShadowReport
from inference_client._core import Call, JobView, Model, Retry
from inference_client.errors import ServiceUnreachable


class Client:
    """A client of one inference service: `Client("http://127.0.0.1:8000", api_key)`.

    Every submit carries a fresh Idempotency-Key, and network errors and 503 answers are retried
    with that same key, so a retry never makes a second job; a 429 is retried after its Retry-After.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or Retry()
        self._http = httpx.Client(
            base_url=self.base_url, headers=_core.headers(api_key), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    headers=call.headers,
                    content=call.content,
                    timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                delay = self.retry.after_error(attempt, call)
                if delay is None:
                    raise ServiceUnreachable(f"no answer from {self.base_url}: {exc!r}") from exc
            else:
                delay = self.retry.after_answer(attempt, response)
                if delay is None:
                    _core.raise_for(response)
                    return response
            time.sleep(delay)
            attempt += 1

    def _json(self, call: Call) -> dict[str, Any]:
        body: dict[str, Any] = self._send(call).json()
        return body

    @contextmanager
    def _stream(self, call: Call) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(call.method, call.path, headers=call.headers, timeout=call.timeout) as r:
                if not r.is_success:
                    r.read()
                    _core.raise_for(r)
                yield r
        except httpx.TransportError as exc:
            raise ServiceUnreachable(f"no answer from {self.base_url}: {exc!r}") from exc

    def models(self) -> list[Model]:
        """Return every model's default version."""
        return _core.parse_models(self._json(_core.list_models()))

    def model(self, name: str, version: str | None = None) -> Model:
        """Return a model's default version, or the version named."""
        return _core.parse_model(self._json(_core.get_model(name, version)))

    def submit(
        self, model: str, rows: Any, version: str | None = None, deadline_s: float | None = None
    ) -> Job:
        """Queue a job of rows (dicts, lists in feature order, or a DataFrame) and return it at once."""
        rows = _core.prepare(rows)
        needs = _core.needs_features(rows, version, deadline_s)
        features = self.model(model).features if needs else None
        content, media_type = _core.encode_rows(rows, version, deadline_s, features)
        return Job(self, self._json(_core.submit(model, content, media_type)))

    def submit_csv(
        self, model: str, csv: bytes | str | os.PathLike[str], idempotency_key: str | None = None
    ) -> Job:
        """Queue a job of a CSV file (or its bytes), header = feature names, and return it at once.

        Pass your own `idempotency_key` to be able to send the same file again without a second job.
        """
        return Job(self, self._json(_core.submit(model, _core.read_csv(csv), "text/csv", idempotency_key)))

    def publish(
        self,
        model: str,
        artifact: str | os.PathLike[str],
        metadata: Mapping[str, Any],
        reference: str | os.PathLike[str] | None = None,
    ) -> Job:
        """Upload a model version (with an admin key) and return its publish job at once; `wait()` for it.

        metadata is the upload's JSON part: version, task, features, and optionally labels,
        description and allow_pickle; reference a CSV of rows like the training data.
        """
        return Job(self, self._json(_core.publish(model, artifact, metadata, reference)))

    def routing(self, model: str) -> Routing:
        """Return the model's routing: each version's weight and the shadow (unset: all to the default)."""
        return _admin.parse_routing(self._json(_admin.get_routing(model)))

    def set_routing(self, model: str, routes: Mapping[str, int], shadow: Shadow | None = None) -> Routing:
        """Replace the model's routing (admin key): weights summing to 100; `shadow` None removes it."""
        return _admin.parse_routing(self._json(_admin.put_routing(model, routes, shadow)))

    def shadow(self, model: str) -> ShadowReport:
        """Return how the model's shadow version's outputs agree with the served ones."""
        return _admin.parse_shadow(self._json(_admin.get_shadow(model)))

    def retire(self, model: str, version: str) -> None:
        """Retire a version without traffic that is not the default (admin key): unlisted, files deleted."""
        self._send(_admin.retire(model, version))

    def job(self, job_id: str) -> Job:
        """Return the job with this id."""
        return Job(self, self._json(_core.get_job(job_id)))

    def jobs(
        self, status: str | None = None, model: str | None = None, limit: int | None = None, page: int = 100
    ) -> Iterator[Job]:
        """Yield this key's jobs, newest first, following the pages up to `limit` jobs."""
        pages = _core.JobPages(status, model, limit, page)
        while (call := pages.next_call()) is not None:
            for data in pages.take(self._json(call)):
                yield Job(self, data)

    def predict(self, model: str, rows: Any, timeout: float | None = 60.0, version: str | None = None) -> Any:
        """Submit rows, wait for the job, and return its outputs (a DataFrame when rows was one)."""
        rows = _core.prepare(rows)
        job = self.submit(model, rows, version=version).wait(timeout)
        _core.succeeded(job)
        outputs = job.outputs()
        return outputs.to_dataframe() if _core.is_dataframe(rows) else list(outputs)


class Job(JobView):
    """A job of the service, as last read; `wait`, `refresh`, `outputs` and `cancel` talk to it."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        super().__init__(data)
        self._client = client

    def refresh(self) -> Job:
        """Read the job again and return it."""
        self._update(self._client._json(_core.get_job(self.id)))
        return self

    def wait(self, timeout: float | None = None) -> Job:
        """Long-poll until the job ends and return it; WaitTimeout after `timeout` seconds (None: never)."""
        deadline = _core.deadline_for(timeout)
        while (call := _core.wait_call(self, deadline, timeout)) is not None:
            self._update(self._client._json(call))
        return self

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the job (a dict, without outputs) at once and at each change until it ends.

        It follows the job's events stream; a stream closed before the end (the service's time limit,
        a dropped connection) is opened again with Last-Event-ID, so no change comes twice. The job
        is updated as events arrive. WaitTimeout after `timeout` seconds (None: never).
        """
        reader = _core.EventReader(self.id, timeout)
        failures = 0
        while not reader.ended:
            try:
                with self._client._stream(reader.call()) as response:
                    if response.status_code == 204:
                        return  # the service says its last event was seen already
                    for line in response.iter_lines():
                        if (data := reader.feed(line)) is not None:
                            failures = 0
                            self._update(data)
                            yield data
            except ServiceUnreachable:
                failures += 1
            if not reader.ended:
                time.sleep(reader.delay(failures, self._client.retry))

    def cancel(self) -> Job:
        """Cancel the job (Conflict once it has ended) and return it."""
        self._update(self._client._json(_core.cancel(self.id)))
        return self

    def outputs(self) -> Outputs:
        """Return the outputs of the succeeded job: iterate them (streamed) or call `to_dataframe()`."""
        return Outputs(self._client, self.id, self.data.get("outputs"))

    def outputs_csv(self) -> Iterator[bytes]:
        """Yield the outputs as CSV bytes, one column a field, in input order."""
        with self._client._stream(_core.outputs(self.id, "text/csv")) as response:
            yield from response.iter_bytes()


class Outputs:
    """A succeeded job's outputs, in input order, streamed as NDJSON while iterated."""

    def __init__(self, client: Client, job_id: str, inline: list[dict[str, Any]] | None = None) -> None:
        self._client = client
        self._job_id = job_id
        self._inline = inline

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._inline is not None:
            yield from self._inline
            return
        with self._client._stream(_core.outputs(self._job_id)) as response:
            for line in response.iter_lines():
                output = _core.ndjson_line(line)
                if output is not None:
                    yield output

    def to_dataframe(self) -> Any:
        """Return the outputs as a pandas DataFrame (nested fields as `probabilities.setosa`)."""
        return _core.to_dataframe(self)

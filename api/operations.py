"""The operations of the HTTP API as a table: path, parameters, body, and what each status means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from api.contract import (
    JOB_ID_PATTERN,
    MAX_LOG_LIMIT,
    REF,
    ContractSchema,
    DriftQuery,
    ListQuery,
    PollQuery,
    PredictionLogQuery,
)
from api.routes.jobs import MAX_LIST_LIMIT
from shared.registry import NAME_RE, VERSION_RE
from shared.settings import Settings

CSV_EXAMPLE = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n"


@dataclass(frozen=True)
class Op:
    """One operation: where it is, what it takes, and what every status it can answer means."""

    method: str
    path: str
    id: str
    tag: str
    summary: str
    ok: Mapping[int, dict[str, Any]]
    errors: Mapping[int, str]
    params: tuple[dict[str, Any], ...] = ()
    body: dict[str, Any] | None = None
    public: bool = False
    # Admin routes answer a user key with 403 forbidden.
    admin: bool = False
    description: str = ""


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def json_answer(model: str, description: str, **extra: Any) -> dict[str, Any]:
    """Return an answer whose body is the named model as JSON."""
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}, **extra}


def _text(*media_types: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {m: {"schema": {"type": "string"}} for m in media_types}}


def _event_stream(description: str) -> dict[str, Any]:
    """Describe a stream of `job` events: the schema is one event's, as OpenAPI 3.1 tools read it."""
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": _ref("JobEvent")}
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"const": "job"},
            "id": {"type": "string", "pattern": r"^\d+-[0-2]$"},
            "data": data,
            "retry": {"type": "integer", "minimum": 0},
        },
    }
    return {"description": description, "content": {"text/event-stream": {"schema": event}}}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema}


def _path(name: str, pattern: str, description: str) -> dict[str, Any]:
    return _param(name, "path", {"type": "string", "pattern": pattern}, description, True)


def _drop_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Return a query parameter's schema without its null branch: an absent parameter is the null."""
    branches = [b for b in schema.get("anyOf", []) if b != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "description") and v is not None}
    return {**branches[0], **rest} if len(branches) == 1 else rest


def _query(model: type[BaseModel]) -> tuple[dict[str, Any], ...]:
    """Return the query parameters a model declares, one per field."""
    schema = model.model_json_schema(ref_template=REF, schema_generator=ContractSchema)
    required = schema.get("required", [])
    return tuple(
        _param(name, "query", _drop_null(prop), prop.get("description", ""), name in required)
        for name, prop in schema["properties"].items()
    )


@dataclass(frozen=True)
class Limits:
    """The limits of the settings, as the document words them."""

    wait: str
    body: str
    records: str
    bulk_body: str
    inline: str
    retention: str
    open_requests: int
    upload: str
    events: str

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """Return the limits of these settings."""
        return cls(
            wait=f"{settings.max_wait_s:g} seconds",
            body=f"{settings.max_body_bytes:,} bytes",
            records=f"{settings.max_records:,} records",
            bulk_body=f"{settings.max_bulk_body_bytes:,} bytes",
            inline=f"{settings.inline_limit:,} records",
            retention=f"{settings.retention_s:,} seconds",
            open_requests=settings.max_open_requests_per_key,
            upload=f"{settings.max_upload_bytes:,} bytes",
            events=f"{settings.events_max_s:g} seconds",
        )


_NAME = _path("name", NAME_RE.pattern, "The model's name.")
_VERSION = _path("version", VERSION_RE.pattern, "A version of the model (semantic: major.minor.patch).")
_JOB_ID = _path("job_id", JOB_ID_PATTERN, "The job's id.")
_WEBHOOK_HEADERS = (
    _param(
        "Webhook-URL", "header", {"type": "string", "examples": ["https://example.com/hooks/infer"]},
        "A `text/csv` body's webhook (a JSON body's is its `webhook` field): where to POST the job, signed.",
        False,
    ),
    _param(
        "Webhook-Events", "header", {"type": "string", "examples": ["started,completed"]},
        "With `Webhook-URL`: the events to deliver, comma-separated, of `started`, `progress` and "
        "`completed` (the default).",
        False,
    ),
)  # fmt: skip
_PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "`wait=N`: the wait applied, when the request asked for one.",
        "schema": {"type": "string"},
    }
}
_LINKED = {
    "getJob": "Poll the job until it ends.",
    "cancelJob": "Cancel the job while it is queued or running.",
    "getJobOutputs": "Stream every output once the job has succeeded.",
}
_JOB_LINKS = {
    op: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}, "description": text}
    for op, text in _LINKED.items()
}

UNAUTHORIZED = "The API key is missing or wrong (`unauthorized`): send `Authorization: Bearer <key>`."
FORBIDDEN = "The API key is a user key and this route needs an admin key (`forbidden`)."
_UNKNOWN_MODEL = "No model of that name is published (`unknown_model`)."
_UNKNOWN_VERSION = "No model of that name (`unknown_model`), or it has no such version (`unknown_version`)."
_STORE_DOWN = "The job store cannot be reached (`unavailable`); nothing was changed."


def _open_requests(limits: Limits) -> str:
    return (
        f"This API key has {limits.open_requests} requests open at once in this API process "
        "(`rate_limited`), so this one was refused; retry after the seconds of `Retry-After`."
    )


def _unknown_job(limits: Limits) -> str:
    """Return what a 404 of a route on one job means."""
    return (
        "No job with this id exists for this API key (`unknown_job`): never created, another key's, "
        f"or ended more than {limits.retention} ago."
    )


def _job_operations(limits: Limits, prefer: dict[str, Any]) -> list[Op]:
    """Return the operations on one job, found by its id."""
    busy = _open_requests(limits)
    unknown_job = _unknown_job(limits)
    return [
        Op(
            "get", "/v1/jobs/{job_id}", "getJob", "jobs", "Poll a job, optionally waiting for it to end",
            params=(_JOB_ID, *_query(PollQuery), prefer),
            ok={
                200: json_answer(
                    "Job", "The job as it is now, or as it ended within the wait.",
                    headers=_PREFERENCE_APPLIED,
                    links={op: link for op, link in _JOB_LINKS.items() if op != "getJob"},
                )
            },
            errors={
                404: unknown_job,
                422: "`wait` is not a number of 0 seconds or more, or the query has another parameter "
                "(`invalid_input`).",
                429: busy,
                503: _STORE_DOWN,
            },
        ),
        Op(
            "post", "/v1/jobs/{job_id}/cancel", "cancelJob", "jobs", "Cancel a queued or running job",
            description="A running job stops at its next chunk.",
            params=(_JOB_ID,),
            ok={200: json_answer("Job", "The job, which has now ended as canceled.")},
            errors={
                404: unknown_job,
                409: "The job had already ended (`conflict`); `details` gives how.",
                429: busy,
                503: _STORE_DOWN,
            },
        ),
        Op(
            "get", "/v1/jobs/{job_id}/outputs", "getJobOutputs", "jobs", "Stream a succeeded job's outputs",
            description="Any number of outputs, in input order: NDJSON by default, or CSV with "
            "`Accept: text/csv` (a header row, then `label` and a `probability_<label>` column per label, "
            "or `value`).",
            params=(_JOB_ID,),
            ok={
                200: _text(
                    "application/x-ndjson", "text/csv",
                    description="Every output, one a line (NDJSON) or a row (CSV), in input order.",
                )
            },
            errors={
                404: unknown_job,
                409: "The job has not succeeded (`conflict`): it is queued or running, or it failed, was "
                "canceled or expired; `details` gives its status.",
                429: busy,
                503: _STORE_DOWN,
            },
        ),
        Op(
            "get", "/v1/jobs/{job_id}/events", "getJobEvents", "jobs", "Follow a job as Server-Sent Events",
            description="A `job` event (data: the Job without `outputs`) at once, then at every change of "
            "status or progress; the stream closes after the final one. Each event's `id` grows with the "
            f"job: send the last one seen as `Last-Event-ID` to resume. A stream open {limits.events} "
            "closes with a `retry:` hint (milliseconds) before the job has ended: open it again with "
            "`Last-Event-ID`. It counts as an open request of the key while it lasts.",
            params=(
                _JOB_ID,
                _param(
                    "Last-Event-ID", "header", {"type": "string", "examples": ["5000-1"]},
                    "The `id` of the last event received: only what came after it is sent.", False,
                ),
            ),
            ok={
                200: _event_stream(
                    "Events `job`, each a line `id: <done>-<stage>`, `event: job` and `data: "
                    "<Job as JSON, without outputs>`, then a blank line; comment lines keep it alive."
                ),
                204: {"description": "The `Last-Event-ID` was the job's final event: there is nothing more "
                      "to send, so a client stops coming back."},
            },
            errors={404: unknown_job, 429: busy, 503: _STORE_DOWN},
        ),
    ]  # fmt: skip


def _routing_operations(busy: str) -> list[Op]:
    """Return the operations that route a model's traffic among its versions, and retire a version."""
    routing = json_answer("ModelRouting", "The model's routing: each version's weight and the shadow.")
    return [
        Op(
            "get", "/v1/models/{name}/routing", "getRouting", "models", "Read a model's routing",
            description="Each version's integer share (of 100) of the jobs that name no version, and the "
            "shadow version. A model never routed sends all its traffic to its default version (then "
            "`updated_at` and `updated_by` are null).",
            params=(_NAME,), ok={200: routing}, errors={404: _UNKNOWN_MODEL, 429: busy, 503: _STORE_DOWN},
        ),
        Op(
            "put", "/v1/models/{name}/routing", "putRouting", "models", "Route a model's traffic (admin)",
            description="Sets the weights (integers summing to 100) and the shadow version; every API "
            "process follows it for new jobs within one second. A job that names its version bypasses "
            "routing; the version with the largest weight becomes the model's default. Rolling back is a "
            "PUT. A shadow version also predicts `sample` of the routed jobs (those of at most one chunk "
            "sent as JSON); its outputs are only compared with the served ones (`GET .../shadow`).",
            params=(_NAME,), admin=True,
            body={"required": True, "content": {"application/json": {"schema": _ref("RoutingChange")}}},
            ok={200: routing},
            errors={
                400: "The body is not valid JSON (`invalid_json`).",
                404: _UNKNOWN_MODEL,
                409: "Another change of this model's routing or versions is under way (`conflict`); "
                "try again shortly.",
                413: "The body is over 65,536 bytes (`payload_too_large`).",
                415: "The body is not `application/json` (`unsupported_media_type`).",
                422: "The weights are not integers summing to 100, or a version named is not published "
                "(`invalid_input`): `details` names each.",
                429: busy,
                503: _STORE_DOWN,
            },
        ),
        Op(
            "get", "/v1/models/{name}/shadow", "getShadow", "models", "Compare the shadow version",
            description="How the shadow version's outputs agree with the served ones over the records it "
            "predicted since it started shadowing: same label (classification) or a value within 1e-6 "
            "relative (regression); `mean_abs_diff` is the mean largest probability difference or the "
            "mean value difference. Without a shadow, `version` is null.",
            params=(_NAME,),
            ok={200: json_answer("ShadowReport", "The shadow version's comparisons so far.")},
            errors={404: _UNKNOWN_MODEL, 429: busy, 503: _STORE_DOWN},
        ),
        Op(
            "delete", "/v1/models/{name}/versions/{version}", "retireVersion", "models",
            "Retire a model version (admin)",
            description="The version is unlisted at once and its files deleted; workers free its memory. "
            "Jobs naming it are then refused, and any still queued for it fail.",
            params=(_NAME, _VERSION), admin=True,
            ok={204: {"description": "Retired: the version is no longer published."}},
            errors={
                404: _UNKNOWN_VERSION,
                409: "The version is routed (a weight above 0, or the shadow) or is the model's default "
                "(`conflict`): route its traffic elsewhere first; or another change of this model's "
                "routing or versions is under way.",
                429: busy,
                503: _STORE_DOWN,
            },
        ),
    ]  # fmt: skip


def _webhook_operations(limits: Limits, busy: str) -> list[Op]:
    """Return the operations of webhooks: the key's signing secret and a job's deliveries."""
    unknown_job = _unknown_job(limits)
    return [
        Op(
            "get", "/v1/webhooks/secret", "getWebhookSecret", "webhooks", "Read this key's webhook secret",
            description="Deliveries are signed as Standard Webhooks signs: `webhook-signature` is `v1,` then "
            "the base64 HMAC-SHA256, under the secret's base64-decoded key, of `{webhook-id}.{webhook-"
            "timestamp}.{body}`. The secret is the same on every call and every API process.",
            ok={200: json_answer("WebhookSecret", "The secret this key's deliveries are signed with.")},
            errors={404: "This deployment sends no webhooks (`not_found`): its operator must set "
                    "INFER_WEBHOOK_SECRET.", 429: busy},
        ),
        Op(
            "get", "/v1/jobs/{job_id}/deliveries", "getJobDeliveries", "webhooks",
            "List a job's webhook deliveries and their attempts",
            description="One delivery per event the job's webhook asked for, oldest first, each with every "
            "attempt: the receiver's status or why none came. A failed delivery is tried again with "
            "backoff until it has been tried for the retry period, then `failed`.",
            params=(_JOB_ID,),
            ok={200: json_answer("DeliveryList", "The job's deliveries, oldest first.")},
            errors={404: unknown_job, 429: busy, 503: _STORE_DOWN},
        ),
    ]  # fmt: skip


def _watch_operations(limits: Limits, busy: str) -> list[Op]:
    """Return the operations that watch what a model's versions serve: drift and the prediction log."""
    return [
        Op(
            "get", "/v1/models/{name}/versions/{version}/drift", "getDrift", "watching",
            "Compare a version's served records with its reference (admin)",
            description="Every record a version serves is counted in the bins of the reference frozen "
            "when it was published (ten quantile bins a feature; a text's length and its tokens outside "
            "the vocabulary; the predictions' labels or value bins), by the minute, kept a day. For each "
            "feature: PSI (an empty bin's share taken as 0.0001) and KS (the largest gap of the binned "
            "cumulative shares). A feature drifts when PSI >= 0.2 or KS >= 0.1, each threshold raised when "
            "few records leave room for noise (1% false alarms); the dataset drifts when half the features "
            "do. A version published without reference rows answers no features and a `note`.",
            params=(_NAME, _VERSION, *_query(DriftQuery)), admin=True,
            ok={200: json_answer("DriftReport", "The version's drift over the window.")},
            errors={
                404: _UNKNOWN_VERSION,
                422: "`window_s` is not a whole number of 60 to 86400 seconds, or the query has another "
                "parameter (`invalid_input`).",
                429: busy,
                503: _STORE_DOWN,
            },
        ),
        Op(
            "get", "/v1/models/{name}/predictions", "listPredictions", "watching",
            "Read a model's prediction log, newest first (admin)",
            description="A sample of the records its versions served (the share INFER_PREDICTION_LOG_RATE) "
            "and every job a worker ended failed, at most INFER_PREDICTION_LOG_MAX entries a model, the "
            "oldest dropped. Each line is a `PredictionLogEntry`; `key` is the key id, never the key. A full "
            "page has a `Next-Cursor` header: pass it as `cursor` for older entries.",
            params=(_NAME, *_query(PredictionLogQuery)), admin=True,
            ok={
                200: {
                    **_text("application/x-ndjson", description="An entry a line, newest first."),
                    "headers": {"Next-Cursor": {"description": "The `cursor` of the next page, when this "
                                                "one is full.", "schema": {"type": "string"}}},
                }
            },
            errors={
                404: _UNKNOWN_MODEL,
                422: f"`limit` is not 1 to {MAX_LOG_LIMIT}, `cursor` is not an entry's id, or the query has "
                "another parameter (`invalid_input`).",
                429: busy,
                503: _STORE_DOWN,
            },
        ),
    ]  # fmt: skip


def _publish_operation(limits: Limits, busy: str) -> Op:
    """Return the operation that publishes a new version of a model (or a new model)."""
    parts = {"artifact": "application/octet-stream", "metadata": "application/json", "reference": "text/csv"}
    return Op(
        "post", "/v1/models/{name}/versions", "publishVersion", "models", "Publish a model version (admin)",
        description="Uploads a model version as `multipart/form-data` (at most "
        f"{limits.upload}). Publishing is a job, polled like any other: a worker loads the artifact with "
        "trusted types only, checks it against the metadata, predicts on the reference rows, converts it "
        "to ONNX when the two agree within 1e-4, freezes the reference statistics and writes the "
        "manifest. The job ends `succeeded` (its one output names the version, runtime and sha256; the "
        "version is then listed) or `failed` with `invalid_model` and the reason. A new version gets "
        "no traffic until routing sends it some or a job names it; a new model's first version is its "
        "default.",
        params=(_NAME,), admin=True,
        body={
            "required": True,
            "description": "The parts `artifact`, `metadata` and optionally `reference`, in at most "
            f"{limits.upload}.",
            "content": {
                "multipart/form-data": {
                    "schema": _ref("PublishUpload"),
                    "encoding": {part: {"contentType": media} for part, media in parts.items()},
                }
            },
        },
        ok={
            202: json_answer(
                "Job", "Accepted: the publish job (`kind` `publish`) is queued. Poll it at `Location` until "
                "its status is final.",
                headers={"Location": {"description": "The job's path.", "required": True,
                                      "schema": {"type": "string"}}},
                links=_JOB_LINKS,
            )
        },
        errors={
            400: "The multipart body is malformed or has no boundary (`invalid_json`).",
            409: "The model already has this version, or another upload of it is being published "
            "(`conflict`).",
            413: f"The upload is over {limits.upload}, or its metadata part over 64 KiB "
            "(`payload_too_large`); it is refused without being read to its end.",
            415: "The body is not `multipart/form-data` (`unsupported_media_type`).",
            422: "The model name, a metadata field, the artifact's file type (a joblib/pickle file needs "
            "`allow_pickle`), a missing part or the reference CSV's header is not valid (`invalid_input`): "
            "`details` names each.",
            429: busy,
            503: _STORE_DOWN,
        },
    )  # fmt: skip


def operations(settings: Settings) -> list[Op]:
    """Return every operation of the API, with the meaning of each status it answers."""
    limits = Limits.of(settings)
    busy = _open_requests(limits)
    prefer = _param(
        "Prefer", "header", {"type": "string", "examples": ["wait=10"]},
        f"`wait=N`: hold the answer up to N seconds (at most {limits.wait}) for the job to end; the "
        "answer then carries `Preference-Applied`.",
        False,
    )  # fmt: skip
    idempotency = _param(
        "Idempotency-Key", "header", {"type": "string"},
        f"The same key with the same body within the retention ({limits.retention}) returns the job it "
        "created, never a second one.",
        False,
    )  # fmt: skip
    return [
        Op(
            "get", "/v1/models", "listModels", "models", "List the published models",
            ok={200: json_answer("ModelList", "Every published model with its default version.")},
            errors={429: busy},
        ),
        Op(
            "get", "/v1/models/{name}", "getModel", "models", "Describe a model's default version",
            params=(_NAME,),
            ok={200: json_answer("Model", "The default version: its schemas, labels and digest.")},
            errors={404: _UNKNOWN_MODEL, 429: busy},
        ),
        Op(
            "get", "/v1/models/{name}/versions/{version}", "getModelVersion", "models",
            "Describe one version of a model",
            params=(_NAME, _VERSION),
            ok={200: json_answer("Model", "That version: its schemas, labels and digest.")},
            errors={404: _UNKNOWN_VERSION, 429: busy},
        ),
        _publish_operation(limits, busy),
        *_routing_operations(busy),
        *_watch_operations(limits, busy),
        Op(
            "post", "/v1/models/{name}/jobs", "submitJob", "jobs", "Submit a prediction job",
            description="Checks every record against the model's input schema, then queues the job. A JSON "
            f"body holds at most {limits.records}; a `text/csv` body (a header row of feature names, then "
            f"one record a row) is a bulk job of up to {limits.records} in at most {limits.bulk_body}. "
            "Either may be sent with `Content-Encoding: gzip` (the limit holds as sent and once inflated).",
            params=(_NAME, prefer, idempotency, *_WEBHOOK_HEADERS),
            body={
                "required": True,
                "description": f"The records to predict: JSON in at most {limits.body}, CSV in at most "
                f"{limits.bulk_body}.",
                "content": {
                    "application/json": {"schema": _ref("SubmitBody")},
                    "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
                },
            },
            ok={
                202: json_answer(
                    "Job", "Accepted: the job is queued. Poll it at `Location` (or follow the links) until "
                    "its status is final.",
                    headers={
                        "Location": {"description": "The job's path.", "required": True,
                                     "schema": {"type": "string"}},
                        **_PREFERENCE_APPLIED,
                    },
                    links=_JOB_LINKS,
                ),
                200: json_answer(
                    "Job", "The job ended within the wait asked for with `Prefer: wait=N`.",
                    headers=_PREFERENCE_APPLIED, links=_JOB_LINKS,
                ),
            },
            errors={
                400: "The body is not valid JSON, the CSV is not UTF-8, or a gzip body is corrupt or cut "
                "short (`invalid_json`).",
                404: _UNKNOWN_VERSION,
                409: "This Idempotency-Key was sent before with another body (`conflict`).",
                413: f"The body is over its limit ({limits.body} for JSON, {limits.bulk_body} for CSV), "
                "as sent or once inflated (`payload_too_large`); a declared `Content-Length` over it is "
                "refused before it is read.",
                415: "The body is neither `application/json` nor `text/csv`, or its `Content-Encoding` is "
                "neither gzip nor none (`unsupported_media_type`).",
                422: "A record does not match the model's input schema, or the body is not a submission "
                "(`invalid_input`): `details` names each bad record's index, field and reason. A webhook "
                "whose URL is not http(s) or reaches a loopback, private or link-local address (unless the "
                "operator allows it), or a webhook on a deployment without webhooks, names `webhook.url` "
                "(or the `Webhook-URL` header).",
                429: "The model's queue is full or the job store nearly so (`queue_full`), or this key has "
                "reached its rate, unfinished jobs, stored bytes or open requests (`rate_limited` or "
                "`queue_full`); nothing was accepted. Retry after the seconds of `Retry-After`.",
                503: "The job store or broker cannot be reached (`unavailable`); nothing was accepted, "
                "unless `details` names a job id that may have been (look it up before sending again).",
            },
        ),
        Op(
            "get", "/v1/jobs", "listJobs", "jobs", "List this key's jobs, newest first",
            params=_query(ListQuery),
            ok={200: json_answer("JobList", "A page of jobs; `next_cursor` leads to the next.")},
            errors={
                422: f"A query parameter is unknown or out of range (`invalid_input`): `limit` is 1 to "
                f"{MAX_LIST_LIMIT}, `cursor` a `next_cursor`, `status` a job status.",
                429: busy,
                503: _STORE_DOWN,
            },
        ),
        *_job_operations(limits, prefer),
        *_webhook_operations(limits, busy),
        Op(
            "get", "/healthz", "healthz", "operations", "Liveness",
            public=True, ok={200: json_answer("Health", "The process is up and serves requests.")}, errors={},
        ),
        Op(
            "get", "/readyz", "readyz", "operations", "Readiness: Redis answers and a worker consumes",
            public=True,
            ok={200: json_answer("Readiness", "Ready: Redis answers and a worker consumes the jobs' queue.")},
            errors={
                503: "Not ready (`unavailable`): Redis does not answer, or no worker consumes the jobs' "
                "queue; the message says which."
            },
        ),
        Op(
            "get", "/metrics", "metrics", "operations", "Prometheus metrics",
            public=True,
            ok={200: _text("text/plain", description="The metrics in Prometheus's text exposition format.")},
            errors={},
        ),
    ]  # fmt: skip


TAGS = {
    "models": "What is published, and each version's schemas.",
    "jobs": "Submit, poll, cancel and list prediction jobs; read their outputs.",
    "operations": "Liveness, readiness and metrics, without a key.",
    "watching": "What the versions serve, for admins: drift against the reference and the prediction log.",
    "webhooks": "Signed deliveries of a job's events to a URL: the key's secret and each job's attempts.",
}

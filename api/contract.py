"""The bodies of the HTTP contract as pydantic models, from which the OpenAPI document is made.

Routes build plain dicts on the hot path (api/views.py); a unit test validates every one of them
against these models, so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema

from api.routes.jobs import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
from shared.drift import BUCKET_S, KEEP_S
from shared.errors import ErrorCode
from shared.publishing import PublishMetadata
from shared.registry import NAME_RE
from shared.routing import Shadow
from shared.store import JobStatus

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
MAX_LOG_LIMIT = 1_000
# Where the OpenAPI document keeps the models' schemas.
REF = "#/components/schemas/{model}"


class ContractSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema without property titles (generators name types by them), keys as written."""

    def field_title_should_be_set(self, schema: CoreSchema | Any) -> bool:
        """Give no property a title of its own."""
        return False

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        """Keep every key where it was written, so examples read in the models' feature order."""
        return value


def _open_to_additions(schema: dict[str, Any]) -> None:
    """Leave additionalProperties out of a response body's schema, since the contract lets fields be added."""
    schema.pop("additionalProperties", None)


class Answer(BaseModel):
    """Base of the response bodies: exact on what the server sends today, open to fields added later."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_open_to_additions)


class Progress(Answer):
    """How many of a job's records have been predicted."""

    done: int = Field(ge=0, description="Records predicted so far.")
    total: int = Field(ge=0, description="Records in the job.")


class JobError(Answer):
    """Why a job failed, was canceled or expired."""

    code: str = Field(
        description="A stable code: `canceled`, `expired`, `lost`, `prediction_failed`, `model_unavailable`, "
        "`invalid_model` (a publish job's upload was refused)…",
        examples=["canceled"],
    )
    message: str = Field(description="One plain sentence.")


class JobMetrics(Answer):
    """Where a job's time went, in milliseconds; null until the step happened."""

    queue_ms: float | None = Field(description="From submission to the start of prediction.")
    predict_ms: float | None = Field(description="Time the workers spent predicting.")
    total_ms: float | None = Field(description="From submission to the end.")


class JobUrls(Answer):
    """The paths of a job's routes."""

    get: str = Field(description="Poll the job.", examples=["/v1/jobs/0190f1c2a3b4c5d6e7f8a9b0c1d2e3f4"])
    cancel: str = Field(description="Cancel the job.")
    outputs: str = Field(description="Stream all outputs of the succeeded job.")


class ClassificationOutput(Answer):
    """A classifier's answer to one record: the label and each label's probability."""

    label: str
    probabilities: dict[str, float]


class RegressionOutput(Answer):
    """A regressor's answer to one record."""

    value: float


class PublishOutput(Answer):
    """What a succeeded publish job published: the version, the runtime serving it and its digest."""

    name: str = Field(pattern=NAME_RE.pattern, examples=["iris"])
    version: str = Field(examples=["1.1.0"])
    runtime: Literal["onnx", "sklearn"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Digest of the artifact the workers serve.")


class Job(Answer):
    """A job: its state, progress, timings and, once succeeded and small, its outputs.

    A publish job's one output says what was published: name, version, runtime and sha256.
    """

    id: str = Field(pattern=JOB_ID_PATTERN, description="The job's id; ids sort by creation time.")
    kind: Literal["predict", "publish"] = Field(
        description="`predict`: records predicted by a model version; `publish`: a model version published."
    )
    model: str = Field(description="The model's name.", examples=["iris"])
    version: str = Field(description="The model version that serves the job.", examples=["1.0.0"])
    status: JobStatus = Field(description="Queued and running jobs change; the other statuses are final.")
    created_at: datetime = Field(description="When the job was accepted (RFC 3339, UTC).")
    started_at: datetime | None = Field(description="When prediction started.")
    completed_at: datetime | None = Field(description="When the job ended.")
    progress: Progress
    outputs: list[ClassificationOutput | RegressionOutput | PublishOutput] | None = Field(
        description="One output per input record, in input order: only when the job succeeded and has at "
        "most the inline limit of records; otherwise null (stream them from urls.outputs). A publish job "
        "has one output, the version it published."
    )
    error: JobError | None = Field(description="Why the job failed, was canceled or expired; else null.")
    metrics: JobMetrics
    urls: JobUrls


class JobList(Answer):
    """A page of this key's jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(
        pattern=JOB_ID_PATTERN, description="Pass as `cursor` for the next page; null on the last page."
    )


class ModelSummary(Answer):
    """A published model and its default version, as GET /v1/models lists it."""

    name: str = Field(pattern=NAME_RE.pattern, examples=["iris"])
    version: str = Field(description="The default version.", examples=["1.0.0"])
    versions: list[str] = Field(description="Every published version, oldest first.")
    description: str
    task: Literal["classification", "regression"]
    runtime: Literal["onnx", "sklearn"] = Field(description="What the workers serve the model with.")


class Model(ModelSummary):
    """One version of a model: what a record must look like and what each output will."""

    features: list[str] = Field(description="The feature names, in the order an array record gives them.")
    input_schema: dict[str, Any] = Field(description="JSON Schema of one record (an object).")
    output_schema: dict[str, Any] = Field(description="JSON Schema of one output.")
    labels: list[str] | None = Field(description="A classifier's classes, in order; null for a regressor.")
    deterministic: bool = Field(description="Whether the same record always gets the same output.")
    created_at: datetime = Field(description="When the version was published (RFC 3339, UTC).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Digest of the artifact the workers serve.")
    artifact_format: Literal["onnx", "skops", "joblib"]
    metrics: dict[str, Any] = Field(description="Figures measured when the version was published.")


class ModelList(Answer):
    """Every published model."""

    models: list[ModelSummary]


class ErrorDetail(Answer):
    """One thing wrong with a request: where (record index, field) and why."""

    index: int | None = Field(default=None, description="The record's index (a CSV body's data row).")
    field: str | None = Field(description="The field, feature, parameter or header at fault.")
    reason: str


class ErrorInfo(Answer):
    """What went wrong, in a stable code and one plain sentence."""

    code: ErrorCode
    message: str
    details: list[ErrorDetail]


class Error(Answer):
    """The body of every error answer, from every route."""

    error: ErrorInfo


class Health(Answer):
    """The liveness answer."""

    status: Literal["ok"]


class Readiness(Answer):
    """The readiness answer: Redis answers and workers consume the jobs' queue."""

    status: Literal["ready"]
    workers: int = Field(ge=1, description="Workers consuming the jobs' queue.")


class ModelRouting(Answer):
    """A model's routing: each version's share of the jobs that name none, and the shadow version."""

    routes: dict[str, int] = Field(
        description="Integer weights by version, summing to 100.", examples=[{"1.0.0": 90, "1.1.0": 10}]
    )
    shadow: Shadow | None = Field(description="The version that also predicts a sample of routed jobs.")
    updated_at: datetime | None = Field(description="When an admin set it; null for a model never routed.")
    updated_by: str | None = Field(description="The key id (owner) of the admin key that set it, or null.")


class ShadowReport(Answer):
    """How the shadow version's outputs compare with the served ones."""

    version: str | None = Field(description="The shadow version; null when the model has none.")
    compared: int = Field(ge=0, description="Records the shadow version predicted and compared.")
    agreement: float | None = Field(
        ge=0, le=1, description="Share of them whose outputs agree; null before the first."
    )
    mean_abs_diff: float | None = Field(
        ge=0, description="Mean absolute difference (largest probability's, or value's); null before."
    )


class WebhookSecret(Answer):
    """The secret this key's webhook deliveries are signed with, as Standard Webhooks writes it."""

    secret: str = Field(pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$", description="`whsec_` then the base64 key.")


class DeliveryAttempt(Answer):
    """One try at a webhook delivery."""

    at: datetime = Field(description="When the attempt started.")
    status: int | None = Field(description="The receiver's HTTP status; null when none came.")
    error: str | None = Field(description="Why no answer came (refused, timed out, no connection), or null.")
    duration_ms: float = Field(ge=0, description="How long the attempt took.")


class Delivery(Answer):
    """One webhook delivery of a job: an event, where it goes, and every attempt so far."""

    id: str = Field(description="The `webhook-id` header it is sent with, the same on every attempt.")
    event: Literal["started", "progress", "completed"]
    url: str
    state: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: not yet taken (retried with backoff); `delivered`: a 2xx answer came; "
        "`failed`: given up after the retry period."
    )
    attempts: list[DeliveryAttempt]
    next_attempt_at: datetime | None = Field(description="When a pending delivery is tried next; else null.")


class DeliveryList(Answer):
    """A job's webhook deliveries, oldest first."""

    deliveries: list[Delivery]


class DriftFeature(Answer):
    """One feature's served values against the reference, over the window's records."""

    name: str = Field(
        description="The feature; a text model's are `text.length` and `text.out_of_vocabulary`.",
        examples=["petal_length"],
    )
    psi: float | None = Field(
        ge=0, description="Population stability index over the reference's bins; null without records."
    )
    ks: float | None = Field(
        ge=0,
        le=1,
        description="Largest gap of the binned cumulative shares (Kolmogorov-Smirnov); null without.",
    )
    drift: bool = Field(description="Whether psi or ks reached its threshold.")
    psi_threshold: float | None = Field(
        description="0.2, or more when few records leave room for noise (1% false alarms)."
    )
    ks_threshold: float | None = Field(
        description="0.1, or the KS test's critical value at 1% when it is larger (few records)."
    )


class PredictionDrift(Answer):
    """The predictions' shares (labels, or bins of values) against the reference's."""

    psi: float | None = Field(ge=0, description="Population stability index; null without records.")
    drift: bool = Field(description="Whether psi reached its threshold (as a feature's).")
    reference: dict[str, float] = Field(description="Share of each label (or bin) on the reference rows.")
    current: dict[str, float] = Field(description="Share of each label (or bin) in the window.")


class DriftReport(Answer):
    """How a version's served records and predictions in a window compare with its reference."""

    model: str = Field(examples=["iris"])
    version: str = Field(examples=["1.0.0"])
    window_s: int = Field(
        description="The window, in seconds up to now (whole minutes, the current one too)."
    )
    reference_rows: int = Field(ge=0, description="Rows the reference statistics were frozen from.")
    current_rows: int = Field(ge=0, description="Records of this version served in the window.")
    features: list[DriftFeature]
    prediction: PredictionDrift | None = Field(description="Null for a version without a reference.")
    drifted_share: float | None = Field(
        ge=0, le=1, description="Share of the features that drift; null without records or reference."
    )
    dataset_drift: bool = Field(description="Whether at least half of the features drift.")
    note: str | None = Field(description="Why there is nothing to compare, when there is not; else null.")


class PredictionLogEntry(Answer):
    """One line of the prediction log: a sampled served record, or a job that failed."""

    id: str = Field(pattern=r"^\d+-\d+$", description="The entry's id; pass it as `cursor` for older ones.")
    job: str = Field(pattern=JOB_ID_PATTERN)
    version: str = Field(examples=["1.0.0"])
    at: datetime = Field(description="When the record's output (or the failure) was recorded.")
    key: str = Field(description="The key id (owner) of the job's API key, never the key.")
    input: dict[str, Any] | None = Field(description="The record by feature name; null when not known.")
    output: ClassificationOutput | RegressionOutput | None = Field(
        description="Its output; null for a failure."
    )
    latency_ms: float = Field(ge=0, description="From the job's submission to this entry.")
    error: JobError | None = Field(description="Why the job failed; null for a served record.")


def _reference_is_a_file(schema: dict[str, Any]) -> None:
    """Give the optional reference part a file's schema, not a null branch generators cannot send."""
    schema["properties"]["reference"] = {
        "type": "string",
        "format": "binary",
        "description": "A CSV of rows like the training data, header = the feature names: the reference for "
        "drift and the rows the ONNX conversion is checked on.",
    }


class PublishUpload(BaseModel):
    """The parts of a publish upload (multipart/form-data): the artifact, its metadata and reference rows."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_reference_is_a_file)

    artifact: bytes = Field(
        description="The model: a `.skops` or `.onnx` file, or `.joblib`/`.pkl` only with `allow_pickle` "
        "(loading it runs code). The file name's extension says which."
    )
    metadata: PublishMetadata
    reference: bytes | None = None


class ListQuery(BaseModel):
    """The query of GET /v1/jobs."""

    status: JobStatus | None = Field(default=None, description="Only jobs in this status.")
    model: str | None = Field(default=None, description="Only jobs of this model.")
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT, description="Jobs on a page.")
    cursor: str | None = Field(
        default=None, pattern=JOB_ID_PATTERN, description="The `next_cursor` of the previous page."
    )


class DriftQuery(BaseModel):
    """The query of GET /v1/models/{name}/versions/{version}/drift."""

    model_config = ConfigDict(extra="forbid")

    window_s: int = Field(
        default=3_600, ge=BUCKET_S, le=KEEP_S, description="Compare the records served in this many seconds."
    )


class PredictionLogQuery(BaseModel):
    """The query of GET /v1/models/{name}/predictions."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=MAX_LOG_LIMIT, description="Entries on a page.")
    cursor: str | None = Field(
        default=None,
        pattern=r"^\d{1,20}-\d{1,20}$",
        description="The `id` of the last entry of the previous page (its `Next-Cursor` header).",
    )


class PollQuery(BaseModel):
    """The query of GET /v1/jobs/{job_id}."""

    wait: float | None = Field(
        default=None, ge=0, description="Hold the answer up to this many seconds for the job to end."
    )


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Job, JobList, Model, ModelList, ModelRouting, ShadowReport, Error, Health, Readiness,
    WebhookSecret, DeliveryList, DriftReport, PredictionLogEntry,
)  # fmt: skip

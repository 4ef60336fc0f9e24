"""What publishing a model version needs on both sides: the upload's metadata, its files and its lock.

The API checks the metadata and keeps the upload under the job's id; the worker reads both back.
``publishing:{name}:{version}`` holds the id of the job publishing that version until the job ends,
so two uploads of one version never race.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import InvalidInput
from shared.registry import VERSION_RE

# The files of an upload, as kept under uploads/{job_id}/: the artifact keeps its extension.
ARTIFACT = "artifact"
METADATA = "metadata.json"
REFERENCE = "reference.csv"
SAFE_EXTENSIONS = (".skops", ".onnx")
# Loading these runs code, so they are taken only when the metadata says allow_pickle.
PICKLE_EXTENSIONS = (".joblib", ".pkl")
FEATURE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
MAX_FEATURES = 10_000
MAX_METADATA_BYTES = 64 * 1024
# Releases the lock only when it is still the given job's: a lock that expired and was taken by
# another upload is left alone.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Takes the lock over from the job named, if it still holds it.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 0
"""


class Feature(BaseModel):
    """One input feature: its name and the JSON type of its values."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=FEATURE_RE.pattern, description="A CSV header's name.")]
    type: Literal["number", "integer", "string"] = "number"


class PublishMetadata(BaseModel):
    """The metadata part of a publish upload: which version, what it does, what it takes."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_RE.pattern, description="Semantic: major.minor.patch.")
    description: str = Field(default="", max_length=2_000)
    task: Literal["classification", "regression"]
    features: list[Feature] = Field(min_length=1, max_length=MAX_FEATURES, description="In input order.")
    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, description="The classes in the order of the estimator's classes_."
    )
    allow_pickle: bool = Field(default=False, description="Take a joblib/pickle file, which runs code.")

    @model_validator(mode="after")
    def _consistent(self) -> PublishMetadata:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        texts = [f for f in self.features if f.type == "string"]
        if texts and (len(self.features) != 1 or names != ["text"]):
            raise ValueError("a string feature must be the only one and be named 'text' (a text model)")
        if self.labels is not None:
            if self.task == "regression":
                raise ValueError("labels are for a classifier; a regressor has none")
            if len(set(self.labels)) != len(self.labels) or len(self.labels) < 2:
                raise ValueError("labels must be two or more distinct names")
        return self

    @property
    def names(self) -> list[str]:
        """Return the feature names in input order."""
        return [f.name for f in self.features]

    @property
    def is_text(self) -> bool:
        """Tell whether a record is one free-text field."""
        return self.names == ["text"] and self.features[0].type == "string"


def parse_metadata(raw: bytes) -> PublishMetadata:
    """Return the metadata of an upload, or raise InvalidInput naming each bad field."""
    try:
        return PublishMetadata.model_validate_json(raw)
    except ValidationError as exc:
        details = [
            {"field": ".".join(["metadata", *(str(p) for p in err["loc"])]), "reason": err["msg"]}
            for err in exc.errors()[:20]
        ]
        raise InvalidInput(
            "The metadata part is not valid: fix the fields named in details and upload again.", details
        ) from None


def artifact_extension(filename: str, allow_pickle: bool | None) -> str:
    """Return the artifact's extension, or raise InvalidInput when it is not one that may be published.

    allow_pickle None means the metadata is not read yet: a pickle's extension passes for now.
    """
    extension = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension in SAFE_EXTENSIONS or (extension in PICKLE_EXTENSIONS and allow_pickle is not False):
        return extension
    if extension in PICKLE_EXTENSIONS:
        reason = "loading a joblib/pickle file runs code: set allow_pickle true in the metadata to take it"
    else:
        found = extension or "no extension"
        reason = f"{found}: send a .skops or .onnx file (or .joblib/.pkl with allow_pickle)"
    raise InvalidInput(
        "The artifact is not a file type that may be published.", [{"field": "artifact", "reason": reason}]
    )


def lock_key(name: str, version: str) -> str:
    """Return the Redis key that holds the job publishing a model version."""
    return f"publishing:{name}:{version}"


def take_lock(
    client: redis.Redis, name: str, version: str, job_id: str, ttl_s: int, stale: Callable[[str], bool]
) -> bool:
    """Hold the version's publishing lock for the job; False while another job holds it.

    stale(holder) tells whether the holding job can no longer let go (it ended, or was never written
    because its API process died): such a lock is taken over.
    """
    key = lock_key(name, version)
    if client.set(key, job_id, nx=True, ex=ttl_s):
        return True
    holder = client.get(key)
    if holder is None:  # let go of in between
        return bool(client.set(key, job_id, nx=True, ex=ttl_s))
    return stale(str(holder)) and bool(client.eval(_TAKE_OVER, 1, key, str(holder), job_id, ttl_s))


def release_lock(client: redis.Redis, name: str, version: str, job_id: str) -> None:
    """Let go of the version's publishing lock if the job still holds it."""
    client.eval(_RELEASE, 1, lock_key(name, version), job_id)

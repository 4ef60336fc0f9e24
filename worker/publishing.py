"""Publishing a model version: load with trusted types only, check, convert, freeze the reference.

The publish task (an upload over HTTP) and the example models (models/train.py) go through the same
steps. A refusal raises InvalidModel with the reason; the registry writes the manifest last, so a
refused or broken publication is never listed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import skops.io as sio

from shared.errors import Conflict, InvalidModel, NotFound, ServiceError
from shared.publishing import ARTIFACT, METADATA, REFERENCE, Feature, PublishMetadata
from shared.registry import MANIFEST, SKOPS_TRUSTED_TYPES, Manifest, Registry, file_sha256
from worker.conversion import brief, check_onnx, convert_to_onnx, sklearn_scores
from worker.reference import FLOAT32_MAX, REFERENCE_JSON, Rows, read_rows, statistics

log = logging.getLogger(__name__)
Format = Literal["onnx", "skops", "joblib"]
Task = Literal["classification", "regression"]
FORMATS: dict[str, Format] = {".skops": "skops", ".onnx": "onnx", ".joblib": "joblib", ".pkl": "joblib"}
TEXT_LIMIT = 20_000


@dataclass(frozen=True)
class Candidate:
    """An artifact about to be published: its file, its format and the estimator it holds (None for ONNX)."""

    path: Path
    format: Format
    estimator: Any | None


def input_schema(metadata: PublishMetadata) -> dict[str, Any]:
    """Return the JSON Schema of one record with the metadata's named, typed features."""

    def field(feature: Feature) -> dict[str, Any]:
        if feature.type == "string":
            return {"type": "string", "minLength": 1, "maxLength": TEXT_LIMIT}
        return {"type": feature.type, "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}

    return {
        "type": "object",
        "properties": {feature.name: field(feature) for feature in metadata.features},
        "required": metadata.names,
        "additionalProperties": False,
    }


def output_schema(task: str, labels: list[str] | None) -> dict[str, Any]:
    """Return the JSON Schema of one output of a model of this task."""
    if task == "regression":
        return {"type": "object", "properties": {"value": {"type": "number"}}, "required": ["value"]}
    names = labels or []
    return {
        "type": "object",
        "properties": {
            "label": {"enum": names},
            "probabilities": {
                "type": "object",
                "properties": {n: {"type": "number", "minimum": 0, "maximum": 1} for n in names},
                "required": names,
            },
        },
        "required": ["label", "probabilities"],
    }


def load_artifact(path: Path, allow_pickle: bool) -> Candidate:
    """Load an uploaded artifact with trusted types only (joblib only when allowed), or raise InvalidModel."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidModel(
            f"A {path.suffix or 'file without extension'} file cannot be published; send .skops or .onnx."
        )
    if fmt == "onnx":
        return Candidate(path, fmt, None)
    if fmt == "joblib":
        if not allow_pickle:
            raise InvalidModel(
                "Loading a joblib/pickle file runs code: publish it with allow_pickle true, or as .skops."
            )
        try:
            # allow_pickle says the publisher vouches for this file: loading it runs its code.
            return Candidate(path, fmt, joblib.load(path))
        except Exception as exc:  # a corrupt pickle raises whatever its bytes make it raise
            raise InvalidModel(
                f"The joblib file cannot be loaded ({brief(exc)}): it is corrupt or not a model."
            ) from None
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip, no schema: whatever skops finds wrong with the bytes
        raise InvalidModel(
            f"The skops file cannot be read ({brief(exc)}): it is corrupt or not a skops file."
        ) from None
    refused = sorted(set(untrusted) - SKOPS_TRUSTED_TYPES)
    if refused:
        raise InvalidModel(
            f"The skops file holds types that are not trusted ({', '.join(refused[:5])}): publish an "
            "estimator made of scikit-learn's own types, or a joblib file with allow_pickle."
        )
    try:
        return Candidate(path, fmt, sio.load(path, trusted=untrusted))
    except Exception as exc:  # trusted types, yet the file does not make an object
        raise InvalidModel(f"The skops file cannot be loaded ({brief(exc)}): it is corrupt.") from None


def check_estimator(estimator: Any, metadata: PublishMetadata) -> list[str] | None:
    """Return a classifier's labels once the estimator agrees with the metadata, or raise InvalidModel."""
    if not callable(getattr(estimator, "predict", None)):
        raise InvalidModel(f"The artifact holds a {type(estimator).__name__}, not an estimator with predict.")
    expected = getattr(estimator, "n_features_in_", None)
    if isinstance(expected, int | np.integer) and int(expected) != len(metadata.features):
        raise InvalidModel(
            f"The model takes {int(expected)} features but the metadata names {len(metadata.features)}."
        )
    classes = getattr(estimator, "classes_", None)
    if metadata.task == "regression":
        if classes is not None:
            raise InvalidModel(
                "The metadata says regression but the model is a classifier (it has classes_)."
            )
        return None
    if classes is None or not callable(getattr(estimator, "predict_proba", None)):
        raise InvalidModel(
            "The metadata says classification but the model has no classes_ and predict_proba."
        )
    labels = [str(c) for c in classes]
    if metadata.labels is not None and metadata.labels != labels:
        raise InvalidModel(
            f"The metadata's labels {metadata.labels[:10]} are not the model's classes_ {labels[:10]} "
            "in order."
        )
    return labels


def _manifest(
    metadata: PublishMetadata, name: str, labels: list[str] | None, artifact: str, fmt: Format,
    artifacts: dict[str, str], metrics: dict[str, Any],
) -> Manifest:  # fmt: skip
    return Manifest(
        name=name,
        version=metadata.version,
        description=metadata.description,
        task=metadata.task,
        features=metadata.names,
        input_schema=input_schema(metadata),
        output_schema=output_schema(metadata.task, labels),
        labels=labels,
        deterministic=True,
        runtime="onnx" if fmt == "onnx" else "sklearn",
        artifact=artifact,
        artifact_format=fmt,
        executes_code_on_load=fmt == "joblib",
        artifacts=artifacts,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        metrics=metrics,
    )


def _probe(metadata: PublishMetadata) -> Rows:
    """Return one row to try a model on when no reference rows were given."""
    return ["probe"] if metadata.is_text else np.zeros((1, len(metadata.features)))


def build_version(
    candidate: Candidate, metadata: PublishMetadata, name: str, rows: Rows | None, staging: Path,
    metrics: dict[str, Any] | None = None,
) -> tuple[Manifest, dict[str, Path]]:  # fmt: skip
    """Check and convert a candidate into the files of a version in staging; return its manifest and files."""
    checks = rows if rows is not None else _probe(metadata)
    kept = staging / f"model{candidate.path.suffix.lower()}"
    shutil.copyfile(candidate.path, kept)
    figures = dict(metrics or {})
    estimator = candidate.estimator
    if estimator is None:
        labels = metadata.labels
        scores = check_onnx(_manifest(metadata, name, labels, kept.name, "onnx", {}, figures), kept, checks)
        artifact, fmt = kept.name, candidate.format
    else:
        labels = check_estimator(estimator, metadata)
        scores = sklearn_scores(estimator, metadata, checks)
        onnx = staging / "model.onnx"
        draft = _manifest(metadata, name, labels, onnx.name, "onnx", {}, figures)
        figures.update(convert_to_onnx(estimator, draft, rows if rows is not None else [], scores, onnx))
        artifact, fmt = (onnx.name, "onnx") if onnx.exists() else (kept.name, candidate.format)
    if rows is not None:
        frozen = statistics(metadata, rows, scores, labels, estimator)
        (staging / REFERENCE_JSON).write_text(json.dumps(frozen, indent=1) + "\n")
    files = {path.name: path for path in sorted(staging.iterdir())}
    hashes = {file: file_sha256(path) for file, path in files.items()}
    return _manifest(metadata, name, labels, artifact, fmt, hashes, figures), files


def save_estimator(estimator: Any, folder: Path) -> Candidate:
    """Save an estimator with skops when it holds only trusted types, else with joblib (declared)."""
    path = folder / "model.skops"
    try:
        sio.dump(estimator, path)
        untrusted = set(sio.get_untrusted_types(file=path)) - SKOPS_TRUSTED_TYPES
    except Exception:  # skops cannot serialise every object an estimator may hold
        untrusted = {"(skops could not save it)"}
    if not untrusted:
        return Candidate(path, "skops", estimator)
    path.unlink(missing_ok=True)
    path = folder / "model.joblib"
    joblib.dump(estimator, path)
    return Candidate(path, "joblib", estimator)


def publish_estimator(
    estimator: Any, registry: Registry, *, name: str, version: str, features: list[str], task: Task,
    reference: Rows, description: str = "", metrics: dict[str, Any] | None = None, replace: bool = False,
) -> Manifest:  # fmt: skip
    """Publish a fitted estimator held in memory as a model version (the examples' way); return its manifest.

    replace retires an existing version of that number first, so the examples can be trained again.
    """
    typed = [Feature(name=f, type="string" if features == ["text"] else "number") for f in features]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "staging").mkdir()
        candidate = save_estimator(estimator, folder)
        metadata = PublishMetadata(
            version=version, description=description, task=task,
            features=typed, allow_pickle=candidate.format == "joblib",
        )  # fmt: skip
        manifest, files = build_version(candidate, metadata, name, reference, folder / "staging", metrics)
        if replace and version in _versions(registry, name):
            registry.retire(name, version)
        registry.add_version(manifest, files)
    return manifest


def _versions(registry: Registry, name: str) -> list[str]:
    try:
        return registry.versions(name)
    except ServiceError:  # no such model yet
        return []


def publish_upload(registry: Registry, job_id: str, name: str, version: str, folder: Path) -> Manifest:
    """Publish the upload kept under a job's id as a version of the model; return its manifest.

    A version already published from the same artifact (this job, run again after it wrote the
    manifest) is returned as it is; one published from another artifact is refused.
    """
    files = registry.fetch_upload(job_id, folder / "upload")
    artifacts = [path for file, path in files.items() if file.startswith(ARTIFACT + ".")]
    if METADATA not in files or len(artifacts) != 1:
        raise NotFound("The upload of this publish job is gone: publish the version again.")
    metadata = PublishMetadata.model_validate_json(files[METADATA].read_bytes())
    if metadata.version != version:
        raise InvalidModel(f"The upload's metadata is for version {metadata.version}, not {version}.")
    if version in _versions(registry, name):
        return _published_already(registry.get(name, version), artifacts[0])
    candidate = load_artifact(artifacts[0], metadata.allow_pickle)
    rows = read_rows(files[REFERENCE], metadata) if REFERENCE in files else None
    staging = folder / "staging"
    staging.mkdir()
    manifest, built = build_version(candidate, metadata, name, rows, staging)
    try:
        registry.add_version(manifest, built)
    except Conflict:  # another run of this job, or another publisher, wrote it meanwhile
        return _published_already(registry.get(name, version), artifacts[0])
    except BaseException:
        _discard_unlisted(registry, name, version)
        raise
    return manifest


def _discard_unlisted(registry: Registry, name: str, version: str) -> None:
    """Delete the files of a version whose manifest was never written, so nothing half-published stays."""
    folder = f"{name}/{version}/"
    try:
        keys = registry.storage.keys(folder)
        if f"{folder}{MANIFEST}" not in keys:
            registry.storage.delete(keys)
    except Exception:  # the storage is failing: what it holds is unlisted all the same
        log.exception("could not delete the unlisted files of %s %s", name, version)


def _published_already(manifest: Manifest, artifact: Path) -> Manifest:
    """Return the manifest when it was published from this very artifact, else refuse the upload."""
    if manifest.artifacts.get(f"model{artifact.suffix.lower()}") == file_sha256(artifact):
        return manifest
    raise InvalidModel(
        f"Version {manifest.version} of {manifest.name} was published meanwhile from another artifact: "
        "publish this one under a new version."
    )

"""The model registry: manifests and artifacts of every published model version, over a storage."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Literal

import redis
from pydantic import BaseModel, Field, ValidationError

from shared.errors import Conflict, ModelLoadError, ServiceError, UnknownModel, UnknownVersion
from shared.settings import Settings
from shared.storage import Storage, make_storage

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^\d{1,6}\.\d{1,6}\.\d{1,6}$")
MANIFEST = "manifest.json"
# The types, beyond those skops trusts itself, that a skops artifact may hold and still be loaded.
# Anything else makes the publisher fall back to joblib (declared in the manifest) and the worker
# refuse the skops file.
SKOPS_TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree"})
DEFAULT_FILE = "default"
UPLOADS = "uploads"
# Bumped (INCR) by whoever changes the registry, so every process lists it again within a second.
GENERATION_KEY = "registry:generation"
GENERATION_CHECK_S = 1.0


class Manifest(BaseModel):
    """What a published model version is, what it takes and what it answers."""

    name: str
    version: str
    description: str = ""
    task: Literal["classification", "regression"]
    features: list[str]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    labels: list[str] | None = None
    deterministic: bool = True
    runtime: Literal["onnx", "sklearn"]
    artifact: str
    artifact_format: Literal["onnx", "skops", "joblib"]
    artifacts: dict[str, str] = Field(description="sha256 of every artifact file, by file name")
    executes_code_on_load: bool = Field(
        default=False, description="true only for a joblib artifact, which runs code when loaded"
    )
    created_at: str
    metrics: dict[str, Any] = Field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """Return the digest of the artifact the runtime serves."""
        return self.artifacts[self.artifact]

    @property
    def is_text(self) -> bool:
        """Tell whether a record is one free-text field rather than numbers."""
        return self.features == ["text"]


def version_key(version: str) -> tuple[int, ...]:
    """Return a sort key that orders semantic versions numerically."""
    return tuple(int(part) for part in version.split("."))


def file_sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Registry:
    """The published models and versions, read from a storage; adds and retires versions there too.

    Layout: ``{name}/{version}/manifest.json`` beside the version's files, ``{name}/default`` (the
    version served when none is named) and ``uploads/{job_id}/`` (files of publish jobs). A version is
    listed once its manifest exists, and its manifest is written last.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._manifests: dict[str, dict[str, Manifest]] = {}
        self._defaults: dict[str, str] = {}
        # Manifests never change once written (a version is added once, retired whole): read each once.
        self._read: dict[str, Manifest] = {}

    def refresh(self) -> None:
        """List the storage again and read the manifests not read before."""
        manifests: dict[str, dict[str, Manifest]] = {}
        default_keys: dict[str, str] = {}
        read: dict[str, Manifest] = {}
        for key in self.storage.keys(""):
            parts = key.split("/")
            if parts[0] == UPLOADS or not NAME_RE.match(parts[0]):
                continue
            if len(parts) == 2 and parts[1] == DEFAULT_FILE:
                default_keys[parts[0]] = key
            elif len(parts) == 3 and parts[2] == MANIFEST and VERSION_RE.match(parts[1]):
                manifest = self._read.get(key) or self._manifest(key)
                if manifest is not None:
                    read[key] = manifest
                    manifests.setdefault(parts[0], {})[parts[1]] = manifest
        defaults = {}
        for name, versions in manifests.items():
            raw = self.storage.get(default_keys[name]) if name in default_keys else None
            chosen = raw.decode(errors="replace").strip() if raw else ""
            defaults[name] = chosen if chosen in versions else max(versions, key=version_key)
        with self._lock:
            self._manifests, self._defaults, self._read = manifests, defaults, read

    def _manifest(self, key: str) -> Manifest | None:
        raw = self.storage.get(key)
        try:
            return None if raw is None else Manifest.model_validate_json(raw)
        except ValidationError as exc:  # one unreadable manifest must not hide every other version
            log.error("%s is not a manifest, its version is not listed: %s", key, exc)
            return None

    def names(self) -> list[str]:
        """Return the published model names, sorted."""
        return sorted(self._manifests)

    def versions(self, name: str) -> list[str]:
        """Return a model's versions, oldest first."""
        self._require(name)
        return sorted(self._manifests[name], key=version_key)

    def default_version(self, name: str) -> str:
        """Return the version served when a request names none."""
        self._require(name)
        return self._defaults[name]

    def get(self, name: str, version: str | None = None) -> Manifest:
        """Return the manifest of a model version, the default one when none is named."""
        self._require(name)
        chosen = version or self._defaults[name]
        found = self._manifests[name].get(chosen)
        if found is None:
            self.refresh()
            found = self._manifests.get(name, {}).get(chosen)
        if found is None:
            raise UnknownVersion(
                f"Model {name!r} has no version {chosen!r}.",
                [{"field": "version", "reason": f"known versions: {', '.join(self.versions(name))}"}],
            )
        return found

    def all(self) -> list[Manifest]:
        """Return the manifest of every published version."""
        return [m for name in self.names() for m in self._manifests[name].values()]

    def _require(self, name: str) -> None:
        if name not in self._manifests and NAME_RE.match(name):
            self.refresh()
        if name not in self._manifests:
            raise UnknownModel(f"No model is published as {name[:64]!r}.")

    def add_version(self, manifest: Manifest, files: dict[str, Path]) -> None:
        """Store a version's files, then its manifest (a model's first version becomes its default).

        Raises Conflict when the version's manifest exists; its sha256 digests must be the files'.
        """
        name, version = manifest.name, manifest.version
        if not (NAME_RE.match(name) and VERSION_RE.match(version)) or name == UPLOADS:
            raise ValueError(f"not a publishable model name and version: {name!r} {version!r}")
        if MANIFEST in files or any("/" in f or not f or f.startswith(".") for f in files):
            raise ValueError(f"not file names of a version: {sorted(files)}")
        for artifact, digest in manifest.artifacts.items():
            if artifact not in files or file_sha256(files[artifact]) != digest:
                raise ValueError(f"{artifact} is not among the files or does not match its sha256")
        folder = f"{name}/{version}"
        if self.storage.get(f"{folder}/{MANIFEST}") is not None:
            raise Conflict(f"{name} {version} is published already: publish another version.")
        for filename, path in files.items():
            self.storage.put_file(f"{folder}/{filename}", path)
        default = (self.storage.get(f"{name}/{DEFAULT_FILE}") or b"").decode(errors="replace").strip()
        if not VERSION_RE.match(default) or self.storage.get(f"{name}/{default}/{MANIFEST}") is None:
            self.storage.put(f"{name}/{DEFAULT_FILE}", f"{version}\n".encode())
        self.storage.put(f"{folder}/{MANIFEST}", manifest.model_dump_json(indent=2).encode() + b"\n")
        self.refresh()

    def retire(self, name: str, version: str) -> None:
        """Remove a version: its manifest first (it is unlisted at once), then its files."""
        folder = f"{name}/{version}"
        if (
            not (NAME_RE.match(name) and VERSION_RE.match(version))
            or self.storage.get(f"{folder}/{MANIFEST}") is None
        ):
            raise UnknownVersion(f"Model {name[:64]!r} has no version {version[:32]!r} to retire.")
        self.storage.delete([f"{folder}/{MANIFEST}"])
        self.storage.delete(self.storage.keys(f"{folder}/"))
        if not any(k.endswith(f"/{MANIFEST}") for k in self.storage.keys(f"{name}/")):
            self.storage.delete([f"{name}/{DEFAULT_FILE}"])
        self.refresh()

    def artifact_path(self, manifest: Manifest, cache_dir: Path) -> Path:
        """Return a local file of the served artifact whose sha256 is the manifest's.

        A folder's file is checked where it is; an object is downloaded into cache_dir once.
        Raises ModelLoadError when the artifact is missing or its bytes are not the published ones
        (and Unavailable when the storage does not answer).
        """
        key = f"{manifest.name}/{manifest.version}/{manifest.artifact}"
        path = self.storage.local_path(key)
        if path is None:
            path = cache_dir / manifest.name / manifest.version / manifest.artifact
            if path.is_file() and file_sha256(path) == manifest.sha256:
                return path
            if not self.storage.download(key, path):
                raise _artifact_error(manifest, "is missing")
        elif not path.is_file():
            raise _artifact_error(manifest, "is missing")
        if file_sha256(path) != manifest.sha256:
            if self.storage.local_path(key) is None:
                path.unlink(missing_ok=True)  # a bad download is not kept
            raise _artifact_error(manifest, "does not match the sha256 of its manifest")
        return path

    def read_file(self, manifest: Manifest, filename: str) -> bytes | None:
        """Return the bytes of another file of a version (reference.json, say), or None."""
        return self.storage.get(f"{manifest.name}/{manifest.version}/{filename}")

    def put_upload(self, job_id: str, files: dict[str, Path]) -> None:
        """Store the files of a publish job until a worker takes them."""
        for filename, path in files.items():
            self.storage.put_file(_upload_folder(job_id) + filename, path)

    def fetch_upload(self, job_id: str, dest: Path) -> dict[str, Path]:
        """Download a publish job's files into a folder; return them by name."""
        prefix = _upload_folder(job_id)
        found = {}
        for key in self.storage.keys(prefix):
            filename = key.removeprefix(prefix)
            if "/" not in filename and self.storage.download(key, dest / filename):
                found[filename] = dest / filename
        return found

    def drop_upload(self, job_id: str) -> None:
        """Delete a publish job's files."""
        self.storage.delete(self.storage.keys(_upload_folder(job_id)))


def _artifact_error(manifest: Manifest, what: str) -> ModelLoadError:
    return ModelLoadError(f"{manifest.name} {manifest.version}: artifact {manifest.artifact} {what}")


def _upload_folder(job_id: str) -> str:
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"{UPLOADS}/{job_id}/"


def make_registry(settings: Settings) -> Registry:
    """Return the registry over the storage the settings name, not yet read."""
    return Registry(make_storage(settings))


def bump_generation(client: redis.Redis) -> None:
    """Tell every process the registry changed, so each lists it again within a second."""
    # A fresh random value, not a counter: after Redis lost the key, a counter could come back to a
    # value a process already saw, and that process would miss the change.
    client.set(GENERATION_KEY, secrets.token_hex(8))


class GenerationWatch:
    """Lists the registry again when its generation in Redis moved, asking at most once a second."""

    def __init__(
        self, client: redis.Redis, registry: Registry, interval_s: float = GENERATION_CHECK_S
    ) -> None:
        self._client = client
        self._registry = registry
        self._interval_s = interval_s
        self._seen: object = None
        self._checked = float("-inf")

    def check(self) -> bool:
        """Refresh the registry if its generation changed since the last look; tell whether it did.

        Redis or the storage failing is logged and tried again at the next look, never raised: the
        registry read before keeps answering.
        """
        now = time.monotonic()
        if now - self._checked < self._interval_s:
            return False
        self._checked = now
        try:
            generation = self._client.get(GENERATION_KEY)
            if generation == self._seen:
                return False
            self._registry.refresh()
        except (redis.RedisError, ServiceError) as exc:
            log.warning("the registry was not listed again: %s", exc)
            return False
        self._seen = generation
        return True

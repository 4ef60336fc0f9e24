"""The model registry on disk: one folder a model, one folder a version, each with a manifest."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.errors import UnknownModel, UnknownVersion

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^\d{1,6}\.\d{1,6}\.\d{1,6}$")
MANIFEST = "manifest.json"
# The types, beyond those skops trusts itself, that a skops artifact may hold and still be loaded.
# Anything else makes the publisher fall back to joblib (declared in the manifest) and the worker
# refuse the skops file.
SKOPS_TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree"})
DEFAULT_FILE = "default"


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
    """Reads manifests from the registry folder and answers which models and versions exist."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._manifests: dict[str, dict[str, Manifest]] = {}
        self._defaults: dict[str, str] = {}

    def refresh(self) -> None:
        """Read every manifest again from disk."""
        manifests: dict[str, dict[str, Manifest]] = {}
        defaults: dict[str, str] = {}
        if self.root.is_dir():
            for model_dir in sorted(self.root.iterdir()):
                if not (model_dir.is_dir() and NAME_RE.match(model_dir.name)):
                    continue
                versions = {
                    v.name: Manifest.model_validate_json((v / MANIFEST).read_bytes())
                    for v in model_dir.iterdir()
                    if VERSION_RE.match(v.name) and (v / MANIFEST).is_file()
                }
                if not versions:
                    continue
                manifests[model_dir.name] = versions
                default_path = model_dir / DEFAULT_FILE
                chosen = default_path.read_text().strip() if default_path.is_file() else ""
                defaults[model_dir.name] = chosen if chosen in versions else max(versions, key=version_key)
        with self._lock:
            self._manifests, self._defaults = manifests, defaults

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


def write_version(root: Path, manifest: Manifest, make_default: bool = True) -> Path:
    """Write a manifest into its version folder and mark it the default version if asked."""
    folder = root / manifest.name / manifest.version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2) + "\n")
    if make_default:
        (root / manifest.name / DEFAULT_FILE).write_text(manifest.version + "\n")
    return folder

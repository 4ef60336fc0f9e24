"""The per-process model cache: every published version loaded once, its artifact verified first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from shared.errors import ModelLoadError, ServiceError
from shared.registry import Manifest, Registry, file_sha256
from worker.runtimes.base import Predictor
from worker.runtimes.onnx import OnnxPredictor
from worker.runtimes.sklearn import SklearnPredictor

log = logging.getLogger(__name__)

RUNTIMES: dict[str, Callable[[Manifest, Path], Predictor]] = {
    "onnx": OnnxPredictor,
    "sklearn": SklearnPredictor,
}


def load_predictor(root: Path, manifest: Manifest) -> Predictor:
    """Load one model version after checking its artifact's sha256 against the manifest."""
    artifact = root / manifest.name / manifest.version / manifest.artifact
    if not artifact.is_file():
        raise ModelLoadError(f"{manifest.name} {manifest.version}: artifact {manifest.artifact} is missing")
    if file_sha256(artifact) != manifest.sha256:
        raise ModelLoadError(
            f"{manifest.name} {manifest.version}: artifact sha256 does not match its manifest"
        )
    try:
        return RUNTIMES[manifest.runtime](manifest, artifact)
    except ServiceError:
        raise
    except Exception as exc:  # a broken artifact can raise anything its loader raises
        raise ModelLoadError(f"{manifest.name} {manifest.version}: failed to load: {exc}") from exc


class ModelCache:
    """Holds a predictor, or the reason it could not load, for every published model version."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._loaded: dict[tuple[str, str], Predictor | ModelLoadError] = {}

    def load_all(self) -> None:
        """Load every version the registry lists, remembering the ones that fail."""
        self.registry.refresh()
        for manifest in self.registry.all():
            self._load(manifest)

    def get(self, name: str, version: str) -> Predictor:
        """Return the loaded predictor of a version, loading a newly published one once."""
        found = self._loaded.get((name, version))
        if found is None:
            try:
                manifest = self.registry.get(name, version)
            except ServiceError as exc:
                raise ModelLoadError(f"{name} {version}: {exc.message}") from exc
            found = self._load(manifest)
        if isinstance(found, ModelLoadError):
            raise found
        return found

    def _load(self, manifest: Manifest) -> Predictor | ModelLoadError:
        key = (manifest.name, manifest.version)
        try:
            loaded: Predictor | ModelLoadError = load_predictor(self.registry.root, manifest)
            log.info("loaded %s %s (%s)", *key, manifest.runtime)
        except ModelLoadError as exc:
            log.error("%s", exc.message)
            loaded = exc
        self._loaded[key] = loaded
        return loaded

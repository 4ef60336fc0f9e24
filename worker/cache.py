"""The per-process model cache: versions loaded on demand, artifacts verified first, bytes bounded."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import redis

from shared.errors import ModelLoadError, ServiceError, Unavailable
from shared.registry import GenerationWatch, Manifest, Registry
from shared.storage import LocalStorage
from worker.runtimes.base import Predictor
from worker.runtimes.onnx import OnnxPredictor
from worker.runtimes.sklearn import SklearnPredictor

log = logging.getLogger(__name__)

RUNTIMES: dict[str, Callable[[Manifest, Path], Predictor]] = {
    "onnx": OnnxPredictor,
    "sklearn": SklearnPredictor,
}
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024

Key = tuple[str, str]


def _construct(manifest: Manifest, artifact: Path) -> Predictor:
    try:
        return RUNTIMES[manifest.runtime](manifest, artifact)
    except ServiceError:
        raise
    except Exception as exc:  # a broken artifact can raise anything its loader raises
        raise ModelLoadError(f"{manifest.name} {manifest.version}: failed to load: {exc}") from exc


def load_predictor(root: Path, manifest: Manifest) -> Predictor:
    """Load one model version of a registry folder after checking its artifact's sha256."""
    return _construct(manifest, Registry(LocalStorage(root)).artifact_path(manifest, root))


@dataclass
class _Loaded:
    predictor: Predictor
    size: int


class ModelCache:
    """Holds the predictors of the versions used lately, within a byte budget, least recent out first.

    A version that failed to load is remembered as failed until the registry changes. With a Redis
    client, the registry's generation is looked at (at most once a second) before serving, and the
    versions it no longer lists are dropped.
    """

    def __init__(
        self, registry: Registry, max_bytes: int = DEFAULT_MAX_BYTES, client: redis.Redis | None = None
    ) -> None:
        self.registry = registry
        self.max_bytes = max_bytes
        self._watch = GenerationWatch(client, registry) if client is not None else None
        self._loaded: OrderedDict[Key, _Loaded] = OrderedDict()
        self._failed: dict[Key, ModelLoadError] = {}
        self._lock = threading.RLock()

    @property
    def loaded_bytes(self) -> int:
        """Return the artifact bytes of the versions held now."""
        return sum(entry.size for entry in self._loaded.values())

    def loaded(self) -> list[Key]:
        """Return the versions held now, least recently used first."""
        return list(self._loaded)

    def load_all(self) -> None:
        """Read the registry and load what fits the budget: each model's default first, then the newest."""
        try:
            if self._watch is None or not self._watch.check():
                self.registry.refresh()
        except ServiceError as exc:  # the storage is down: versions load on demand once it answers
            log.error("the registry could not be read: %s", exc.message)
            return
        defaults = {(n, self.registry.default_version(n)) for n in self.registry.names()}
        manifests = sorted(self.registry.all(), key=lambda m: m.created_at, reverse=True)
        manifests.sort(key=lambda m: (m.name, m.version) not in defaults)
        with self._lock:
            for manifest in manifests:
                if self.loaded_bytes >= self.max_bytes:
                    break
                try:
                    self._load(manifest, evict=False)
                except ModelLoadError as exc:
                    log.error("%s", exc.message)

    def get(self, name: str, version: str) -> Predictor:
        """Return the predictor of a version, loading it (and making room) when it is not held."""
        with self._lock:
            self._follow_registry()
            key = (name, version)
            entry = self._loaded.get(key)
            if entry is not None:
                self._loaded.move_to_end(key)
                return entry.predictor
            failed = self._failed.get(key)
            if failed is None:
                try:
                    manifest = self.registry.get(name, version)
                except ServiceError as exc:
                    raise ModelLoadError(f"{name} {version}: {exc.message}") from exc
                loaded = self._load(manifest, evict=True)
                if loaded is not None:
                    return loaded.predictor
                failed = self._failed[key]
            raise failed

    def _follow_registry(self) -> None:
        if self._watch is None or not self._watch.check():
            return
        listed = {(m.name, m.version) for m in self.registry.all()}
        for key in [k for k in self._loaded if k not in listed]:
            del self._loaded[key]
            log.info("dropped %s %s (no longer published)", *key)
        self._failed.clear()  # the registry changed: a version that failed may load now

    def _load(self, manifest: Manifest, evict: bool) -> _Loaded | None:
        key = (manifest.name, manifest.version)
        remote = self.registry.storage.local_path(f"{key[0]}/{key[1]}/{manifest.artifact}") is None
        # A folder's artifact is read where it is; a download is kept only until the model is loaded.
        with tempfile.TemporaryDirectory(prefix="infer-model-") if remote else nullcontext("") as downloads:
            try:
                artifact = self.registry.artifact_path(manifest, Path(downloads))
                size = artifact.stat().st_size
                if size > self.max_bytes:
                    raise ModelLoadError(
                        f"{key[0]} {key[1]}: its artifact ({size} bytes) is over INFER_WORKER_MODEL_BYTES "
                        f"({self.max_bytes}): raise it to serve this version"
                    )
                if not evict and self.loaded_bytes + size > self.max_bytes:
                    return None
                while self._loaded and self.loaded_bytes + size > self.max_bytes:
                    dropped = next(iter(self._loaded))
                    del self._loaded[dropped]
                    log.info("evicted %s %s (least recently used)", *dropped)
                entry = _Loaded(_construct(manifest, artifact), size)
            except Unavailable as exc:  # the storage did not answer: try again at the next need
                raise ModelLoadError(f"{key[0]} {key[1]}: {exc.message}") from exc
            except ModelLoadError as exc:
                log.error("%s", exc.message)
                self._failed[key] = exc
                return None
        self._loaded[key] = entry
        log.info("loaded %s %s (%s)", *key, manifest.runtime)
        return entry

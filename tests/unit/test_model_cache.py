"""The worker's model cache on the session's trained models: on-demand loads within a byte budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ModelLoadError
from shared.registry import Registry
from shared.storage import LocalStorage
from worker.cache import ModelCache
from worker.runtimes.base import predict


def _sizes(registry: Registry) -> dict[str, int]:
    """Return the artifact bytes of each model's default version."""
    found = {}
    for name in registry.names():
        manifest = registry.get(name)
        path = registry.storage.local_path(f"{name}/{manifest.version}/{manifest.artifact}")
        assert path is not None
        found[name] = path.stat().st_size
    return found


def test_the_least_recently_used_version_goes_when_a_new_one_needs_room(registry_path: Path) -> None:
    """With room for the smallest and the largest model, using the largest evicts the one used longest ago."""
    registry = Registry(LocalStorage(registry_path))
    registry.refresh()
    sizes = _sizes(registry)
    small, middle, large = sorted(sizes, key=sizes.__getitem__)
    budget = sizes[small] + sizes[large]
    cache = ModelCache(registry, max_bytes=budget)
    cache.get(small, "1.0.0")
    cache.get(middle, "1.0.0")
    assert cache.loaded() == [(small, "1.0.0"), (middle, "1.0.0")]
    cache.get(small, "1.0.0")  # now the middle one is the least recently used
    cache.get(large, "1.0.0")
    assert cache.loaded() == [(small, "1.0.0"), (large, "1.0.0")]
    assert cache.loaded_bytes == budget
    # Each comes back on demand, within the budget, and serves.
    breast_cancer = cache.get("breast-cancer", "1.0.0")
    assert predict(breast_cancer, [[1.0] * 30])[0]["label"] in ("benign", "malignant")
    scam = cache.get("scam-email", "1.0.0")
    assert predict(scam, ["Claim your prize now"])[0]["label"] in (registry.get("scam-email").labels or [])
    assert cache.loaded_bytes <= budget


def test_warming_up_loads_only_what_fits_defaults_first(registry_path: Path) -> None:
    """load_all stops at the budget instead of loading every published version."""
    registry = Registry(LocalStorage(registry_path))
    registry.refresh()
    sizes = _sizes(registry)
    budget = max(sizes.values())
    cache = ModelCache(registry, max_bytes=budget)
    cache.load_all()
    assert 1 <= len(cache.loaded()) < len(sizes)
    assert cache.loaded_bytes <= budget
    everything = ModelCache(registry)
    everything.load_all()
    assert sorted(everything.loaded()) == sorted((m.name, m.version) for m in registry.all())


def test_a_version_larger_than_the_whole_budget_is_refused_with_what_to_raise(registry_path: Path) -> None:
    """An artifact over INFER_WORKER_MODEL_BYTES is never loaded; the error names the setting."""
    registry = Registry(LocalStorage(registry_path))
    registry.refresh()
    cache = ModelCache(registry, max_bytes=10)
    with pytest.raises(ModelLoadError, match="INFER_WORKER_MODEL_BYTES"):
        cache.get("iris", "1.0.0")
    assert cache.loaded() == []

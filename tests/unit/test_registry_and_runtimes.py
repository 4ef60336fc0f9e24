"""The registry, publishing, artifact checks and the runtimes, on the session's trained models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.errors import ModelLoadError, UnknownModel, UnknownVersion
from shared.registry import Registry, file_sha256
from worker.cache import ModelCache, load_predictor


def test_registry_lists_models_versions_and_defaults(registry: Registry) -> None:
    """The registry knows each example, its versions and its default version."""
    assert registry.names() == ["breast-cancer", "iris", "scam-email"]
    assert registry.versions("iris") == ["1.0.0"]
    assert registry.get("iris").version == registry.default_version("iris") == "1.0.0"
    with pytest.raises(UnknownModel):
        registry.get("../iris")
    with pytest.raises(UnknownVersion):
        registry.get("iris", "2.0.0")


def test_manifests_record_every_artifact_digest_and_the_onnx_check(
    registry_path: Path, registry: Registry
) -> None:
    """Each manifest holds the sha256 of each artifact file and what the ONNX check found."""
    for manifest in registry.all():
        folder = registry_path / manifest.name / manifest.version
        assert manifest.artifacts == {name: file_sha256(folder / name) for name in manifest.artifacts}
        assert manifest.artifact in manifest.artifacts
        assert "test_accuracy" in manifest.metrics
    forest = registry.get("breast-cancer")
    assert forest.runtime == "onnx"
    assert forest.metrics["onnx_max_abs_diff"] < 0.05
    assert registry.get("scam-email").runtime in ("onnx", "sklearn")


def test_runtimes_agree_with_each_other(registry_path: Path, registry: Registry) -> None:
    """The ONNX artifact and the skops artifact of a model give the same labels."""
    manifest = registry.get("breast-cancer")
    onnx = load_predictor(registry_path, manifest)
    skops = load_predictor(
        registry_path,
        manifest.model_copy(
            update={"runtime": "sklearn", "artifact": "model.skops", "artifact_format": "skops"}
        ),
    )
    rows = np.random.default_rng(0).normal(10, 5, size=(50, 30)).tolist()
    assert [o["label"] for o in onnx.predict(rows)] == [o["label"] for o in skops.predict(rows)]


def test_a_tampered_or_missing_artifact_is_refused(registry_path: Path, tmp_path: Path) -> None:
    """A changed artifact fails its sha256 check; a missing one says so; others still load."""
    root = tmp_path / "registry"
    shutil.copytree(registry_path, root)
    (root / "iris" / "1.0.0" / "model.onnx").write_bytes(b"not a model")
    (root / "scam-email" / "1.0.0" / registry_artifact(root, "scam-email")).unlink()
    cache = ModelCache(Registry(root))
    cache.load_all()
    with pytest.raises(ModelLoadError, match="sha256"):
        cache.get("iris", "1.0.0")
    with pytest.raises(ModelLoadError, match="missing"):
        cache.get("scam-email", "1.0.0")
    assert cache.get("breast-cancer", "1.0.0").predict([[1.0] * 30])[0]["label"] in ("benign", "malignant")


def registry_artifact(root: Path, name: str) -> str:
    """Return the file name of the artifact a model's default version serves."""
    registry = Registry(root)
    registry.refresh()
    return registry.get(name).artifact

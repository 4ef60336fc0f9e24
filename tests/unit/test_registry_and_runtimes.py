"""The registry, publishing, artifact checks and the runtimes, on the session's trained models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.errors import ModelLoadError, UnknownModel, UnknownVersion
from shared.registry import Registry, file_sha256
from shared.storage import LocalStorage
from worker.cache import ModelCache, load_predictor
from worker.runtimes.base import predict


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
        assert not manifest.executes_code_on_load  # every example loads without running code
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
    assert [o["label"] for o in predict(onnx, rows)] == [o["label"] for o in predict(skops, rows)]


def test_a_tampered_or_missing_artifact_is_refused(registry_path: Path, tmp_path: Path) -> None:
    """A changed artifact fails its sha256 check; a missing one says so; others still load."""
    root = tmp_path / "registry"
    shutil.copytree(registry_path, root)
    (root / "iris" / "1.0.0" / "model.onnx").write_bytes(b"not a model")
    (root / "scam-email" / "1.0.0" / registry_artifact(root, "scam-email")).unlink()
    cache = ModelCache(Registry(LocalStorage(root)))
    cache.load_all()
    with pytest.raises(ModelLoadError, match="sha256"):
        cache.get("iris", "1.0.0")
    with pytest.raises(ModelLoadError, match="missing"):
        cache.get("scam-email", "1.0.0")
    assert predict(cache.get("breast-cancer", "1.0.0"), [[1.0] * 30])[0]["label"] in ("benign", "malignant")


def registry_artifact(root: Path, name: str) -> str:
    """Return the file name of the artifact a model's default version serves."""
    registry = Registry(LocalStorage(root))
    registry.refresh()
    return registry.get(name).artifact


def _double(values: np.ndarray) -> np.ndarray:
    """Double every value: a function of the user's own, which skops cannot vouch for."""
    return values * 2


def _custom_pipeline() -> object:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rows = np.arange(40, dtype=float).reshape(20, 2)
    return make_pipeline(FunctionTransformer(_double), LinearRegression()).fit(rows, rows.sum(axis=1))


def test_an_estimator_skops_cannot_vouch_for_is_published_as_joblib_and_declared(tmp_path: Path) -> None:
    """An estimator holding an untrusted type falls back to joblib, says so, and still serves."""
    from worker.publishing import publish_estimator

    manifest = publish_estimator(
        _custom_pipeline(), Registry(LocalStorage(tmp_path)), name="sums", version="1.0.0",
        features=["a", "b"], task="regression", reference=np.ones((3, 2)),
    )  # fmt: skip
    assert manifest.artifact_format == "joblib"
    assert manifest.executes_code_on_load
    assert "model.skops" not in manifest.artifacts
    assert predict(load_predictor(tmp_path, manifest), [[3.0, 4.0]])[0]["value"] == pytest.approx(7.0)


def test_a_skops_file_with_untrusted_types_is_refused(tmp_path: Path) -> None:
    """A skops artifact holding a type outside the trusted list is refused even with a matching digest."""
    import skops.io as sio

    from worker.publishing import publish_estimator

    model = _custom_pipeline()
    manifest = publish_estimator(
        model, Registry(LocalStorage(tmp_path)), name="sneaky", version="1.0.0", features=["a", "b"],
        task="regression", reference=np.ones((3, 2)),
    )  # fmt: skip
    skops_file = tmp_path / "sneaky" / "1.0.0" / "model.skops"
    sio.dump(model, skops_file)
    forged = manifest.model_copy(
        update={
            "artifact": "model.skops", "artifact_format": "skops", "executes_code_on_load": False,
            "artifacts": {"model.skops": file_sha256(skops_file)},
        }
    )  # fmt: skip
    with pytest.raises(ModelLoadError, match="untrusted types"):
        load_predictor(tmp_path, forged)


def test_ndjson_outputs_are_the_api_outputs_of_the_scores(registry: Registry) -> None:
    """The fast NDJSON encoding gives the label of the highest probability and every probability."""
    import orjson

    from worker.runtimes.base import ndjson

    iris = registry.get("iris")
    scores = np.asarray([[0.1, 0.7, 0.2], [0.9999999, 1e-7, 0.0]])
    lines = [orjson.loads(line) for line in ndjson(iris, scores).splitlines()]
    assert lines == [
        {"label": "versicolor", "probabilities": {"setosa": 0.1, "versicolor": 0.7, "virginica": 0.2}},
        {"label": "setosa", "probabilities": {"setosa": 1.0, "versicolor": 0.0, "virginica": 0.0}},
    ]
    regression = iris.model_copy(update={"task": "regression", "labels": None})
    assert ndjson(regression, np.asarray([[1.5], [-2.0]])) == b'{"value":1.5}\n{"value":-2.0}\n'
    assert orjson.loads(ndjson(regression, np.asarray([[float("inf")]]))) == {"value": None}

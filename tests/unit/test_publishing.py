"""The worker's publishing steps, called directly: loading with trusted types, checks, ONNX, reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from shared.errors import InvalidInput, InvalidModel
from shared.publishing import PublishMetadata, artifact_extension, parse_metadata
from shared.registry import file_sha256
from worker.conversion import ONNX_TOLERANCE
from worker.publishing import Candidate, build_version, check_estimator, load_artifact
from worker.reference import REFERENCE_JSON, bins, read_rows


def _metadata(features: int, task: str = "classification", **extra: Any) -> PublishMetadata:
    names = [{"name": f"f{i}", "type": "number"} for i in range(features)]
    return PublishMetadata.model_validate({"version": "1.1.0", "task": task, "features": names, **extra})


@pytest.fixture(scope="module")
def forest() -> tuple[Any, np.ndarray]:
    """Return a small forest fitted on the breast-cancer data, and its rows."""
    data = load_breast_cancer()
    labels = np.asarray(data.target_names)[data.target]
    model = RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1).fit(data.data, labels)
    return model, data.data


def _skops(model: Any, folder: Path) -> Candidate:
    """Save a model as an uploaded skops artifact, make a staging folder beside it, and load it back."""
    path = folder / "artifact.skops"
    sio.dump(model, path)
    (folder / "staging").mkdir()
    return load_artifact(path, allow_pickle=False)


def _double(values: np.ndarray) -> np.ndarray:
    """Double every value: a function of the user's own, which skops cannot vouch for."""
    return values * 2


def test_a_forest_is_converted_to_onnx_within_the_tolerance_and_its_reference_frozen(
    forest: tuple[Any, np.ndarray], tmp_path: Path
) -> None:
    """A skops forest becomes an ONNX version: tolerance and difference recorded, reference hashed."""
    model, rows = forest
    metadata = _metadata(30, labels=["benign", "malignant"])
    candidate = _skops(model, tmp_path)
    manifest, files = build_version(candidate, metadata, "breast-cancer", rows[:200], tmp_path / "staging")
    assert manifest.runtime == "onnx"
    assert manifest.artifact == "model.onnx"
    assert manifest.metrics["onnx_tolerance"] == ONNX_TOLERANCE
    assert manifest.metrics["onnx_max_abs_diff"] <= ONNX_TOLERANCE
    assert manifest.metrics["onnx_check_rows"] == 200
    assert set(files) == {"model.onnx", "model.skops", REFERENCE_JSON}
    assert manifest.artifacts == {name: file_sha256(p) for name, p in files.items()}
    assert manifest.artifacts["model.skops"] == file_sha256(candidate.path)  # the upload, kept as it came
    frozen = json.loads(files[REFERENCE_JSON].read_text())
    assert frozen["rows"] == 200
    assert set(frozen["features"]) == set(metadata.names)
    assert sum(frozen["features"]["f0"]["shares"]) == pytest.approx(1.0)
    assert set(frozen["predictions"]["labels"]) == {"malignant", "benign"}
    assert sum(frozen["predictions"]["labels"].values()) == pytest.approx(1.0)


def test_without_reference_rows_the_version_is_served_by_scikit_learn_and_says_why(
    forest: tuple[Any, np.ndarray], tmp_path: Path
) -> None:
    """No reference: no rows to check ONNX on, so the skops artifact is served and no reference frozen."""
    model, _ = forest
    manifest, files = build_version(
        _skops(model, tmp_path), _metadata(30), "breast-cancer", None, tmp_path / "staging"
    )
    assert (manifest.runtime, manifest.artifact_format) == ("sklearn", "skops")
    assert "no reference rows" in manifest.metrics["onnx_refused"]
    assert set(files) == {"model.skops"}
    assert manifest.labels == ["benign", "malignant"]


def test_a_regressor_is_converted_and_its_predicted_values_binned(tmp_path: Path) -> None:
    """A linear regression agrees with its ONNX within the relative tolerance; its values get ten bins."""
    rows = np.random.default_rng(1).normal(size=(300, 3))
    model = LinearRegression().fit(rows, rows @ [1.0, -2.0, 0.5])
    candidate = _skops(model, tmp_path)
    manifest, files = build_version(candidate, _metadata(3, "regression"), "sums", rows, tmp_path / "staging")
    assert manifest.runtime == "onnx"
    assert manifest.labels is None
    frozen = json.loads(files[REFERENCE_JSON].read_text())
    assert len(frozen["predictions"]["values"]["shares"]) == 10


def test_a_skops_file_with_untrusted_types_is_refused(tmp_path: Path) -> None:
    """A skops artifact holding a function of the user's own is refused, naming the type."""
    rows = np.arange(40, dtype=float).reshape(20, 2)
    model = make_pipeline(FunctionTransformer(_double), LinearRegression()).fit(rows, rows.sum(axis=1))
    path = tmp_path / "artifact.skops"
    sio.dump(model, path)
    with pytest.raises(InvalidModel, match=r"not trusted.*_double"):
        load_artifact(path, allow_pickle=False)


def test_a_corrupt_or_foreign_file_is_refused_as_invalid_model(tmp_path: Path) -> None:
    """Bytes that are no skops, joblib or ONNX file are refused with the reason, never raised raw."""
    for name in ("artifact.skops", "artifact.joblib"):
        path = tmp_path / name
        path.write_bytes(b"this is not a model at all")
        with pytest.raises(InvalidModel, match="corrupt"):
            load_artifact(path, allow_pickle=True)
    onnx = tmp_path / "artifact.onnx"
    onnx.write_bytes(b"\x08\x07garbage")
    (tmp_path / "staging").mkdir()
    metadata = _metadata(4, labels=["a", "b"])
    with pytest.raises(InvalidModel, match="ONNX model cannot be loaded"):
        build_version(load_artifact(onnx, False), metadata, "m", None, tmp_path / "staging")


def test_a_joblib_file_loads_only_with_allow_pickle(tmp_path: Path) -> None:
    """Loading a joblib file runs code: refused without allow_pickle, loaded and declared with it."""
    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    path = tmp_path / "artifact.joblib"
    joblib.dump(model, path)
    with pytest.raises(InvalidModel, match="allow_pickle"):
        load_artifact(path, allow_pickle=False)
    candidate = load_artifact(path, allow_pickle=True)
    assert candidate.format == "joblib"
    (tmp_path / "staging").mkdir()
    manifest, _ = build_version(
        candidate, _metadata(4, allow_pickle=True), "iris", None, tmp_path / "staging"
    )
    assert manifest.executes_code_on_load
    assert manifest.artifact == "model.joblib"


def test_the_estimator_must_agree_with_the_metadata(forest: tuple[Any, np.ndarray]) -> None:
    """Feature count, task and labels are checked against n_features_in_ and classes_."""
    model, _ = forest
    with pytest.raises(InvalidModel, match="takes 30 features but the metadata names 29"):
        check_estimator(model, _metadata(29))
    with pytest.raises(InvalidModel, match="says regression"):
        check_estimator(model, _metadata(30, "regression"))
    with pytest.raises(InvalidModel, match="labels"):
        check_estimator(model, _metadata(30, labels=["yes", "no"]))
    assert check_estimator(model, _metadata(30)) == [str(c) for c in model.classes_]
    with pytest.raises(InvalidModel, match="not an estimator"):
        check_estimator({"weights": [1, 2]}, _metadata(2))


def test_an_uploaded_onnx_classifier_is_checked_against_its_metadata(
    forest: tuple[Any, np.ndarray], tmp_path: Path
) -> None:
    """An ONNX upload is served as it is once it runs on the reference rows with one column a label."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model, rows = forest
    converted = to_onnx(model, initial_types=[("input", FloatTensorType([None, 30]))],
                        options={"zipmap": False}, target_opset=17)  # fmt: skip
    path = tmp_path / "artifact.onnx"
    path.write_bytes(converted.SerializeToString())
    labels = [str(c) for c in model.classes_]
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    manifest, _ = build_version(Candidate(path, "onnx", None), _metadata(30, labels=labels), "bc", rows,
                                tmp_path / "a")  # fmt: skip
    assert (manifest.runtime, manifest.artifact) == ("onnx", "model.onnx")
    with pytest.raises(InvalidModel, match="must name its labels"):
        build_version(Candidate(path, "onnx", None), _metadata(30), "bc", rows, tmp_path / "b")
    with pytest.raises(InvalidModel, match="cannot be loaded or run"):
        build_version(Candidate(path, "onnx", None), _metadata(4, labels=labels), "bc", None, tmp_path / "c")


def test_reference_rows_are_read_and_refused_when_not_numbers(tmp_path: Path) -> None:
    """The reference CSV gives float rows in feature order; a word where a number belongs is refused."""
    path = tmp_path / "ref.csv"
    path.write_text("f0,f1\n1,2\n3.5,-4e3\n")
    assert read_rows(path, _metadata(2)).tolist() == [[1.0, 2.0], [3.5, -4000.0]]
    path.write_text("f0,f1\n1,2\n3,many\n")
    with pytest.raises(InvalidModel, match="row 2"):
        read_rows(path, _metadata(2))
    path.write_text("f0,f1\n1,2,3\n")
    with pytest.raises(InvalidModel, match="3 values"):
        read_rows(path, _metadata(2))


def test_bins_put_each_value_where_a_later_window_would() -> None:
    """Ten quantile bins: inner edges, shares summing to one, a constant feature in one bin."""
    values = np.arange(1000, dtype=float)
    found = bins(values)
    assert len(found["edges"]) == 9
    assert found["shares"] == pytest.approx([0.1] * 10, abs=0.002)
    constant = bins(np.full(50, 3.0))
    assert constant == {"edges": [3.0], "shares": [1.0, 0.0]}


def test_metadata_and_file_types_are_refused_naming_the_field() -> None:
    """Bad metadata names each field; a pickle needs allow_pickle; a .txt file is never taken."""
    with pytest.raises(InvalidInput) as refused:
        parse_metadata(b'{"version": "1.x", "task": "guess", "features": []}')
    fields = {d["field"] for d in refused.value.details}
    assert {"metadata.version", "metadata.task", "metadata.features"} <= fields
    with pytest.raises(InvalidInput, match="metadata"):
        parse_metadata(b"not json")
    with pytest.raises(InvalidInput):
        parse_metadata(
            b'{"version": "1.0.0", "task": "regression", "features": [{"name": "a"}], "labels": ["x", "y"]}'
        )
    assert artifact_extension("model.SKOPS", False) == ".skops"
    assert artifact_extension("model.joblib", None) == ".joblib"  # judged again once the metadata is read
    with pytest.raises(InvalidInput, match="type"):
        artifact_extension("model.joblib", False)
    with pytest.raises(InvalidInput):
        artifact_extension("notes.txt", True)


def test_the_publish_route_is_in_the_openapi_document_with_its_multipart_body() -> None:
    """POST /v1/models/{name}/versions takes the three parts as multipart and answers a publish Job."""
    from api.openapi import openapi_document
    from shared.settings import Settings

    document = openapi_document(Settings(max_upload_bytes=1234))
    operation = document["paths"]["/v1/models/{name}/versions"]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]
    schema = document["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert set(schema["properties"]) == {"artifact", "metadata", "reference"}
    assert schema["required"] == ["artifact", "metadata"]
    assert schema["properties"]["artifact"]["format"] == "binary"
    assert body["encoding"]["metadata"]["contentType"] == "application/json"
    assert {"202", "400", "403", "409", "413", "415", "422"} <= set(operation["responses"])
    assert "1,234 bytes" in operation["description"]
    assert document["components"]["schemas"]["Job"]["properties"]["kind"]["enum"] == ["predict", "publish"]

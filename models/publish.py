"""Publish a trained scikit-learn estimator into the registry: artifacts, checks and manifest.

Usage: ``python -m models.publish ESTIMATOR.joblib --name NAME --version 1.0.0 --features a,b,c``
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import numpy.typing as npt
import skops.io as sio

from shared.registry import NAME_RE, SKOPS_TRUSTED_TYPES, VERSION_RE, Manifest, file_sha256, write_version

Task = Literal["classification", "regression"]
TEXT_LIMIT = 20_000
# Runtimes compute in float32: a larger magnitude would silently become infinity.
FLOAT32_MAX = 3.4e38


def input_schema(features: list[str], text: bool) -> dict[str, Any]:
    """Return the JSON Schema of one record with the given named features."""
    field: dict[str, Any] = (
        {"type": "string", "minLength": 1, "maxLength": TEXT_LIMIT}
        if text
        else {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    )
    return {
        "type": "object",
        "properties": {name: dict(field) for name in features},
        "required": list(features),
        "additionalProperties": False,
    }


def output_schema(task: Task, labels: list[str] | None) -> dict[str, Any]:
    """Return the JSON Schema of one output of a model of this task."""
    if task == "regression":
        return {
            "type": "object",
            "properties": {"value": {"type": "number"}},
            "required": ["value"],
        }
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


def _sklearn_scores(estimator: Any, task: Task, rows: Any) -> npt.NDArray[np.float64]:
    if task == "classification":
        return np.asarray(estimator.predict_proba(rows), dtype=np.float64)
    return np.asarray(estimator.predict(rows), dtype=np.float64).reshape(-1, 1)


def _onnx_scores(path: Path, task: Task, rows: Any, text: bool) -> npt.NDArray[np.float64]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a refused conversion is reported in the manifest, not on stderr
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = np.asarray(rows, dtype=object if text else np.float32)
    if text:
        feed = feed.reshape(-1, 1)
    outputs = session.run(None, {session.get_inputs()[0].name: feed})
    scores = outputs[1] if task == "classification" else outputs[0]
    return np.asarray(scores, dtype=np.float64).reshape(len(feed), -1)


def _convert_to_onnx(
    estimator: Any, task: Task, features: list[str], text: bool, check_rows: Any, target: Path
) -> tuple[bool, dict[str, Any]]:
    """Write an ONNX artifact when conversion works and agrees with scikit-learn on check rows."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType

        kind = StringTensorType([None, 1]) if text else FloatTensorType([None, len(features)])
        options = {"zipmap": False} if task == "classification" else None
        model = to_onnx(estimator, initial_types=[("input", kind)], options=options, target_opset=17)
        target.write_bytes(model.SerializeToString())
        expected = _sklearn_scores(estimator, task, check_rows)
        got = _onnx_scores(target, task, check_rows, text)
    except Exception as exc:  # skl2onnx raises many kinds for what it cannot convert
        target.unlink(missing_ok=True)
        return False, {"onnx_refused": f"conversion failed: {type(exc).__name__}: {exc}"[:300]}
    max_diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    check: dict[str, Any] = {"onnx_check_rows": len(expected), "onnx_max_abs_diff": max_diff}
    agree = (
        bool(np.all(expected.argmax(axis=1) == got.argmax(axis=1)))
        if task == "classification"
        else bool(np.allclose(expected, got, rtol=1e-3, atol=1e-3))
    )
    if not agree:
        target.unlink()
        check["onnx_refused"] = "predictions differ from scikit-learn on the check rows"
    return agree, check


def _save_without_pickle(estimator: Any, folder: Path) -> str:
    """Save the estimator with skops when it holds only trusted types, else with joblib; return the file."""
    path = folder / "model.skops"
    try:
        sio.dump(estimator, path)
        untrusted = set(sio.get_untrusted_types(file=path)) - SKOPS_TRUSTED_TYPES
    except Exception:  # skops cannot serialise every object an estimator may hold
        untrusted = {"(skops could not save it)"}
    if not untrusted:
        return path.name
    path.unlink(missing_ok=True)
    joblib.dump(estimator, folder / "model.joblib")
    return "model.joblib"


def publish(
    estimator: Any,
    *,
    registry: Path,
    name: str,
    version: str,
    features: list[str],
    task: Task,
    check_rows: Any,
    description: str = "",
    metrics: dict[str, Any] | None = None,
    make_default: bool = True,
) -> Manifest:
    """Write an estimator's artifacts and manifest as a new version of a model in the registry."""
    if not NAME_RE.match(name) or not VERSION_RE.match(version):
        raise ValueError(f"bad model name or version: {name!r} {version!r}")
    text = features == ["text"]
    labels = [str(c) for c in estimator.classes_] if task == "classification" else None
    with tempfile.TemporaryDirectory(dir=registry.parent if registry.exists() else None) as tmp:
        staging = Path(tmp)
        scikit_artifact = _save_without_pickle(estimator, staging)
        converted, check = _convert_to_onnx(
            estimator, task, features, text, check_rows, staging / "model.onnx"
        )
        artifact = "model.onnx" if converted else scikit_artifact
        manifest = Manifest(
            name=name,
            version=version,
            description=description,
            task=task,
            features=features,
            input_schema=input_schema(features, text),
            output_schema=output_schema(task, labels),
            labels=labels,
            deterministic=True,
            runtime="onnx" if converted else "sklearn",
            artifact=artifact,
            artifact_format="onnx" if converted else ("joblib" if artifact == "model.joblib" else "skops"),
            executes_code_on_load=artifact == "model.joblib",
            artifacts={p.name: file_sha256(p) for p in sorted(staging.iterdir())},
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            metrics={**(metrics or {}), **check},
        )
        folder = registry / name / version
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for path in staging.iterdir():
            shutil.move(str(path), folder / path.name)
    write_version(registry, manifest, make_default)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Publish an estimator saved with joblib, checking ONNX against rows from a CSV if given."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("estimator", type=Path, help="a fitted estimator saved with joblib.dump")
    parser.add_argument("--registry", type=Path, default=Path("models/registry"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--features", required=True, help="comma-separated, in column order")
    parser.add_argument("--task", choices=["classification", "regression"], required=True)
    parser.add_argument("--check-csv", type=Path, help="held-out rows (header = features)")
    parser.add_argument("--description", default="")
    args = parser.parse_args(argv)
    # joblib runs code on load: only ever point this at an estimator you made yourself.
    estimator = joblib.load(args.estimator)
    features = args.features.split(",")
    if args.check_csv:
        dtype = object if features == ["text"] else np.float64
        rows = np.genfromtxt(args.check_csv, delimiter=",", skip_header=1, dtype=dtype)
    else:
        rows = np.zeros((0, len(features)))
    manifest = publish(
        estimator,
        registry=args.registry,
        name=args.name,
        version=args.version,
        features=features,
        task=args.task,
        check_rows=rows,
        description=args.description,
    )
    print(f"published {manifest.name} {manifest.version} ({manifest.runtime})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

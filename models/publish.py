r"""Publish a model version to a running service over HTTP and wait for its publish job to end.

Usage::

    python -m models.publish model.skops --name iris --version 1.1.0 --task classification \
        --features sepal_length,sepal_width,petal_length,petal_width --reference rows.csv \
        --url http://127.0.0.1:8000            # admin key from INFER_ADMIN_KEY, or --key

A feature may carry its type (``name:number``, ``name:integer``, ``text:string``); number is the
default. Exit status: 0 published, 1 the worker refused the model (the reason is printed), 2 bad
command line, 3 the service refused the upload, 4 no answer or no end within --timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from inference_client import ApiError, Client, InferenceError

EXIT_PUBLISHED, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 2, 3, 4
TYPES = ("number", "integer", "string")


def features_of(text: str) -> list[dict[str, str]]:
    """Return the metadata's features from ``name[:type],...``, or raise ValueError naming a bad one."""
    features = []
    for item in text.split(","):
        name, _, kind = item.strip().partition(":")
        if not name or (kind and kind not in TYPES):
            raise ValueError(f"{item!r}: write name or name:type, type one of {', '.join(TYPES)}")
        features.append({"name": name, "type": kind or "number"})
    return features


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.publish",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="exit status: 0 published, 1 model refused, 2 bad command line, 3 upload refused, 4 no answer",
    )
    parser.add_argument(
        "artifact", type=Path, help="the model: .skops or .onnx (.joblib/.pkl with --allow-pickle)"
    )
    parser.add_argument("--name", required=True, help="the model's name (a new name makes a new model)")
    parser.add_argument("--version", required=True, help="the new version, major.minor.patch")
    parser.add_argument("--features", required=True, help="comma-separated, in input order, each name[:type]")
    parser.add_argument("--task", choices=["classification", "regression"], required=True)
    parser.add_argument("--labels", help="comma-separated classes, in the order of the estimator's classes_")
    parser.add_argument(
        "--reference", type=Path, help="a CSV of rows like the training data, header = features"
    )
    parser.add_argument("--description", default="")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="take a joblib/pickle file (loading it runs code)"
    )
    parser.add_argument(
        "--url", default=os.environ.get("INFER_API", "http://127.0.0.1:8000"), help="the service"
    )
    parser.add_argument(
        "--key", default=os.environ.get("INFER_ADMIN_KEY"), help="an admin key (or INFER_ADMIN_KEY)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job to end")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Upload the artifact with its metadata, wait for the publish job, and print how it ended."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        features = features_of(args.features)
    except ValueError as exc:
        parser.error(f"--features {exc}")
    if not args.key:
        parser.error("an admin key is needed: pass --key or set INFER_ADMIN_KEY")
    metadata: dict[str, Any] = {
        "version": args.version, "task": args.task, "features": features, "description": args.description,
        "allow_pickle": args.allow_pickle,
    }  # fmt: skip
    if args.labels:
        metadata["labels"] = [label.strip() for label in args.labels.split(",")]
    with Client(args.url, args.key) as client:
        try:
            job = client.publish(args.name, args.artifact, metadata, args.reference)
            print(f"uploaded: publish job {job.id}; waiting for it to end", file=sys.stderr)
            job.wait(args.timeout)
        except ApiError as exc:
            reasons = "".join(
                f"\n  {d.get('field')}: {d.get('reason')}" for d in exc.details if isinstance(d, dict)
            )
            print(f"refused ({exc.status} {exc.code}): {exc.message}{reasons}", file=sys.stderr)
            return EXIT_REFUSED
        except (InferenceError, OSError) as exc:
            print(f"no answer: {exc}", file=sys.stderr)
            return EXIT_NO_ANSWER
    if job.status != "succeeded":
        error = job.error or {}
        print(f"{job.status} ({error.get('code')}): {error.get('message')}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps((job.data.get("outputs") or [{}])[0]))
    return EXIT_PUBLISHED


if __name__ == "__main__":
    sys.exit(main())

"""`infer publish`: upload a model version with its metadata and follow its publish job to the end."""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from inference_client._core import Model
from inference_client.cli_errors import (
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    UsageError,
    documented_command,
)
from inference_client.client import Client, Job
from inference_client.errors import NotFound, WaitTimeout
from inference_client.progress import EventsProgress

TYPES = ("number", "integer", "string")
PICKLES = (".joblib", ".pkl")
DESCRIPTION = """\
Upload a trained model as a new version of MODEL and wait while a worker checks it: it loads the
artifact (trusted types only), predicts the reference rows, converts it to ONNX when the two agree,
freezes the reference for drift, and lists the version. Needs an admin key (--key, or
INFER_ADMIN_KEY).

For a new version of an existing model, its features, task and labels are those of the model's
default version unless you give others. A new model needs --features (or --reference, whose
header names them) and --task. A new version gets no traffic until `infer route` sends it some."""
EXAMPLES = """\
examples:
  infer publish iris iris-forest.skops --version 1.1.0 --reference iris-rows.csv
                  a retrained iris: same features and labels as the one served now
  infer publish churn churn.skops --version 0.1.0 --task classification \\
        --features tenure:integer,monthly_charges,plan:string --labels stay,leave
                  a new model: its features in training order, labels in classes_ order
  infer publish iris model.onnx --version 1.2.0 --metadata meta.json
                  the metadata of the upload from a JSON file (options given override it)
  infer publish iris old.joblib --version 1.0.1 --allow-pickle
                  a joblib/pickle file: loading it runs code, so say so

meta.json holds what the options give, e.g.:
  {"version": "1.2.0", "task": "classification", "description": "iris, retrained",
   "features": [{"name": "sepal_length", "type": "number"}, ...],
   "labels": ["setosa", "versicolor", "virginica"]}"""
# What the job's status means while a version is published.
_STAGES = {
    "queued": "waiting for a worker",
    "running": "a worker is checking, converting and storing it",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `publish` command to the command line's subcommands."""
    cmd = documented_command(
        sub, "publish", "publish a trained model as a new version (admin)", DESCRIPTION, EXAMPLES
    )
    cmd.add_argument(
        "model", metavar="MODEL", help="the model's name; a name not served yet makes a new model"
    )
    cmd.add_argument(
        "artifact",
        metavar="ARTIFACT",
        type=Path,
        help="the trained model: .skops or .onnx (.joblib/.pkl with --allow-pickle)",
    )
    cmd.add_argument("--version", metavar="X.Y.Z", help="the new version, major.minor.patch (e.g. 1.1.0)")
    cmd.add_argument(
        "--features",
        metavar="NAMES",
        help="the features in training order, comma-separated, each NAME or NAME:TYPE "
        "(TYPE number, integer or string; number when left out)",
    )
    cmd.add_argument("--task", choices=["classification", "regression"], help="what the model predicts")
    cmd.add_argument(
        "--labels",
        metavar="LABELS",
        help="a classifier's classes, comma-separated, in the order of its classes_",
    )
    cmd.add_argument("--description", metavar="TEXT", help="one line about this version")
    cmd.add_argument(
        "--reference",
        type=Path,
        metavar="FILE.csv",
        help="a CSV of rows like the training data (header = feature names)",
    )
    cmd.add_argument(
        "--metadata",
        type=Path,
        metavar="FILE.json",
        help="the upload's metadata as a JSON file (see the API docs)",
    )
    cmd.add_argument(
        "--allow-pickle", action="store_true", help="accept a .joblib/.pkl file: loading it runs its code"
    )
    cmd.add_argument(
        "--timeout", type=float, default=600.0, metavar="SECONDS", help="stop waiting after this many s (600)"
    )


def run(client: Client, out: Console, err: Console, args: argparse.Namespace) -> int:
    """Upload the version, follow its publish job, and say how it ended and what to do next."""
    sent = [args.artifact] + ([args.reference] if args.reference else [])
    size = sum(_size(path) for path in sent)
    known = _known(client, args.model)
    metadata = _metadata(args, known)
    if args.artifact.suffix.lower() in PICKLES and not metadata.get("allow_pickle"):
        raise UsageError(
            f"{args.artifact} is a joblib/pickle file: loading it runs whatever code it holds. Add "
            "--allow-pickle if you trust it; better, save the model with skops (skops.io.dump)."
        )
    version = metadata["version"]
    if known is not None and not args.metadata and not args.features:
        err.print(
            f"Using the features, task and labels of {known.name} {known.version}, the version served now "
            "(--features, --task and --labels give others)."
        )
    names = " and ".join(str(path) for path in sent)
    err.print(f"Uploading {names} ({_human(size)}) as {args.model} {version}…")
    job = client.publish(args.model, args.artifact, metadata, args.reference)
    err.print(f"Uploaded. Publish job {job.id} is {job.status}. Ctrl-C stops watching, not the job.")
    try:
        _follow(job, err, args.timeout, f"{args.model} {version}")
    except KeyboardInterrupt:
        err.print(
            f"[yellow]Stopped watching.[/] Publish job {job.id} keeps going on the service; "
            f"`infer models {args.model}` lists the version once it is published."
        )
        return EXIT_INTERRUPTED
    if job.status != "succeeded":
        error = job.error or {}
        err.print(
            f"[bold red]Not published:[/] {error.get('message') or job.status} "
            f"({error.get('code', job.status)})"
        )
        err.print("Check the artifact, --features (in training order) and --labels (in classes_ order).")
        return EXIT_JOB_FAILED
    done = next(iter(job.outputs()), {})
    sha = str(done.get("sha256", ""))[:12]
    out.print(
        f"[green]Published[/] {args.model} {version} (runtime {done.get('runtime', '?')}, sha256 {sha}…)."
    )
    if done.get("runtime") != "onnx" and not args.reference:
        out.print(
            "Served by scikit-learn: without --reference rows it is not converted to ONNX, nor watched "
            "for drift."
        )
    out.print(_next_step(client, args.model, version, known is None), soft_wrap=True)
    return EXIT_OK


def _known(client: Client, model: str) -> Model | None:
    """Return the model's default version as the service describes it, or None for a new model."""
    try:
        return client.model(model)
    except NotFound:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None


def _human(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{max(1, round(size / 1e3))} kB"


def _metadata(args: argparse.Namespace, known: Model | None) -> dict[str, Any]:
    """Return the upload's metadata: the served model's, then the --metadata file's, then the options'."""
    metadata: dict[str, Any] = {}
    if known is not None:
        props = known.input_schema.get("properties", {})
        metadata["features"] = [
            {"name": f, "type": props.get(f, {}).get("type", "number")} for f in known.features
        ]
        metadata.update(task=known.task, description=known.description)
        if known.labels:
            metadata["labels"] = known.labels
    if args.metadata:
        metadata.update(_read_json(args.metadata))
    given = {
        "version": args.version,
        "task": args.task,
        "description": args.description,
        "features": _features(args.features) if args.features else None,
        "labels": [label.strip() for label in args.labels.split(",")] if args.labels else None,
    }
    metadata.update({k: v for k, v in given.items() if v is not None})
    if args.allow_pickle:
        metadata["allow_pickle"] = True
    if "features" not in metadata and args.reference:
        metadata["features"] = [{"name": name, "type": "number"} for name in _header(args.reference)]
    missing = [option for option, key in (("--version", "version"), ("--features", "features"),
               ("--task", "task")) if not metadata.get(key)]  # fmt: skip
    if missing:
        new = "" if known is not None else f"{args.model} is a new model: "
        raise UsageError(
            f"{new}give {', '.join(missing)} (or --metadata FILE.json); see `infer publish --help`."
        )
    return metadata


def _features(text: str) -> list[dict[str, str]]:
    """Return the metadata's features from `NAME[:TYPE],...`; a bad item is a usage error naming it."""
    found = []
    for item in text.split(","):
        name, _, kind = item.strip().partition(":")
        if not name or kind not in ("", *TYPES):
            raise UsageError(
                f"--features: {item!r} is not NAME or NAME:TYPE with TYPE one of {', '.join(TYPES)}."
            )
        found.append({"name": name, "type": kind or "number"})
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}.") from None
    if not isinstance(found, dict):
        raise UsageError(f"{path} must hold a JSON object: version, task, features, …")
    return found


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="") as f:
            return [name.strip() for name in next(csv.reader(f), [])]
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None


def _follow(job: Job, err: Console, timeout: float, what: str) -> None:
    """Show a spinner and each change of the job's status until it ends."""
    deadline = time.monotonic() + timeout
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(f"Publishing {what}")
        status = ""
        for seen in EventsProgress(job, timeout):
            if seen.status != status and seen.status in _STAGES:
                status = seen.status
                bar.console.print(f"  {status}: {_STAGES[status]}")
                bar.update(task, description=f"Publishing {what}: {_STAGES[status]}")
            if time.monotonic() > deadline and not seen.terminal:
                raise WaitTimeout(job.id, timeout)


def _next_step(client: Client, model: str, version: str, new: bool) -> str:
    """Say what the new version serves now and the command that sends it traffic."""
    if new:
        return f"It is the first version of {model}, so its default: `infer models {model}` describes it."
    routes = {v: w for v, w in client.routing(model).routes.items() if w > 0}
    if len(routes) == 1:
        (current,) = routes
        send = f"infer route {model} {current}=90 {version}=10"
    else:
        send = (
            f"infer route {model} … {version}=10   (the weights sum to 100; `infer route {model}` shows them)"
        )
    return f"It gets no traffic yet. To send it 10 % of new jobs:\n  {send}"

"""The `infer` command line: list models, predict a CSV file with a progress bar, list and cancel jobs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from inference_client._core import Retry
from inference_client.client import Client, Job
from inference_client.errors import (
    ApiError,
    Conflict,
    InferenceError,
    InvalidInput,
    JobFailed,
    NotFound,
    RateLimited,
    ServiceUnreachable,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from inference_client.progress import EventsProgress, ProgressSource

DEFAULT_API = "http://127.0.0.1:8000"

# One exit code per kind of failure, so scripts can tell them apart (listed in --help).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAUTHORIZED = 3
EXIT_NOT_FOUND = 4
EXIT_INVALID_INPUT = 5
EXIT_CONFLICT = 6
EXIT_BUSY = 7
EXIT_UNAVAILABLE = 8
EXIT_JOB_FAILED = 9
EXIT_TIMEOUT = 10
EXIT_INTERRUPTED = 130

EPILOG = f"""\
The service's address and key come from --api/--key, else from the environment:
  export INFER_API={DEFAULT_API}     # where `make run` serves
  export INFER_API_KEY=...                  # the key `make run` prints

examples:
  infer models                              what can I predict with, and what does it take?
  infer models iris                         one model's features and outputs
  infer predict breast-cancer rows.csv -o out.csv
                                            predict every row of a CSV file (header = feature names)
  infer jobs --status running               my jobs, newest first
  infer cancel JOB_ID                       stop a queued or running job

exit codes: 0 ok, 2 bad command line, 3 key missing or wrong, 4 no such model or job,
5 input refused, 6 conflict (e.g. job already ended), 7 service busy (retry later),
8 service unreachable or unavailable, 9 job failed/canceled/expired, 10 timed out, 130 interrupted.
"""


class _CountColumn(ProgressColumn):
    """Records done of the total, with thousands separators."""

    def render(self, task: Task) -> Text:
        total = f"{task.total:,.0f}" if task.total is not None else "?"
        return Text(f"{task.completed:,.0f}/{total} records", style="green")


class _RateColumn(ProgressColumn):
    """Records a second, from the bar's recent updates."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(f"{speed:,.0f} records/s" if speed else "- records/s", style="cyan")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infer",
        description="Predict with the inference service's models from the command line.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", default=os.environ.get("INFER_API", DEFAULT_API), help="service URL")
    parser.add_argument("--key", default=os.environ.get("INFER_API_KEY"), help="API key (or INFER_API_KEY)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models = sub.add_parser("models", help="list the models, or describe one", description="List the models.")
    models.add_argument("name", nargs="?", help="a model to describe: its features and outputs")

    predict = sub.add_parser(
        "predict",
        help="predict every row of a CSV file into another CSV file",
        description=(
            "Send FILE (a CSV whose header names the model's features) as one job, show its progress, "
            "and write one output row per input row to OUTPUT. Ctrl-C stops watching, not the job: "
            "the job id is kept in OUTPUT.job, and running the same command again picks the job up "
            "instead of submitting a second one."
        ),
    )
    predict.add_argument("model", help="the model's name, e.g. iris (see `infer models`)")
    predict.add_argument("file", type=Path, help="the input CSV file")
    predict.add_argument("-o", "--output", type=Path, required=True, help="where to write the outputs (CSV)")
    predict.add_argument("--timeout", type=float, default=None, help="give up waiting after this many s")

    jobs = sub.add_parser("jobs", help="list your jobs, newest first", description="List your jobs.")
    jobs.add_argument("--status", help="queued, running, succeeded, failed, canceled or expired")
    jobs.add_argument("--model", help="only this model's jobs")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    cancel = sub.add_parser("cancel", help="cancel a queued or running job", description="Cancel a job.")
    cancel.add_argument("job", help="the job's id (see `infer jobs`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = _parser().parse_args(argv)
    # A shell script that starts this in the background hands it SIGINT ignored: take Ctrl-C back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out = Console()
    err = Console(stderr=True)
    # Fewer tries than the library: a person at a terminal wants to hear soon that nobody answers.
    client = Client(args.api, args.key, retry=Retry(attempts=3))
    try:
        if args.command == "models":
            return _models(client, out, args.name)
        if args.command == "predict":
            return _predict(client, err, args)
        if args.command == "jobs":
            return _jobs(client, out, args.status, args.model, args.limit)
        return _cancel(client, out, args.job)
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted.[/]")
        return EXIT_INTERRUPTED
    except InferenceError as exc:
        code, message = _explain(exc, args)
        err.print(f"[bold red]error:[/] {message}", highlight=False)
        return code
    finally:
        client.close()


def _explain(exc: InferenceError, args: argparse.Namespace) -> tuple[int, str]:
    """Return the exit code and a message saying what went wrong and what to do next."""
    if isinstance(exc, ApiError):
        said = f"{exc.message} ({exc.status} {exc.code})"
        details = "".join(f"\n  - {_detail(d)}" for d in exc.details[:10])
        if len(exc.details) > 10:
            details += f"\n  … and {len(exc.details) - 10} more"
        if isinstance(exc, Unauthorized):
            hint = "Set INFER_API_KEY (or --key) to a key of this service: `make run` prints one."
            return EXIT_UNAUTHORIZED, f"{said}\n{hint}"
        if isinstance(exc, NotFound):
            return (
                EXIT_NOT_FOUND,
                f"{said}\nSee `infer models` for the models and `infer jobs` for your jobs.",
            )
        if isinstance(exc, InvalidInput) and exc.code == "payload_too_large":
            hint = "The file is larger than the service takes in one request: split it into smaller files."
            return EXIT_INVALID_INPUT, f"{said}\n{hint}"
        if isinstance(exc, InvalidInput):
            hint = "Fix the records named above; `infer models MODEL` shows the features expected."
            return EXIT_INVALID_INPUT, f"{said}{details}\n{hint}"
        if isinstance(exc, Conflict):
            return EXIT_CONFLICT, f"{said}{details}"
        if isinstance(exc, RateLimited):
            wait = f" in {exc.retry_after:g} s" if exc.retry_after is not None else " later"
            return EXIT_BUSY, f"{said}\nThe service is busy: try again{wait}."
        if isinstance(exc, Unavailable):
            return EXIT_UNAVAILABLE, f"{said}{details}\nThe service cannot take work now: try again shortly."
        return EXIT_ERROR, f"{said}{details}"
    if isinstance(exc, ServiceUnreachable):
        return (
            EXIT_UNAVAILABLE,
            f"No answer from {args.api}. Is the service running (`make run`)? Is --api right?",
        )
    if isinstance(exc, JobFailed):
        reason = exc.error.get("message") or exc.status
        return EXIT_JOB_FAILED, f"Job {exc.job_id} ended {exc.status}: {reason}"
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT, f"{exc}. Run the same command again to keep waiting."
    return EXIT_ERROR, str(exc)


def _detail(detail: Any) -> str:
    if not isinstance(detail, dict):
        return str(detail)
    where = []
    if detail.get("index") is not None:
        where.append(f"record {detail['index']}")
    if detail.get("field") is not None:
        where.append(f"field {detail['field']}")
    return f"{', '.join(where) or 'request'}: {detail.get('reason', '')}"


def _models(client: Client, out: Console, name: str | None) -> int:
    if name is not None:
        model = client.model(name)
        out.print(f"[bold]{model.name}[/] {model.version} ({model.task}): {model.description}")
        out.print(f"versions: {', '.join(model.versions)}")
        props = model.input_schema.get("properties", {})
        out.print("features, in the order a CSV header or an array record gives them:")
        for feature in model.features:
            out.print(f"  {feature}: {props.get(feature, {}).get('type', '?')}")
        if model.labels:
            out.print(f"labels: {', '.join(model.labels)}")
        return EXIT_OK
    table = Table("model", "default version", "versions", "task", "description")
    for model in client.models():
        table.add_row(model.name, model.version, ", ".join(model.versions), model.task, model.description)
    out.print(table)
    out.print("`infer models NAME` shows a model's features: the columns a CSV file for it needs.")
    return EXIT_OK


def _jobs(client: Client, out: Console, status: str | None, model: str | None, limit: int) -> int:
    table = Table("id", "model", "version", "status", "records", "created")
    for job in client.jobs(status=status, model=model, limit=limit):
        p = job.progress
        table.add_row(
            job.id, job.model, job.version, job.status, f"{p.done}/{p.total}", job.data.get("created_at")
        )
    out.print(table)
    return EXIT_OK


def _cancel(client: Client, out: Console, job_id: str) -> int:
    job = client.job(job_id).cancel()
    out.print(f"Job {job.id} is {job.status}.")
    return EXIT_OK


def _predict(client: Client, err: Console, args: argparse.Namespace) -> int:
    output: Path = args.output
    state = output.with_name(output.name + ".job")
    try:
        job = _resume(client, err, state, args) or _submit(client, err, state, args)
        _show_progress(EventsProgress(job, args.timeout), err, args.timeout)
        if job.status != "succeeded":
            state.unlink(missing_ok=True)  # a rerun should submit afresh
            raise JobFailed(job.id, job.status, job.error)
        started = time.monotonic()
        part = output.with_name(output.name + ".part")
        with part.open("wb") as f:
            for chunk in job.outputs_csv():
                f.write(chunk)
        part.replace(output)
        state.unlink(missing_ok=True)
    except KeyboardInterrupt:
        saved = json.loads(state.read_text()) if state.exists() else {}
        if saved.get("job"):
            err.print(
                f"[yellow]Stopped watching.[/] Job {saved['job']} keeps running on the service. Run the "
                f"same command again to pick it up (its id is in {state}); `infer cancel {saved['job']}` "
                "stops it."
            )
        elif saved:
            err.print(
                f"[yellow]Stopped while sending.[/] Run the same command again: it sends the file with the "
                f"same Idempotency-Key (kept in {state}), so the service makes no second job."
            )
        return EXIT_INTERRUPTED
    total = job.progress.total
    took = time.monotonic() - started
    err.print(
        f"[green]Done:[/] {total:,} outputs of job {job.id} written to {output} ({took:.1f} s to download)."
    )
    return EXIT_OK


def _resume(client: Client, err: Console, state: Path, args: argparse.Namespace) -> Job | None:
    """Return the job kept in the state file, or None when there is none to resume."""
    if not state.exists():
        return None
    saved = json.loads(state.read_text())
    if saved.get("model") != args.model or saved.get("input") != str(args.file.resolve()):
        raise InferenceError(
            f"{state} belongs to another run ({saved.get('model')} on {saved.get('input')}). "
            f"Choose another -o, or delete {state} to start afresh."
        )
    if saved.get("job") is None:
        # Interrupted while submitting: sending the same body with the same key finds that job if made.
        err.print(f"Resuming an interrupted submit (state in {state}): no second job will be made.")
        return _submit(client, err, state, args, saved["idempotency_key"])
    err.print(f"Resuming job {saved['job']} (state in {state}): waiting for it, not submitting again.")
    try:
        return client.job(saved["job"])
    except NotFound:
        raise InferenceError(
            f"Job {saved['job']} from {state} is unknown to the service (expired, or another key). "
            f"Delete {state} to submit again."
        ) from None


def _submit(
    client: Client, err: Console, state: Path, args: argparse.Namespace, key: str | None = None
) -> Job:
    """Submit the file as a job, keeping its key and then its id in the state file."""
    key = key or str(uuid.uuid4())
    saved: dict[str, Any] = {"model": args.model, "input": str(args.file.resolve()), "idempotency_key": key}
    _write_state(state, saved)
    try:
        body = args.file.read_bytes()
    except OSError as exc:
        state.unlink(missing_ok=True)
        raise InferenceError(f"Cannot read {args.file}: {exc.strerror}.") from None
    err.print(f"Sending {args.file} ({len(body) / 1e6:,.1f} MB) to {args.model}…", highlight=False)
    try:
        job = client.submit_csv(args.model, body, idempotency_key=key)
    except ApiError:
        state.unlink(missing_ok=True)  # refused: nothing was made, nothing to resume
        raise
    _write_state(state, {**saved, "job": job.id})
    err.print(
        f"Submitted job {job.id}: {job.progress.total:,} records for {job.model} {job.version}. "
        f"Ctrl-C stops watching, not the job; rerunning this command resumes it."
    )
    return job


def _write_state(state: Path, saved: dict[str, Any]) -> None:
    tmp = state.with_name(state.name + ".tmp")
    tmp.write_text(json.dumps(saved) + "\n")
    tmp.replace(state)


def _show_progress(source: ProgressSource, err: Console, timeout: float | None) -> None:
    """Draw the job's progress (records done of total, records/s, ETA) until it ends."""
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        _CountColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, speed_estimate_period=10) as bar:
        task = None
        for job in source:
            p = job.progress
            if task is None:
                task = bar.add_task(job.status, total=p.total or None)
            bar.update(task, completed=p.done, total=p.total or None, description=job.status)
            if deadline is not None and time.monotonic() > deadline and not job.terminal:
                raise WaitTimeout(job.id, timeout or 0.0)


if __name__ == "__main__":
    sys.exit(main())

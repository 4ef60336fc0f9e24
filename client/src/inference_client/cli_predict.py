"""`infer predict`: send a CSV file as one job, draw its progress, write its outputs; resumable on Ctrl-C."""

from __future__ import annotations

import argparse
import json
import time
import uuid
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
from rich.text import Text

from inference_client.cli_errors import EXIT_INTERRUPTED, EXIT_OK
from inference_client.client import Client, Job
from inference_client.errors import ApiError, InferenceError, JobFailed, NotFound, WaitTimeout
from inference_client.progress import EventsProgress, ProgressSource


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `predict` command to the command line's subcommands."""
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


def run(client: Client, err: Console, args: argparse.Namespace) -> int:
    """Predict the file's rows into the output file, resuming the job of an interrupted run."""
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
    err.print(f"Sending {args.file} ({len(body) / 1e6:,.1f} MB) to {args.model}…")
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

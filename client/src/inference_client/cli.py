"""The `infer` command line: models, predictions with a progress bar, jobs; publish, route, retire (admin)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from inference_client import cli_predict, cli_publish, cli_route
from inference_client._core import Retry
from inference_client.cli_errors import EXIT_CODES, EXIT_INTERRUPTED, EXIT_OK, explain
from inference_client.client import Client
from inference_client.errors import InferenceError

DEFAULT_API = "http://127.0.0.1:8000"
# The commands of an admin key, which INFER_ADMIN_KEY is sent for when set (showing a routing needs none).
ADMIN_COMMANDS = frozenset({"publish", "route", "retire"})
KEY_HELP = "API key (else INFER_API_KEY; publish, route and retire take INFER_ADMIN_KEY first)"

EPILOG = f"""\
The service's address and key come from --api/--key, else from the environment:
  export INFER_API={DEFAULT_API}     # where `make run` serves
  export INFER_API_KEY=...                  # the user key `make run` prints
  export INFER_ADMIN_KEY=...                # the admin key it prints: publish, route and retire use it

examples:
  infer models                              what can I predict with, and what does it take?
  infer models iris                         one model's features and outputs
  infer predict breast-cancer rows.csv -o out.csv
                                            predict every row of a CSV file (header = feature names)
  infer jobs --status running               my jobs, newest first
  infer cancel JOB_ID                       stop a queued or running job

shipping models (an admin key; `infer COMMAND --help` tells more):
  infer publish iris forest.skops --version 1.1.0 --reference rows.csv
                                            publish a retrained iris as version 1.1.0
  infer route iris                          how iris's new jobs split among its versions
  infer route iris 1.0.0=90 1.1.0=10        send 10 % of them to 1.1.0
  infer retire iris 1.0.0                   retire a version no traffic goes to

{EXIT_CODES}
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infer",
        description="Predict with the inference service's models from the command line, and ship new ones.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", default=os.environ.get("INFER_API", DEFAULT_API), help="service URL")
    parser.add_argument("--key", help=KEY_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models = sub.add_parser("models", help="list the models, or describe one", description="List the models.")
    models.add_argument("name", nargs="?", help="a model to describe: its features and outputs")

    cli_predict.add_parser(sub)

    jobs = sub.add_parser("jobs", help="list your jobs, newest first", description="List your jobs.")
    jobs.add_argument("--status", help="queued, running, succeeded, failed, canceled or expired")
    jobs.add_argument("--model", help="only this model's jobs")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    cancel = sub.add_parser("cancel", help="cancel a queued or running job", description="Cancel a job.")
    cancel.add_argument("job", help="the job's id (see `infer jobs`)")

    cli_publish.add_parser(sub)
    cli_route.add_parsers(sub)
    for command in sub.choices.values():  # after the command too, as people often type them
        command.add_argument("--api", default=argparse.SUPPRESS, help="service URL (or INFER_API)")
        command.add_argument("--key", default=argparse.SUPPRESS, help=KEY_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = _parser().parse_args(argv)
    # A shell script that starts this in the background hands it SIGINT ignored: take Ctrl-C back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # No guessing at what to colour: it would paint "1.0" of a version 1.0.0 and not the rest.
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    # Fewer tries than the library: a person at a terminal wants to hear soon that nobody answers.
    client = Client(args.api, _key(args), retry=Retry(attempts=3))
    try:
        return _run(client, out, err, args)
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted.[/]")
        return EXIT_INTERRUPTED
    except InferenceError as exc:
        code, message = explain(exc, args)
        err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # a command in it stays whole
        return code
    finally:
        client.close()


def _key(args: argparse.Namespace) -> str | None:
    """Return the key to send: --key, else INFER_ADMIN_KEY for an admin command, else INFER_API_KEY."""
    if args.key:
        return str(args.key)
    admin = os.environ.get("INFER_ADMIN_KEY") if args.command in ADMIN_COMMANDS else None
    return admin or os.environ.get("INFER_API_KEY")


def _run(client: Client, out: Console, err: Console, args: argparse.Namespace) -> int:
    """Run the command named on the command line."""
    if args.command == "models":
        return _models(client, out, args.name)
    if args.command == "predict":
        return cli_predict.run(client, err, args)
    if args.command == "jobs":
        return _jobs(client, out, args.status, args.model, args.limit)
    if args.command == "publish":
        return cli_publish.run(client, out, err, args)
    if args.command == "route":
        return cli_route.route(client, out, args)
    if args.command == "retire":
        return cli_route.retire(client, out, args)
    return _cancel(client, out, args.job)


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


if __name__ == "__main__":
    sys.exit(main())

"""The command line's shared words: exit codes, each error with what to do next, commands with examples."""

from __future__ import annotations

import argparse
from typing import Any

from inference_client.errors import (
    ApiError,
    Conflict,
    Forbidden,
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

EXIT_CODES = """\
exit codes: 0 ok, 2 bad command line, 3 key missing or wrong, or not an admin key where one is needed,
4 no such model, version or job, 5 input refused, 6 conflict (e.g. job already ended, version routed),
7 service busy (retry later), 8 service unreachable or unavailable, 9 job failed/canceled/expired
(a publish refused by the worker too), 10 timed out, 130 interrupted."""

# What to do next, by command ({model} is the command's model): about refused input, a conflict, a 404.
_INPUT_HINTS = {
    "predict": "Fix the records named above; `infer models {model}` shows the features expected.",
    "publish": "Fix what is named above (`infer publish --help` tells each option) and publish again.",
    "route": "Name published versions with whole weights summing to 100; `infer route {model}` lists them.",
}
_CONFLICT_HINTS = {
    "publish": "Publish under a new --version; `infer models {model}` lists the versions taken.",
    "retire": (
        "`infer route {model}` shows what is routed. Send its new jobs elsewhere first "
        "(`infer route {model} OTHER_VERSION=100`, with --no-shadow for a shadow), then retire it."
    ),
}
_NOT_FOUND_HINTS = {
    "publish": "",
    "route": "`infer models` lists the models, `infer models {model}` a model's versions.",
    "retire": "`infer models` lists the models, `infer models {model}` a model's versions.",
}


class UsageError(InferenceError):
    """The command line asks for something it cannot do as written (exit code 2)."""


def explain(exc: InferenceError, args: argparse.Namespace) -> tuple[int, str]:
    """Return the exit code and a message saying what went wrong and what to do next."""
    api, command = args.api, args.command
    if isinstance(exc, ApiError):
        return _explain_answer(exc, command, str(getattr(args, "model", None) or "MODEL"))
    if isinstance(exc, UsageError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ServiceUnreachable):
        return EXIT_UNAVAILABLE, f"No answer from {api}. Is the service running (`make run`)? Is --api right?"
    if isinstance(exc, JobFailed):
        reason = exc.error.get("message") or exc.status
        return EXIT_JOB_FAILED, f"Job {exc.job_id} ended {exc.status}: {reason}"
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT, f"{exc}. Run the same command again to keep waiting."
    return EXIT_ERROR, str(exc)


def _explain_answer(exc: ApiError, command: str, model: str) -> tuple[int, str]:
    said = f"{exc.message} ({exc.status} {exc.code})"
    details = "".join(f"\n  - {_detail(d)}" for d in exc.details[:10])
    if len(exc.details) > 10:
        details += f"\n  … and {len(exc.details) - 10} more"
    if isinstance(exc, Forbidden):
        hint = (
            f"`infer {command}` needs an admin key: pass --key ADMIN_KEY or set INFER_ADMIN_KEY "
            "(`make run` prints an admin key beside the user key)."
        )
        return EXIT_UNAUTHORIZED, f"{said}\n{hint}"
    if isinstance(exc, Unauthorized):
        hint = "Set INFER_API_KEY (or --key) to a key of this service: `make run` prints one."
        return EXIT_UNAUTHORIZED, f"{said}\n{hint}"
    if isinstance(exc, NotFound):
        hint = _NOT_FOUND_HINTS.get(
            command, "See `infer models` for the models and `infer jobs` for your jobs."
        )
        return EXIT_NOT_FOUND, f"{said}\n{hint.format(model=model)}".rstrip()
    if isinstance(exc, InvalidInput) and exc.code == "payload_too_large":
        hint = "The file is larger than the service takes in one request"
        hint += ": split it into smaller files." if command == "predict" else "."
        return EXIT_INVALID_INPUT, f"{said}\n{hint}"
    if isinstance(exc, InvalidInput):
        hint = _INPUT_HINTS.get(command, "Fix what is named above and try again.")
        return EXIT_INVALID_INPUT, f"{said}{details}\n{hint.format(model=model)}"
    if isinstance(exc, Conflict):
        hint = _CONFLICT_HINTS.get(command, "")
        return EXIT_CONFLICT, f"{said}{details}\n{hint.format(model=model)}".rstrip()
    if isinstance(exc, RateLimited):
        wait = f" in {exc.retry_after:g} s" if exc.retry_after is not None else " later"
        return EXIT_BUSY, f"{said}\nThe service is busy: try again{wait}."
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE, f"{said}{details}\nThe service cannot take work now: try again shortly."
    return EXIT_ERROR, f"{said}{details}"


def _detail(detail: Any) -> str:
    if not isinstance(detail, dict):
        return str(detail)
    where = []
    if detail.get("index") is not None:
        where.append(f"record {detail['index']}")
    if detail.get("field") is not None:
        where.append(f"field {detail['field']}")
    return f"{', '.join(where) or 'request'}: {detail.get('reason', '')}"


def documented_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, description: str,
    examples: str,
) -> argparse.ArgumentParser:  # fmt: skip
    """Add a subcommand whose --help shows its description and examples as written."""
    return sub.add_parser(
        name, help=summary, description=description, epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip

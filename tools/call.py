"""One request to the API with your key, without curl: ``python -m tools.call METHOD PATH [BODY]``.

The key comes from ``KEY`` and the API's address from ``API`` (``http://127.0.0.1:8000`` unless
set), the variables of the README's walk-through. BODY is JSON, or ``@FILE`` to send a file
(as ``text/csv`` when its name ends in ``.csv``); ``-H 'Name: value'`` adds a header. The answer's
status line goes to standard error and its body to standard output; the exit status is 0 for a
2xx answer, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from http.client import HTTPResponse
from pathlib import Path

DEFAULT_API = "http://127.0.0.1:8000"
# Longer than the longest wait a request may ask for (INFER_MAX_WAIT_S, 60 s by default).
TIMEOUT_S = 120


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.call", description=__doc__.split("\n")[0])
    parser.add_argument("method", help="GET or POST")
    parser.add_argument("path", help="a path of the API, such as /v1/models, or a whole URL")
    parser.add_argument("body", nargs="?", help="JSON, or @FILE to send a file")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value', repeatable")
    return parser.parse_args(argv)


def build_request(args: argparse.Namespace, environ: dict[str, str]) -> urllib.request.Request:
    """Return the request the arguments and the environment (KEY, API) describe."""
    url = args.path if "://" in args.path else environ.get("API", DEFAULT_API).rstrip("/") + args.path
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"not an http or https URL: {url}")
    headers = {"Authorization": f"Bearer {environ['KEY']}"} if environ.get("KEY") else {}
    data: bytes | None = None
    if args.body is not None:
        if args.body.startswith("@"):
            path = Path(args.body[1:])
            data = path.read_bytes()
            headers["Content-Type"] = "text/csv" if path.suffix == ".csv" else "application/json"
        else:
            data = args.body.encode()
            headers["Content-Type"] = "application/json"
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    method = args.method.upper()
    return urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (http(s) only)


def _show(response: HTTPResponse | urllib.error.HTTPError) -> None:
    print(f"HTTP {response.status} {response.reason}", file=sys.stderr, flush=True)
    last = b"\n"
    while chunk := response.read(65536):  # streamed: a job's outputs may be large
        sys.stdout.buffer.write(chunk)
        last = chunk[-1:]
    if last != b"\n":  # a JSON answer has no final newline: keep the shell's prompt on its own line
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    """Send the request and print the answer; return 0 for a 2xx answer."""
    request = build_request(_arguments(argv), dict(os.environ))
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
            _show(response)
            return 0
    except urllib.error.HTTPError as error:  # a 4xx or 5xx: its error body says why
        with error:
            _show(error)
        return 1
    except OSError as exc:
        print(f"no answer from {request.full_url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Webhook receivers for tests: real HTTP servers on loopback that answer, fail, redirect or hang."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tools.stack import free_port, wait_until


@dataclass(frozen=True)
class Received:
    """One POST a receiver got: its headers (names in lower case), its body and when it came."""

    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """Answers each POST with the next status of a script (the last one repeats), recording what came."""

    def __init__(self, statuses: Sequence[int] = (200,), location: str | None = None) -> None:
        self.statuses = list(statuses)
        self.received: list[Received] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with owner._lock:
                    owner.received.append(Received(headers, body, time.time()))
                    status = owner.statuses[min(len(owner.received), len(owner.statuses)) - 1]
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        """Return the URL of a path on this receiver."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def posts(self, event: str | None = None) -> list[Received]:
        """Return the POSTs received so far, of one event when named."""
        with self._lock:
            return [r for r in self.received if event is None or r.headers.get("webhook-event") == event]

    def wait_for(self, count: int, timeout: float, event: str | None = None) -> list[Received]:
        """Wait until count POSTs (of the event) came and return them."""
        wait_until(lambda: len(self.posts(event)) >= count, timeout, f"{count} webhook POST(s)")
        return self.posts(event)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """Accepts connections and reads what comes, but never answers; counts connections open at once."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.accepted = 0
        self.open_now = 0
        self.most_open = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        """Return the URL of a path on this receiver."""
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):  # read until the sender gives up and closes
                pass
        with self._lock:
            self.open_now -= 1

    def close(self) -> None:
        """Stop accepting."""
        self.listener.close()


def closed_port_url() -> str:
    """Return a URL on loopback where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/hook"

"""Redis over TLS: the API and workers reach a TLS-only redis-server through a rediss:// URL."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import Api
from tools.stack import Stack, free_port


def _certificates(folder: Path) -> Path:
    """Make a throwaway CA and a server certificate for 127.0.0.1 with openssl."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return folder


def test_the_whole_path_runs_over_tls_with_a_password(
    stack_factory: Callable[..., Stack], tmp_path: Path, api_base: str
) -> None:
    """A job submitted to an API on a TLS-only, password-protected Redis is predicted by a TLS worker."""
    stack = stack_factory()
    port = free_port()
    url = stack.start_redis(port, password="tls-secret", tls=_certificates(tmp_path))
    assert url.startswith("rediss://")
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, password="tls-secret", socket_connect_timeout=1, socket_timeout=1).ping()
    api = Api(stack.start_api(free_port()))
    stack.start_worker("worker-tls", 1)
    job = api.submit("iris", [[6.2, 2.9, 4.3, 1.3]], wait=30).json()
    assert job["status"] == "succeeded"
    assert job["outputs"][0]["label"] == "versicolor"

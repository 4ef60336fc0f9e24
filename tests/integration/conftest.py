"""Integration tests: the real service of tests/conftest.py (its helpers importable here) and an S3 server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.s3 import SeaweedS3
from tests.service import (
    ADMIN_KEY,
    KEY,
    OTHER_KEY,
    REDELIVERY_S,
    RESTORE_INTERVAL_S,
    VISIBILITY_TIMEOUT_S,
    Api,
    error_of,
    stack_env,
)

__all__ = [
    "ADMIN_KEY",
    "KEY",
    "OTHER_KEY",
    "REDELIVERY_S",
    "RESTORE_INTERVAL_S",
    "VISIBILITY_TIMEOUT_S",
    "Api",
    "error_of",
    "stack_env",
]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """Start one SeaweedFS with its S3 gateway for the session, shared by the tests that need one."""
    server = SeaweedS3.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()

"""The integration tests use the real service of tests/conftest.py; its helpers, importable from here too."""

from __future__ import annotations

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

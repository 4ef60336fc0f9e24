"""The client's tests run against the real service of tests/conftest.py, the one the integration tests use."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
import redis
from inference_client import Client
from sklearn.datasets import load_breast_cancer

from tests.service import KEY, OTHER_KEY

__all__ = ["KEY", "OTHER_KEY", "breast_cancer_csv"]


@pytest.fixture
def client(api_base: str, clean_redis: redis.Redis) -> Iterator[Client]:
    """Return a client of the session's service, with no jobs in Redis."""
    with Client(api_base, KEY) as made:
        yield made


@functools.cache
def _breast_cancer_lines() -> tuple[str, tuple[str, ...]]:
    """Return the header naming the breast-cancer model's 30 features and scikit-learn's rows, as lines."""
    data = load_breast_cancer()
    header = ",".join(n.replace(" ", "_") for n in data.feature_names)
    return header, tuple(",".join(f"{v:g}" for v in row) for row in data.data)


def breast_cancer_csv(rows: int) -> bytes:
    """Return a CSV of the breast-cancer model's 30 features: scikit-learn's rows repeated to `rows`."""
    header, lines = _breast_cancer_lines()  # each row formatted once, not once a repeat
    whole, part = divmod(rows, len(lines))
    return ("\n".join([header, *lines * whole, *lines[:part]]) + "\n").encode()

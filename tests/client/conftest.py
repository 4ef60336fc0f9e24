"""The client's tests run against the real service of tests/conftest.py, the one the integration tests use."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
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


def breast_cancer_csv(rows: int) -> bytes:
    """Return a CSV of the breast-cancer model's 30 features: scikit-learn's rows repeated to `rows`."""
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    table = np.resize(data.data, (rows, data.data.shape[1]))
    lines = [",".join(names)]
    lines.extend(",".join(f"{v:g}" for v in row) for row in table)
    return ("\n".join(lines) + "\n").encode()

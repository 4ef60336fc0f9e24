"""Session-wide fixtures: the example models trained once into a temporary registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.train import train_breast_cancer, train_iris, train_scam_email
from shared.registry import Registry
from shared.storage import LocalStorage


@pytest.fixture(scope="session")
def registry_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train and publish the three example models into a registry of the test session's own."""
    root = tmp_path_factory.mktemp("registry")
    for train in (train_iris, train_breast_cancer, train_scam_email):
        train(root)
    return root


@pytest.fixture(scope="session")
def registry(registry_path: Path) -> Registry:
    """Return a registry reading the session's trained models."""
    found = Registry(LocalStorage(registry_path))
    found.refresh()
    return found

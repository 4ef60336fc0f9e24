"""Helpers of tests that ship models from the client and the web page: a stack of their own, a model.

Publishing, routing and retiring change the registry and the routings, so these tests run on a stack
of their own: a copy of the session's registry and a Redis of their own (routings live in Redis), so
nothing they do reaches the session's service or the other tests.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier

from tools.stack import Stack, free_port, http_status, wait_until

LOADERS = {"iris": load_iris, "breast-cancer": load_breast_cancer}


def own_stack(stack_factory: Callable[..., Stack], registry_path: Path, folder: Path) -> str:
    """Start Redis, a worker and an API on a copy of the session's registry; return the API's URL."""
    root = folder / "registry"
    shutil.copytree(registry_path, root)
    stack = stack_factory(INFER_REGISTRY_PATH=str(root))
    stack.start_redis(free_port())  # the stack's processes are started with its URL from here on
    stack.start_worker("worker-shipping", 1)
    base = stack.start_api(free_port())
    wait_until(lambda: http_status(base + "/readyz") == 200, 90, "a worker on the shipping stack")
    return base


def feature_names(model: str) -> list[str]:
    """Return the model's feature names as the example registry names them (`mean_radius`, `sepal_length`)."""
    if model == "iris":
        return ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return [name.strip().lower().replace(" ", "_") for name in load_breast_cancer().feature_names]


def small_forest(model: str, folder: Path) -> tuple[Path, Path]:
    """Train a five-tree forest on the model's scikit-learn data; write it (skops) and reference rows."""
    data = LOADERS[model]()
    labels = np.asarray(data.target_names)[data.target]
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0, n_jobs=1)
    forest.fit(data.data, labels)
    folder.mkdir(parents=True, exist_ok=True)
    artifact, reference = folder / f"{model}-forest.skops", folder / f"{model}-rows.csv"
    sio.dump(forest, artifact)
    with reference.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(feature_names(model))
        writer.writerows(data.data[::3].tolist())
    return artifact, reference

"""Train the three example models and publish them into a registry folder (``make models``).

They go through the publish task's own steps (worker/publishing.py): trusted types, the ONNX check
within its tolerance, the reference statistics frozen (from the training rows; the text model's from
held-out texts), the manifest last.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from shared.registry import Registry
from shared.storage import LocalStorage
from worker.publishing import publish_estimator

EMAILS = Path(__file__).with_name("data") / "emails.csv"
SEED = 7


def _feature_name(raw: str) -> str:
    return raw.strip().lower().replace(" ", "_")


def _accuracy(model: Pipeline, rows: Any, labels: Any) -> dict[str, float]:
    return {"test_accuracy": round(float(np.mean(model.predict(rows) == labels)), 4)}


def _folder(root: Path) -> Registry:
    return Registry(LocalStorage(root))


def train_iris(registry: Path) -> None:
    """Train StandardScaler + LogisticRegression on iris and publish it as ``iris``."""
    data = load_iris()
    features = [_feature_name(f).removesuffix("_(cm)") for f in data.feature_names]
    labels = np.asarray(data.target_names)[data.target]
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, labels, test_size=0.3, random_state=SEED, stratify=labels
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    publish_estimator(
        model,
        _folder(registry),
        name="iris",
        version="1.0.0",
        features=features,
        task="classification",
        reference=x_train,
        replace=True,
        description="Iris species from sepal and petal sizes in cm (StandardScaler + LogisticRegression).",
        metrics=_accuracy(model, x_test, y_test),
    )


def train_breast_cancer(registry: Path) -> None:
    """Train a 100-tree RandomForest on breast-cancer and publish it."""
    data = load_breast_cancer()
    features = [_feature_name(f) for f in data.feature_names]
    labels = np.asarray(data.target_names)[data.target]
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, labels, test_size=0.3, random_state=SEED, stratify=labels
    )
    # Trees need no scaling, and without it ONNX computes exactly what scikit-learn does (both in float32).
    model = make_pipeline(RandomForestClassifier(n_estimators=100, random_state=SEED, n_jobs=1))
    model.fit(x_train, y_train)
    publish_estimator(
        model,
        _folder(registry),
        name="breast-cancer",
        version="1.0.0",
        features=features,
        task="classification",
        reference=x_train,
        replace=True,
        description="Malignant or benign tumour from 30 cell-nucleus measurements (RandomForest, 100 trees).",
        metrics=_accuracy(model, x_test, y_test),
    )


def train_scam_email(registry: Path) -> None:
    """Train TF-IDF + LogisticRegression on the project's email corpus and publish it."""
    with EMAILS.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts = np.asarray([r["text"] for r in rows], dtype=object)
    labels = np.asarray([r["label"] for r in rows])
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.25, random_state=SEED, stratify=labels
    )
    model = make_pipeline(
        TfidfVectorizer(lowercase=True, ngram_range=(1, 1), min_df=1, sublinear_tf=True),
        LogisticRegression(max_iter=1000, C=10.0),
    )
    model.fit(list(x_train), y_train)
    publish_estimator(
        model,
        _folder(registry),
        name="scam-email",
        version="1.0.0",
        features=["text"],
        task="classification",
        # Held-out texts: the vocabulary was learned from the training texts, so their share of
        # unknown words is 0 and ordinary traffic would always look drifted against them.
        reference=list(x_test),
        replace=True,
        description="Tells scam emails from ordinary ones (TF-IDF + LogisticRegression).",
        metrics=_accuracy(model, list(x_test), y_test),
    )


def main(argv: list[str] | None = None) -> int:
    """Train and publish every example model into the registry folder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", type=Path, default=Path("models/registry"))
    args = parser.parse_args(argv)
    args.registry.mkdir(parents=True, exist_ok=True)
    for train in (train_iris, train_breast_cancer, train_scam_email):
        train(args.registry)
        print(f"{train.__name__.removeprefix('train_')}: published")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The scikit-learn runtime: serves an estimator from skops (known types only) or, if declared, joblib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import skops.io as sio

from shared.chunks import Records
from shared.errors import ModelLoadError
from shared.registry import SKOPS_TRUSTED_TYPES, Manifest
from worker.runtimes.base import Scores, as_matrix


class SklearnPredictor:
    """Scores with a scikit-learn estimator loaded from a skops (or declared joblib) file."""

    def __init__(self, manifest: Manifest, artifact: Path) -> None:
        self.manifest = manifest
        if manifest.artifact_format == "joblib" and manifest.executes_code_on_load:
            # Its sha256 matched the manifest's before this point: it is the file that was published.
            self._estimator: Any = joblib.load(artifact)
            return
        if manifest.artifact_format != "skops":
            raise ModelLoadError(
                f"{manifest.name} {manifest.version}: cannot load a {manifest.artifact_format} file"
            )
        untrusted = sio.get_untrusted_types(file=artifact)
        refused = sorted(set(untrusted) - SKOPS_TRUSTED_TYPES)
        if refused:
            raise ModelLoadError(
                f"{manifest.name} {manifest.version}: the skops file holds untrusted types {refused[:5]}"
            )
        self._estimator = sio.load(artifact, trusted=untrusted)

    @property
    def estimator(self) -> Any:
        """Return the loaded estimator (drift counting reads a text vectorizer's vocabulary from it)."""
        return self._estimator

    def scores(self, records: Records) -> Scores:
        """Return class probabilities or values, one row a record."""
        rows = as_matrix(self.manifest, records)
        feed: Any = rows[:, 0].tolist() if self.manifest.is_text else rows.astype(np.float64)
        if self.manifest.task == "classification":
            return np.asarray(self._estimator.predict_proba(feed), dtype=np.float64)
        return np.asarray(self._estimator.predict(feed), dtype=np.float64).reshape(len(rows), 1)

"""The scikit-learn runtime: serves an estimator stored with skops, trusting only known types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio

from shared.errors import ModelLoadError
from shared.registry import Manifest
from worker.runtimes.base import as_matrix, format_outputs

# skops refuses any type not trusted; these are the libraries whose types an estimator may hold.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.", "builtins.", "collections.")


class SklearnPredictor:
    """Predicts with a scikit-learn estimator loaded from a skops file."""

    def __init__(self, manifest: Manifest, artifact: Path) -> None:
        if manifest.artifact_format != "skops":
            raise ModelLoadError(f"{manifest.name} {manifest.version}: only skops files are loaded")
        untrusted = sio.get_untrusted_types(file=artifact)
        refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
        if refused:
            raise ModelLoadError(
                f"{manifest.name} {manifest.version}: artifact holds untrusted types {refused[:5]}"
            )
        self.manifest = manifest
        self._estimator: Any = sio.load(artifact, trusted=untrusted)

    def predict(self, records: list[Any]) -> list[dict[str, Any]]:
        """Return one output per record, in order."""
        if not records:
            return []
        rows = as_matrix(self.manifest, records)
        if self.manifest.is_text:
            feed: Any = rows[:, 0].tolist()
        else:
            feed = rows.astype(np.float64)
        if self.manifest.task == "classification":
            scores = np.asarray(self._estimator.predict_proba(feed))
        else:
            scores = np.asarray(self._estimator.predict(feed))
        return format_outputs(self.manifest, scores)

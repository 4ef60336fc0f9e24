"""The ONNX runtime: serves a model converted at publish time with onnxruntime, one thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from shared.registry import Manifest
from worker.runtimes.base import as_matrix, format_outputs


class OnnxPredictor:
    """Predicts with an onnxruntime session pinned to one thread, as one of many worker processes."""

    def __init__(self, manifest: Manifest, artifact: Path) -> None:
        options = ort.SessionOptions()
        # Workers scale by processes: one thread each keeps them from fighting for cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.manifest = manifest
        self._session = ort.InferenceSession(
            str(artifact), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        wanted = 1 if manifest.task == "classification" else 0
        self._output = self._session.get_outputs()[wanted].name

    def predict(self, records: list[Any]) -> list[dict[str, Any]]:
        """Return one output per record, in order."""
        if not records:
            return []
        (scores,) = self._session.run([self._output], {self._input: as_matrix(self.manifest, records)})
        return format_outputs(self.manifest, np.asarray(scores))

"""The ONNX runtime: serves a model converted at publish time with onnxruntime, one thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from shared.chunks import Records
from shared.registry import Manifest
from worker.runtimes.base import Scores, as_matrix


class OnnxPredictor:
    """Scores with an onnxruntime session pinned to one thread, as one of many worker processes."""

    def __init__(self, manifest: Manifest, artifact: Path) -> None:
        options = ort.SessionOptions()
        # Workers scale by processes: one thread each keeps them from fighting for cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # What fails is raised with its reason (and recorded at publish): no second copy on stderr.
        options.log_severity_level = 4
        self.manifest = manifest
        self._session = ort.InferenceSession(
            str(artifact), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        wanted = 1 if manifest.task == "classification" else 0
        self._output = self._session.get_outputs()[wanted].name

    def scores(self, records: Records) -> Scores:
        """Return class probabilities or values, one row a record."""
        (found,) = self._session.run([self._output], {self._input: as_matrix(self.manifest, records)})
        return np.asarray(found, dtype=np.float64).reshape(len(records), -1)

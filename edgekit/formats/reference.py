"""The reference: the loaded model's own forward pass (tf_keras, Keras 3 or SavedModel)."""

from __future__ import annotations

import numpy as np

from edgekit.formats.runner import Runner


class ReferenceRunner(Runner):
    format = "keras"

    def __init__(self, forward):
        self.forward = forward

    def _run(self, batch: np.ndarray) -> np.ndarray:
        from edgekit.support.keras_compat import tensorflow

        return np.asarray(self.forward(tensorflow().constant(batch)))

"""The Keras reference: the tf_keras working model, run in inference mode."""

from __future__ import annotations

import numpy as np

from edgekit.runtime import Runner


class KerasRunner(Runner):
    format = "keras"

    def __init__(self, keras_model):
        self.model = keras_model

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))

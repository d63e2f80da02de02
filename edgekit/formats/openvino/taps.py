"""Layer outputs of an OpenVINO IR, added as model outputs and read in f32."""

from __future__ import annotations

import numpy as np


class Taps:
    def __init__(self, model, taps: list):
        import openvino as ov

        # Each tap is found again as the Result that reads it: tensor names will not do, since the
        # CPU plugin fuses a conv with its bias and FakeQuantize and the fused output carries every
        # name of the three, and the order of add_outputs' results is not the order asked for.
        model.add_outputs(taps)
        reads = {(r.input_value(0).get_node().get_friendly_name(), r.input_value(0).get_index()): i
                 for i, r in enumerate(model.get_results())}
        self.compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.outputs = [self.compiled.outputs[reads[(t.get_node().get_friendly_name(), t.get_index())]] for t in taps]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        result = self.compiled(batch.astype(np.float32, copy=False))
        return [result[o] for o in self.outputs]

"""Percentile and MSE activation ranges for ONNX Runtime's static quantization.

ONNX Runtime's own Percentile and Entropy calibrators keep every calibration batch's
intermediate outputs in memory before histogramming them (gigabytes on MobileNetV2 at 224²).
edgekit instead streams: one pass for each tensor's min/max, one for its histogram, one batch
at a time, then hands the chosen ranges to quantize_static as `TensorQuantOverrides` (rmin/rmax),
its documented way to set a tensor's range; everything else stays ONNX Runtime's MinMax path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.formats.ranges import Histograms


def activation_overrides(prepared: str, calibration: str, input_name: str, method: str) -> tuple[dict, dict]:
    """TensorQuantOverrides giving every float activation of `prepared` `method`'s range over the
    calibration data, and {"tensors": n, "narrowed": k}."""
    from edgekit.formats.onnx.export import calibration_batch

    session, names = _session_with_every_activation(prepared, input_name)
    x = np.load(calibration)
    size = calibration_batch(x.shape[1:])
    batches = [x[i:i + size] for i in range(0, len(x), size)]
    limits: dict[str, tuple[float, float]] = {}
    for values in _activations(session, names, input_name, batches):
        for name, v in values.items():
            lo, hi = limits.get(name, (np.inf, -np.inf))
            limits[name] = (min(lo, float(v.min())), max(hi, float(v.max())))
    histograms = Histograms(limits)
    for values in _activations(session, names, input_name, batches):
        for name, v in values.items():
            histograms.add(name, v)
    chosen = histograms.ranges(method)
    overrides = {name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for name, (lo, hi) in chosen.items()}
    return overrides, histograms.narrowed(chosen)


def _session_with_every_activation(prepared: str, input_name: str):
    """An ONNX Runtime session of `prepared` that also outputs every float intermediate tensor."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(prepared)
    known = {o.name for o in model.graph.output}
    produced = {name for node in model.graph.node for name in node.output}  # value_info may name stale tensors
    floats = [v for v in model.graph.value_info
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name in produced]
    model.graph.output.extend(v for v in floats if v.name not in known)
    path = Path.cwd() / "ranges-augmented.onnx"
    onnx.save(model, str(path), save_as_external_data=model.ByteSize() > 1_500_000_000)
    del model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return session, names


def _activations(session, names: list[str], input_name: str, batches: list[np.ndarray]):
    for batch in batches:
        outputs = session.run(names, {input_name: batch})
        yield {input_name: batch, **dict(zip(names, outputs))}

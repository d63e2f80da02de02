"""Store QAT weights as int8 in an ONNX graph from tf2onnx.

tf2onnx turns tfmot's activation fake-quant ops into QuantizeLinear → DequantizeLinear pairs
(the learned ranges), but constant-folds the weight fake-quant: the weights arrive as float32
values already on tfmot's int8 grid (per-channel, symmetric, narrow range: scale =
max|w| / 127), so the file is as large as fp32 and ONNX Runtime runs float kernels.
Re-expressing each such weight as int8 → DequantizeLinear recovers the exact values and
gives the QDQ form ONNX Runtime fuses into integer Conv/MatMul kernels.
"""

from __future__ import annotations

import numpy as np

# Weight input and the axis of its output channels, per op: Conv is OIHW, MatMul is (K, N).
WEIGHT_AXIS = {"Conv": 0, "MatMul": 1}


def _per_channel_scale(weight: np.ndarray, axis: int) -> np.ndarray:
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    return np.maximum(np.max(np.abs(weight), axis=reduce) / 127.0, np.finfo(np.float32).tiny).astype(np.float32)


def store_weights_int8(model) -> int:
    """Rewrite float weight initializers of Conv/MatMul as int8 + DequantizeLinear, in place.
    Return how many weights were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    rewritten = 0
    new_nodes = []
    for node in graph.node:
        axis = WEIGHT_AXIS.get(node.op_type)
        init = initializers.get(node.input[1]) if axis is not None and len(node.input) > 1 else None
        if init is None or init.data_type != 1:  # 1 = FLOAT
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(init)
        scale = _per_channel_scale(weight, axis)
        shape = [1] * weight.ndim
        shape[axis] = scale.size
        q = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = f"{init.name}_int8"
        graph.initializer.extend([numpy_helper.from_array(q, base),
                                  numpy_helper.from_array(scale, f"{base}_scale"),
                                  numpy_helper.from_array(np.zeros(scale.size, np.int8), f"{base}_zero_point")])
        new_nodes.append(helper.make_node("DequantizeLinear", [base, f"{base}_scale", f"{base}_zero_point"],
                                          [f"{base}_dequantized"], axis=axis))
        node.input[1] = f"{base}_dequantized"
        new_nodes.append(node)
        rewritten += 1
    _drop_unused_initializers(graph, new_nodes)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return rewritten


def _drop_unused_initializers(graph, nodes) -> None:
    used = {name for node in nodes for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)

"""Keep a model's large weights out of tf2onnx, then put them back in the ONNX file.

tf2onnx copies constants many times while it rewrites a graph: VGG16's 528 MB of weights
drove it past 22 GiB. Converting a graph whose large constants are placeholders costs it
almost nothing; the weights are then attached as initializers, and the layout transposes
tf2onnx put in front of them (TensorFlow's HWIO kernels → ONNX's OIHW) are applied to the
arrays once, so the file is the one tf2onnx would have written.
"""

from __future__ import annotations

import numpy as np

LARGE_CONSTANT_BYTES = 1 << 20  # smaller constants stay: tf2onnx folds them where it must


def lift_large_constants(graph_def):
    """A copy of graph_def whose float Consts of ≥ LARGE_CONSTANT_BYTES are Placeholders
    (the shared graph is left as it is: the next converter needs it whole), and the lifted
    values by tensor name ("name:0")."""
    from tensorflow.core.framework import graph_pb2, tensor_shape_pb2, types_pb2
    from tensorflow.python.framework import tensor_util

    lifted, out = {}, graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        tensor = node.attr["value"].tensor if node.op == "Const" else None
        if (tensor is None or node.attr["dtype"].type != types_pb2.DT_FLOAT
                or len(tensor.tensor_content) < LARGE_CONSTANT_BYTES):
            out.node.add().CopyFrom(node)
            continue
        value = tensor_util.MakeNdarray(tensor)
        placeholder = out.node.add(name=node.name, op="Placeholder")
        placeholder.attr["dtype"].type = types_pb2.DT_FLOAT
        placeholder.attr["shape"].shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape]))
        lifted[f"{node.name}:0"] = value
    return out, lifted


def attach_weights(model, weights: dict[str, np.ndarray]) -> None:
    """Make the lifted inputs initializers again and fold the transposes applied to them."""
    from onnx import numpy_helper

    graph = model.graph
    lifted = [i for i in graph.input if i.name in weights]
    for info in lifted:
        graph.input.remove(info)
    graph.initializer.extend(numpy_helper.from_array(weights[info.name], info.name) for info in lifted)
    _fold_initializer_transposes(graph)


def _fold_initializer_transposes(graph) -> None:
    from onnx import helper, numpy_helper

    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    kept = []
    for node in graph.node:
        source = initializers.get(node.input[0]) if node.op_type == "Transpose" and node.input else None
        if source is None:
            kept.append(node)
            continue
        perm = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"), None)
        value = numpy_helper.to_array(source)
        folded = numpy_helper.from_array(np.ascontiguousarray(np.transpose(value, perm)), node.output[0])
        graph.initializer.append(folded)
        initializers[folded.name] = folded
        consumers[source.name] -= 1
    del graph.node[:]
    graph.node.extend(kept)
    # drop the untransposed copies no node uses any more (rebuilt, not .remove(): that
    # compares whole tensors)
    used = [init for init in graph.initializer if consumers.get(init.name, 0) > 0]
    del graph.initializer[:]
    graph.initializer.extend(used)

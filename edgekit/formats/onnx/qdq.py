"""Turn tf2onnx's export of a QAT graph into the QDQ form ONNX Runtime runs on integer kernels.

tf2onnx turns tfmot's activation fake-quant ops into QuantizeLinear → DequantizeLinear pairs
(the learned ranges), but constant-folds the weight fake-quant: the weights arrive as float32
values already on tfmot's int8 grid (per-channel, symmetric, narrow range: scale =
max|w| / 127), so the file is as large as fp32 and ONNX Runtime runs float kernels.
Re-expressing each such weight as int8 → DequantizeLinear recovers the exact values.

That alone left QAT ONNX ~9× slower than PTQ ONNX of the same model: ONNX Runtime fuses
DQ → Conv/Gemm → Q into QLinearConv / QGemm only when the bias is int32 behind its own
DequantizeLinear (scale = input scale × weight scale) and a Dense is one Gemm, while tf2onnx
writes float biases and MatMul + Add. Both are rewritten here, as ONNX Runtime's own
quantizer writes them for PTQ.
"""

from __future__ import annotations

import numpy as np

# Weight input and the axis of its output channels, per op: Conv is OIHW, MatMul is (K, N).
WEIGHT_AXIS = {"Conv": 0, "MatMul": 1, "Gemm": 1}


def make_integer_ready(model) -> None:
    """The whole post-pass for a QAT export, in place: MatMul + bias Add → Gemm, weights int8,
    biases int32, ReLU absorbed by the quantizer after it, DequantizeLinear moved past shape-only
    ops so that each Conv/Gemm reads a DequantizeLinear directly."""
    fuse_matmul_add(model)
    store_weights_int8(model)
    absorb_relu_into_quantize(model)
    sink_dequantize(model)
    quantize_biases(model)  # last: a bias's scale is its input's scale (changed above) × the weight's
    _sort_topologically(model.graph)


SHAPE_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"}
_QMIN = {np.dtype(np.uint8): 0, np.dtype(np.int8): -128}  # the zero point that puts 0.0 at the bottom


def absorb_relu_into_quantize(model) -> int:
    """Relu → QuantizeLinear(s, z) becomes QuantizeLinear(s', qmin) with the same top,
    s' = s·(qmax − z)/(qmax − qmin): the quantizer then does the ReLU's job (nothing below 0)
    and still clips at the learned maximum (QAT trained with that clip). tfmot's moving-average
    ranges start at [−6, 6] and after short training still put z near 127; that zero point
    stops ONNX Runtime from removing the Relu, and with it the integer Conv/Gemm. The one
    difference: the grid over [0, max] is finer (s' ≈ s/2), so values round a little
    differently than in the QAT model (the QAT agreement check measures it)."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers = _consumers(graph)
    absorbed, drop = 0, set()
    for relu in graph.node:
        users = consumers.get(relu.output[0], []) if relu.op_type == "Relu" else []
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or len(users[0].input) < 3:
            continue
        q = users[0]
        scale, zero = initializers.get(q.input[1]), initializers.get(q.input[2])
        dqs = _dequantizers_of(q.output[0], consumers)
        if scale is None or zero is None or not dqs:
            continue
        s, z = numpy_helper.to_array(scale), numpy_helper.to_array(zero)
        if s.size != 1 or z.dtype not in _QMIN:
            continue
        qmin, qmax = _QMIN[z.dtype], np.iinfo(z.dtype).max
        top = float(qmax - int(z)) * float(s)
        if top <= 0:
            continue
        names = (f"{q.output[0]}_relu_scale", f"{q.output[0]}_relu_zero_point")
        graph.initializer.extend([numpy_helper.from_array(np.array(top / (qmax - qmin), s.dtype), names[0]),
                                  numpy_helper.from_array(np.array(qmin, z.dtype), names[1])])
        for node in (q, *dqs):
            node.input[1], node.input[2] = names
        q.input[0] = relu.input[0]
        drop.add(id(relu))
        absorbed += 1
    _keep_nodes(graph, [n for n in graph.node if id(n) not in drop])
    return absorbed


def _dequantizers_of(name: str, consumers: dict) -> list | None:
    """The DequantizeLinear nodes reading an integer tensor, through shape-only ops; None if
    anything else reads it (then its zero point and scale cannot be changed)."""
    found, todo = [], [name]
    while todo:
        for node in consumers.get(todo.pop(), []):
            if node.op_type == "DequantizeLinear":
                found.append(node)
            elif node.op_type in SHAPE_OPS:
                todo.append(node.output[0])
            else:
                return None
    return found or None


def sink_dequantize(model) -> int:
    """DequantizeLinear (per-tensor) → Reshape/Transpose/… becomes the shape op on the integer
    tensor, then DequantizeLinear: the shape ops move values, not change them."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    moved = 0
    changed = True
    while changed:
        changed = False
        consumers = _consumers(graph)
        for dq in graph.node:
            if dq.op_type != "DequantizeLinear" or dq.input[1] not in initializers:
                continue
            if numpy_helper.to_array(initializers[dq.input[1]]).size != 1:
                continue
            users = consumers.get(dq.output[0], [])
            if len(users) != 1 or users[0].op_type not in SHAPE_OPS or users[0].input[0] != dq.output[0]:
                continue
            shape_op = users[0]
            integer_out = f"{shape_op.output[0]}_quantized"
            shape_op.input[0] = dq.input[0]
            dq.input[0], dq.output[0], shape_op.output[0] = integer_out, shape_op.output[0], integer_out
            moved += 1
            changed = True
            break
    return moved


def _keep_nodes(graph, nodes) -> None:
    _drop_unused_initializers(graph, nodes)
    del graph.node[:]
    graph.node.extend(nodes)


def _sort_topologically(graph) -> None:
    """Nodes in an order where each runs after what it reads (the rewrites moved some)."""
    produced_by = {out: i for i, node in enumerate(graph.node) for out in node.output}
    waiting_on = [{produced_by[name] for name in node.input if name in produced_by} for node in graph.node]
    readers: dict[int, list[int]] = {}
    for i, sources in enumerate(waiting_on):
        for source in sources:
            readers.setdefault(source, []).append(i)
    ready = [i for i, sources in enumerate(waiting_on) if not sources]
    order = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for reader in readers.get(i, []):
            waiting_on[reader].discard(i)
            if not waiting_on[reader]:
                ready.append(reader)
    if len(order) != len(graph.node):
        raise ValueError("the ONNX graph has a cycle after the QDQ rewrite")
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph) -> dict:
    found: dict = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def fuse_matmul_add(model) -> int:
    """MatMul(A 2-D, B constant) → Add(constant (N,)) becomes one Gemm: what a Keras Dense is."""
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in shape_inference.infer_shapes(model).graph.value_info}
    ranks.update({v.name: len(v.type.tensor_type.shape.dim) for v in graph.input})
    initializers = {init.name: init for init in graph.initializer}
    producers, consumers = _producers(graph), _consumers(graph)
    fused, drop = 0, set()
    for node in list(graph.node):
        if node.op_type != "MatMul" or ranks.get(node.input[0]) != 2:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        bias_name = next((name for name in add.input if name != node.output[0]), None)
        bias = initializers.get(bias_name)
        weight = producers.get(node.input[1])
        if bias is None or numpy_helper.to_array(bias).ndim != 1 or (weight is None and node.input[1] not in initializers):
            continue
        gemm = helper.make_node("Gemm", [node.input[0], node.input[1], bias_name], list(add.output),
                                name=f"{node.name}_gemm")
        graph.node.insert(list(graph.node).index(node), gemm)
        drop.update({id(node), id(add)})
        fused += 1
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    return fused


def quantize_biases(model) -> int:
    """Float biases of Conv/Gemm whose input and weight come through DequantizeLinear become
    int32 (scale = input scale × weight scale, zero point 0) behind a DequantizeLinear."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = _producers(graph)
    rewritten, nodes = 0, []
    for node in graph.node:
        has_bias = node.op_type in ("Conv", "Gemm") and len(node.input) > 2
        bias = initializers.get(node.input[2]) if has_bias else None
        x_dq, w_dq = (producers.get(node.input[0]), producers.get(node.input[1])) if has_bias else (None, None)
        if bias is None or bias.data_type != 1 or not _is_dq(x_dq) or not _is_dq(w_dq):
            nodes.append(node)
            continue
        x_scale = numpy_helper.to_array(initializers[x_dq.input[1]]).astype(np.float64)
        w_scale = numpy_helper.to_array(initializers[w_dq.input[1]]).astype(np.float64)
        if x_scale.size != 1:
            nodes.append(node)
            continue
        value = numpy_helper.to_array(bias).astype(np.float64)
        scale = (x_scale.reshape(()) * w_scale * np.ones_like(value)).astype(np.float32)
        q = np.clip(np.round(value / scale), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        dequantize = _dequantized(graph, f"{bias.name}_int32", q, scale, axis=0)
        node.input[2] = dequantize.output[0]
        nodes.extend([dequantize, node])
        rewritten += 1
    _keep_nodes(graph, nodes)
    return rewritten


def _dequantized(graph, base: str, q: np.ndarray, scale: np.ndarray, axis: int):
    """Store integer values q (zero point 0) with their scale; return the DequantizeLinear
    node that gives them back as float, named `{base}_dequantized`."""
    from onnx import helper, numpy_helper

    graph.initializer.extend([numpy_helper.from_array(q, base), numpy_helper.from_array(scale, f"{base}_scale"),
                              numpy_helper.from_array(np.zeros(scale.size, q.dtype), f"{base}_zero_point")])
    return helper.make_node("DequantizeLinear", [base, f"{base}_scale", f"{base}_zero_point"],
                            [f"{base}_dequantized"], axis=axis)


def _is_dq(node) -> bool:
    return node is not None and node.op_type == "DequantizeLinear" and len(node.input) >= 2


def _per_channel_scale(weight: np.ndarray, axis: int) -> np.ndarray:
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    return np.maximum(np.max(np.abs(weight), axis=reduce) / 127.0, np.finfo(np.float32).tiny).astype(np.float32)


def store_weights_int8(model) -> int:
    """Rewrite float weight initializers of Conv/MatMul as int8 + DequantizeLinear, in place.
    Return how many weights were rewritten."""
    from onnx import numpy_helper

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
        dequantize = _dequantized(graph, f"{init.name}_int8", q, scale, axis=axis)
        node.input[1] = dequantize.output[0]
        new_nodes.extend([dequantize, node])
        rewritten += 1
    _keep_nodes(graph, new_nodes)
    return rewritten


def _drop_unused_initializers(graph, nodes) -> None:
    used = {name for node in nodes for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)

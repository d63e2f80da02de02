"""Make a frozen GraphDef convertible by every converter: the one place for graph fixes.

- Keras traces a grouped convolution (`Conv2D(groups>1)`) into a function marked
  `_XlaMustCompile`; TensorFlow's own inliner skips such calls, so the frozen graph keeps a
  `PartitionedCall` that tf2onnx and OpenVINO cannot convert. Each call is replaced by the
  body of its function, renamed under the call's name, wired to its inputs and outputs.
- The exact GELU (Keras 3 ConvNeXt) traces to `Erfc`, which tf2onnx lacks: it becomes
  `1 - Erf(x)`, the same function.
Every converter starts from the graph `portable_graph` returns.

- A QAT graph fake-quantizes each kernel (`FakeQuantWithMinMaxVars[PerChannel]` on a
  constant). tf2onnx folds those itself, but only while the kernel is a constant: the ONNX
  export lifts large constants out of the graph first (edgekit.formats.onnx.weights), and a
  per-channel fake-quant on a lifted kernel is an op tf2onnx cannot convert (EfficientNetB0:
  two 1.5 MB kernels). `fold_constant_fake_quant` computes them beforehand.
"""

from __future__ import annotations

CALL_OPS = {"PartitionedCall", "StatefulPartitionedCall"}
MAX_ROUNDS = 32  # nested calls: a function body may itself call functions


def portable_graph(graph_def):
    """graph_def with the fixes above applied (in place: the caller's graph is a fresh trace)."""
    inline_calls(graph_def)
    replace_erfc(graph_def)
    return graph_def


FAKE_QUANT_OPS = {"FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel"}


def fold_constant_fake_quant(graph_def) -> int:
    """Every fake-quant op whose inputs are constants (through Identity) becomes a Const of its
    output, under its own name; returns how many. In place."""
    import tensorflow as tf
    from tensorflow.core.framework import node_def_pb2

    nodes = {n.name: n for n in graph_def.node}

    def constant(ref: str):
        node = nodes.get(ref.split(":")[0].lstrip("^"))
        while node is not None and node.op == "Identity":
            node = nodes.get(node.input[0].split(":")[0])
        return tf.make_ndarray(node.attr["value"].tensor) if node is not None and node.op == "Const" else None

    folded = 0
    for node in list(graph_def.node):
        if node.op not in FAKE_QUANT_OPS:
            continue
        values = [constant(ref) for ref in node.input[:3]]
        if any(v is None for v in values):
            continue
        op = (tf.quantization.fake_quant_with_min_max_vars_per_channel if node.op.endswith("PerChannel")
              else tf.quantization.fake_quant_with_min_max_vars)
        result = op(*values, num_bits=node.attr["num_bits"].i or 8, narrow_range=node.attr["narrow_range"].b)
        replacement = node_def_pb2.NodeDef(name=node.name, op="Const")
        replacement.attr["dtype"].type = node.attr["T"].type if "T" in node.attr else tf.float32.as_datatype_enum
        if replacement.attr["dtype"].type == 0:
            replacement.attr["dtype"].type = tf.float32.as_datatype_enum
        replacement.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(result.numpy()))
        node.CopyFrom(replacement)
        folded += 1
    return folded


def inline_calls(graph_def) -> None:
    """Inline every (Stateful)PartitionedCall of graph_def, recursively, in place."""
    out = graph_def
    functions = {f.signature.name: f for f in out.library.function}
    for _ in range(MAX_ROUNDS):
        calls = [n for n in out.node if n.op in CALL_OPS and n.attr["f"].func.name in functions]
        if not calls:
            break
        for call in calls:
            _inline_one(out, call, functions[call.attr["f"].func.name])
    _drop_unused_functions(out)


def replace_erfc(graph_def) -> None:
    """Erfc(x) → Sub(1, Erf(x)), in place; consumers keep the node's name."""
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2
    from tensorflow.python.framework import tensor_util

    added = []
    for node in graph_def.node:
        if node.op != "Erfc":
            continue
        dtype = node.attr["T"].type
        erf = node_def_pb2.NodeDef(name=f"{node.name}/erf", op="Erf", input=list(node.input))
        erf.attr["T"].CopyFrom(attr_value_pb2.AttrValue(type=dtype))
        one = node_def_pb2.NodeDef(name=f"{node.name}/one", op="Const")
        one.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=dtype))
        one.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=tensor_util.make_tensor_proto(1.0, dtype)))
        node.op = "Sub"
        del node.input[:]
        node.input.extend([one.name, erf.name])
        added += [erf, one]
    graph_def.node.extend(added)


def _inline_one(graph_def, call, fdef) -> None:
    from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def

    body, flat_names = function_def_to_graph_def(fdef)
    prefix = f"{call.name}/"
    data_inputs = [i for i in call.input if not i.startswith("^")]
    control_inputs = [i for i in call.input if i.startswith("^")]
    args = {arg.name: data_inputs[i] for i, arg in enumerate(fdef.signature.input_arg)}

    def rename(ref: str) -> str:
        control = ref.startswith("^")
        name, _, port = ref.lstrip("^").partition(":")
        if name in args:  # an argument placeholder: the caller's tensor
            return args[name] if not control else "^" + args[name].split(":")[0]
        renamed = prefix + name
        return ("^" + renamed) if control else (f"{renamed}:{port}" if port else renamed)

    new_nodes = []
    for node in body.node:
        if node.name in args:
            continue  # placeholders for arguments are replaced by the caller's inputs
        node.name = prefix + node.name
        inputs = [rename(i) for i in node.input]
        if not any(not i.startswith("^") for i in inputs):  # a source node runs after the call's controls
            inputs += control_inputs
        del node.input[:]
        node.input.extend(inputs)
        node.ClearField("device")
        new_nodes.append(node)
    outputs = [rename(flat_names[fdef.ret[arg.name]]) for arg in fdef.signature.output_arg]
    _rewire(graph_def, call.name, outputs)
    kept = [n for n in graph_def.node if n.name != call.name]
    del graph_def.node[:]
    graph_def.node.extend(kept + new_nodes)


def _rewire(graph_def, call_name: str, outputs: list[str]) -> None:
    """Point every consumer of call_name:i at the inlined output i."""
    for node in graph_def.node:
        for i, ref in enumerate(node.input):
            control = ref.startswith("^")
            name, _, port = ref.lstrip("^").partition(":")
            if name != call_name:
                continue
            target = outputs[int(port or 0)]
            node.input[i] = "^" + target.split(":")[0] if control else target


def _drop_unused_functions(graph_def) -> None:
    used = {n.attr["f"].func.name for n in graph_def.node if "f" in n.attr}
    for fdef in graph_def.library.function:
        used.update(n.attr["f"].func.name for n in fdef.node_def if "f" in n.attr)
    kept = [f for f in graph_def.library.function if f.signature.name in used]
    del graph_def.library.function[:]
    graph_def.library.function.extend(kept)

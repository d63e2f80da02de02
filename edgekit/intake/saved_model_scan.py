"""Refuse SavedModels whose graphs do more than compute, before TensorFlow loads them.

A SavedModel is a program: its functions can write files (WriteFile, PrintV2 to a file),
read them (ReadFile), call back into Python (PyFunc, EagerPyFunc) or run anything else
TensorFlow can. `tf.saved_model.load` runs initializers and the restore step, and the
reference run calls the serving function; so saved_model.pb is parsed here as plain
protobuf and every op of the main graph and of every function in the library is checked
against an allowlist of pure compute, control flow and in-memory variable ops.

The checkpoint machinery that tf.saved_model.save writes into every model
(`_traced_save`/`_traced_restore`: SaveV2, RestoreV2, MergeV2Checkpoints, …) is allowed only
in the functions and nodes that the saver itself uses and nothing else reaches, split by
role: loading runs the restore op (`saver_def.restore_op_name`), so what it reaches may only
read the model's own variables (RestoreV2 whose prefix is the saver's filename tensor, then
assignments); writing, merging and deleting checkpoints is allowed only on the save side,
which loading never runs. (A TF1 SavedModel whose restore op was a group holding a SaveV2
wrote a checkpoint wherever it named, without --trust-model.)
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import ModelError, first_line
from edgekit.intake.safety import Scan

MAX_SAVED_MODEL_PB_BYTES = 1 << 30  # protobuf's own limit is 2 GiB; real graphs are far smaller

# Pure tensor computation: the output depends only on the inputs; no files, no Python, no
# devices or queues. Curated from the op types of the keras.applications zoo (tf_keras and
# Keras 3 exports) plus the common math, nn, array and image ops.
PURE_OPS = frozenset("""
Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Atan Atan2 Atanh
AvgPool AvgPool3D BatchMatMul BatchMatMulV2 BatchMatMulV3 BatchToSpace BatchToSpaceND BiasAdd
BiasAddV1 Bitcast BroadcastArgs BroadcastGradientArgs BroadcastTo Cast Ceil ClipByValue Complex ComplexAbs Concat ConcatOffset ConcatV2 Conj ConjugateTranspose
Const Conv2D Conv2DBackpropFilter Conv2DBackpropInput Conv3D Conv3DBackpropInputV2 Cos Cosh
CropAndResize Cumprod Cumsum DepthToSpace DepthwiseConv2dNative DepthwiseConv2dNativeBackpropInput
Diag DiagPart Dilation2D Div DivNoNan Einsum Elu Equal Erf Erfc Exp ExpandDims Expm1 ExtractImagePatches
Fill Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 FusedPadConv2D
FusedResizeAndPadConv2D Gather GatherNd GatherV2 Greater GreaterEqual Identity IdentityN Imag
ImageProjectiveTransformV2 ImageProjectiveTransformV3 InTopKV2 Inv InvertPermutation IsFinite IsInf
IsNan L2Loss LRN LeakyRelu LeftShift Less LessEqual Lgamma LinSpace Log Log1p LogSoftmax LogicalAnd
LogicalNot LogicalOr MatMul MatrixBandPart MatrixDiag MatrixDiagPart MatrixDiagPartV3 MatrixDiagV3
MatrixSetDiag MatrixSetDiagV3 Max MaxPool MaxPool3D MaxPoolV2 MaxPoolWithArgmax Maximum Mean Min
Minimum MirrorPad Mod Mul MulNoNan Neg NextAfter NoOp NotEqual OneHot OnesLike Pack Pad PadV2
Placeholder PlaceholderWithDefault Pow PreventGradient Prod Range Rank Real RealDiv Reciprocal Relu
Relu6 Reshape ResizeArea ResizeBicubic ResizeBilinear ResizeNearestNeighbor Reverse ReverseV2
RightShift Rint Round Rsqrt ScaleAndTranslate ScatterNd Select SelectV2 Selu Shape ShapeN Sigmoid Sign
Sin Sinh Size Slice Snapshot Softmax Softplus Softsign SpaceToBatch SpaceToBatchND SpaceToDepth Split
SplitV Sqrt Square SquaredDifference Squeeze StopGradient StridedSlice Sub Sum Tan Tanh TensorScatterAdd
TensorScatterUpdate Tile TopKV2 Transpose TruncateDiv TruncateMod Unpack UnsortedSegmentSum Where
Xdivy Xlog1py Xlogy ZerosLike EnsureShape BitwiseAnd BitwiseOr BitwiseXor Invert
FakeQuantWithMinMaxArgs FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel
QuantizeAndDequantizeV2 QuantizeAndDequantizeV3 QuantizeAndDequantizeV4
StatelessRandomUniform StatelessRandomNormal StatelessRandomUniformV2 StatelessRandomNormalV2
StatelessTruncatedNormal StatelessTruncatedNormalV2 StatelessRandomUniformIntV2 StatelessRandomGetKeyCounter
StatelessRandomGetKeyCounterAlg
""".split())

# Stateful but harmless: calls into functions of this same library, control flow, variables
# that live in memory, random numbers (Dropout's training branch), and checks that only fail.
# (TensorFlow's own "stateless" flag is no guide: ReadFile, MatchingFiles, ImmutableConst and
# PyFuncStateless are all registered as stateless.)
STATEFUL_OPS = frozenset("""
PartitionedCall StatefulPartitionedCall If StatelessIf While StatelessWhile Case StatelessCase
VarHandleOp ReadVariableOp VarIsInitializedOp AssignVariableOp AssignAddVariableOp
AssignSubVariableOp ResourceGather DestroyResourceOp Assert VariableV2 Variable Assign AssignAdd AssignSub
RandomUniform RandomUniformInt RandomStandardNormal TruncatedNormal RngReadAndSkip StatelessRandomGetAlg
CheckNumerics CheckNumericsV2
""".split())

ALLOWED_OPS = PURE_OPS | STATEFUL_OPS

# What the saver's own functions need to write and read the variables checkpoint.
CHECKPOINT_OPS = frozenset("""
SaveV2 RestoreV2 MergeV2Checkpoints ShardedFilename ShardedFilespec StringJoin StaticRegexFullMatch
DisableCopyOnRead SaveSlices RestoreSlice Restore Save
""".split())

# Loading runs the restore side: it may read the variables checkpoint, nothing more.
RESTORE_OPS = frozenset({"RestoreV2", "RestoreSlice", "Restore"})

# Why a few well-known ops are refused (any other op is refused as "not on the allowlist").
WHY = {
    "WriteFile": "writes a file", "ReadFile": "reads a file", "MatchingFiles": "lists files",
    "PrintV2": "prints, possibly to a file", "Print": "prints", "PyFunc": "calls Python code",
    "PyFuncStateless": "calls Python code", "EagerPyFunc": "calls Python code",
    "ImmutableConst": "maps a file into memory", "DeleteFile": "deletes a file",
    **{op: "reads or writes checkpoint files" for op in CHECKPOINT_OPS},
}


def scan_saved_model(folder: Path) -> Scan:
    """Every op of saved_model.pb that is not allowed where it stands, as "function (Op: why)"."""
    graphs = _read_meta_graphs(folder / "saved_model.pb")
    result = Scan()
    for graph in graphs:
        _scan_meta_graph(graph, result)
    return result


def _read_meta_graphs(pb: Path) -> list:
    from tensorflow.core.protobuf import saved_model_pb2
    from google.protobuf.message import DecodeError

    size = pb.stat().st_size
    if size > MAX_SAVED_MODEL_PB_BYTES:
        raise ModelError(f"{pb} is {size >> 20} MiB, over the 1 GiB limit for a graph; refused")
    message = saved_model_pb2.SavedModel()
    try:
        message.ParseFromString(pb.read_bytes())
    except (DecodeError, RecursionError, ValueError) as exc:
        raise ModelError(f"{pb} is not a readable SavedModel graph ({first_line(exc)}); the file is corrupted") from None
    if not message.meta_graphs:
        raise ModelError(f"{pb} holds no graph; the file is corrupted")
    return list(message.meta_graphs)


def _scan_meta_graph(graph, result: Scan) -> None:
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    restore_nodes, save_nodes = _saver_nodes(graph)
    main_nodes = list(graph.graph_def.node)
    elsewhere = _reachable(functions, [n for n in main_nodes if n.name not in restore_nodes | save_nodes],
                           extra=_object_graph_functions(graph))
    restoring = _reachable(functions, [n for n in main_nodes if n.name in restore_nodes])
    saving = _reachable(functions, [n for n in main_nodes if n.name in save_nodes]) - restoring - elsewhere
    restoring -= elsewhere
    filename = graph.saver_def.filename_tensor_name.split(":")[0]
    by_name = {n.name: n for n in main_nodes}
    for node in main_nodes:
        extra = RESTORE_OPS if node.name in restore_nodes else CHECKPOINT_OPS if node.name in save_nodes else ()
        _check(node, "the main graph", extra, result, functions)
        if node.name in restore_nodes and node.op in RESTORE_OPS:
            _check_restore_prefix(node, by_name, {filename}, "the main graph", result)
    for name, function in functions.items():
        extra = RESTORE_OPS if name in restoring else CHECKPOINT_OPS if name in saving else ()
        nodes = {n.name: n for n in function.node_def}
        args = {a.name for a in function.signature.input_arg}
        for node in function.node_def:
            _check(node, name, extra, result, functions)
            if name in restoring and node.op in RESTORE_OPS:
                _check_restore_prefix(node, nodes, args, name, result)


def _check(node, where: str, extra_ops, result: Scan, functions: dict) -> None:
    allowed = node.op in ALLOWED_OPS or node.op in functions or node.op in extra_ops
    if not allowed:
        why = WHY.get(node.op, "not on the allowlist of pure compute ops")
        _refuse(result, f"{where} ({node.op}: {why})")


def _refuse(result: Scan, entry: str) -> None:
    if entry not in result.refused:
        result.refused.append(entry)


def _check_restore_prefix(node, nodes: dict, sources: set[str], where: str, result: Scan) -> None:
    """A restore op reads the checkpoint the loader points it at (the saver's filename tensor,
    or the restore function's prefix argument), through Identity ops at most: never a path
    of its own (another model's checkpoint, any file on the machine)."""
    name = node.input[0].split(":")[0].lstrip("^") if node.input else ""
    seen = set()
    while name in nodes and nodes[name].op == "Identity" and name not in seen and name not in sources:
        seen.add(name)
        name = nodes[name].input[0].split(":")[0].lstrip("^")
    if name not in sources:
        _refuse(result, f"{where} ({node.op}: restores from a path other than the model's own variables)")


def _saver_nodes(graph) -> tuple[set[str], set[str]]:
    """The main-graph nodes loading runs (the restore op and everything it takes input from),
    and those only saving runs. TF1 graphs keep SaveV2/RestoreV2 in the main graph; TF2
    graphs call _traced_save/_traced_restore."""
    saver = graph.saver_def

    def closure_of(*tensors: str) -> set[str]:
        wanted = [t.split(":")[0].lstrip("^") for t in tensors if t]
        return _closure(wanted, by_name, lambda node: (i.split(":")[0].lstrip("^") for i in node.input))

    by_name = {n.name: n for n in graph.graph_def.node}
    restore = closure_of(saver.restore_op_name, saver.filename_tensor_name)
    # what a signature, an init op or a main op reaches runs at load or when served: never a save
    served = closure_of(*[t.name for sig in graph.signature_def.values()
                          for t in [*sig.inputs.values(), *sig.outputs.values()]],
                        *[name for collection in graph.collection_def.values() if collection.HasField("node_list")
                          for name in collection.node_list.value])
    return restore, closure_of(saver.save_tensor_name) - restore - served


def _object_graph_functions(graph) -> list[str]:
    """Functions the loaded objects expose (methods, signatures): they can run after load."""
    return list(graph.object_graph_def.concrete_functions.keys())


def _reachable(functions: dict, nodes: list, extra: list[str] = ()) -> set[str]:
    """Names of the library functions that these nodes (or the named functions) can call."""
    names = list(extra)
    for node in nodes:
        names.extend(_callees(node, functions))
    return _closure(names, functions,
                    lambda function: (c for node in function.node_def for c in _callees(node, functions)))


def _closure(start: list[str], known: dict, neighbours) -> set[str]:
    """The names in `known` reachable from `start`, following neighbours(known[name])."""
    todo, found = list(start), set()
    while todo:
        name = todo.pop()
        if name in found or name not in known:
            continue
        found.add(name)
        todo.extend(neighbours(known[name]))
    return found


def _callees(node, functions: dict) -> list[str]:
    """Functions a node calls: as its op type, or through func / list(func) attributes."""
    called = [node.op] if node.op in functions else []
    for value in node.attr.values():
        if value.HasField("func"):
            called.append(value.func.name)
        if value.HasField("list"):
            called.extend(f.name for f in value.list.func)
    return called

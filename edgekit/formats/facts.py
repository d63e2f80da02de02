"""What an exported artifact is, read from the file itself with its own runtime's tools:
precision, multiply-accumulates per inference, weight bytes, ops, I/O dtypes, dynamic dims, and
the work of each layer by kind (what the per-layer latency model of edgekit.measure costs).

The device estimates need these for artifacts that have no Keras model beside them (a
.tflite handed to `edgekit bench --device rpi4`). One rule counts MACs in every format:
for a conv or fully-connected op, MACs = output elements x weight elements / output
channels, which is (Cin/groups) x kh x kw per output element for any convolution
(grouped and depthwise included) and the input width for a matrix multiply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np



@dataclass
class MacOp:
    """One conv or fully-connected op as the file holds it."""

    name: str
    macs: int
    weights: int  # weight elements
    int8_weights: bool  # its weights are stored as 8-bit integers
    int8_compute: bool  # its activations are 8-bit too: it runs as an integer kernel
    kind: str = "conv"  # conv | pointwise | depthwise | dense (edgekit.measure.layer_work.KINDS)
    activations: int = 0  # input + output elements it reads and writes (its weights apart)
    weight_scales: int | None = None  # int8 scales of its weight: 1 per-tensor, one per channel; None if float


@dataclass
class OtherOp:
    """An op with no MACs that still moves data (pooling, Add, Multiply, Concat, a standalone
    activation, a quantize at the input): what a per-layer latency model costs by its bytes."""

    name: str
    activations: int  # input + output elements
    group: str = "elementwise"  # elementwise | activation | pool | move: other_group() of its op type,
    # or fallback: an op the format's usual CPU delegate leaves to slower built-in kernels


# Ops without MACs fall in four groups whose kernels cost differently per element: pooling and
# reductions read a window per output, "move" ops copy data without arithmetic, activations evaluate
# a transcendental or piecewise function (and are what an int8 delegate most often leaves to slower
# kernels), the rest are elementwise arithmetic.
# Op type names of all three formats, upper-cased without "_": TFLite AVERAGE_POOL_2D, ONNX
# AveragePool and OpenVINO AvgPool are all pooling.
POOL_OPS = {"AVERAGEPOOL2D", "MAXPOOL2D", "AVERAGEPOOL", "MAXPOOL", "AVGPOOL", "GLOBALAVERAGEPOOL", "GLOBALMAXPOOL",
            "MEAN", "SUM", "REDUCEMEAN", "REDUCEMAX", "REDUCESUM", "REDUCEMIN", "REDUCEPROD", "ADAPTIVEAVGPOOL",
            "L2POOL2D"}
ACTIVATION_OPS = {"LOGISTIC", "SIGMOID", "TANH", "HARDSWISH", "HSWISH", "HARDSIGMOID", "HSIGMOID", "SWISH", "EXP",
                  "SOFTMAX", "LOGSOFTMAX", "GELU", "ELU", "SELU", "LEAKYRELU", "PRELU", "MISH", "SOFTPLUS", "ERF", "LOG",
                  "SQRT", "RSQRT", "POW"}
MOVE_OPS = {"CONCATENATION", "CONCAT", "PAD", "PADV2", "MIRRORPAD", "TRANSPOSE", "SLICE", "STRIDEDSLICE", "SPLIT",
            "SPLITV", "VARIADICSPLIT", "GATHER", "TILE", "BROADCAST", "BROADCASTTO", "EXPAND", "RESIZEBILINEAR",
            "RESIZENEARESTNEIGHBOR", "RESIZE", "INTERPOLATE", "QUANTIZE", "DEQUANTIZE", "QUANTIZELINEAR",
            "DEQUANTIZELINEAR", "CONVERT", "CAST", "DEPTHTOSPACE", "SPACETODEPTH", "PACK", "UNPACK"}


def other_group(op_type: str) -> str:
    name = op_type.upper().replace("_", "")
    if name in POOL_OPS:
        return "pool"
    return "move" if name in MOVE_OPS else "activation" if name in ACTIVATION_OPS else "elementwise"


@dataclass
class ArtifactFacts:
    path: str
    format: str
    precision: str                  # fp32 | fp16 | int8w | int8 | int16x8
    macs: int
    weight_bytes: int               # the file's size: every parameter is in it once
    ops: list[str] = field(default_factory=list)
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    dynamic_dims: bool = False
    mac_ops: list[MacOp] = field(default_factory=list, repr=False)
    other_ops: list[OtherOp] = field(default_factory=list, repr=False)
    # ops other than conv/dense that compute on float values in an int8 file ("Softmax name");
    # None where the format's reader does not tell (each formats/*/facts.py tells)
    float_other_ops: list[str] | None = None
    # float ops at the graph's ends of an int8 file, where the format's quantizer leaves them and
    # its runtimes run them as pre/post-processing (OpenVINO: an input rescaling, the final Softmax)
    float_edge_ops: list[str] = field(default_factory=list)

    def quantization(self) -> dict:
        """What share of the conv/dense weights and MACs the file really holds in int8, and
        which of those ops it left in float: the report states this, not the recipe."""
        weights = sum(op.weights for op in self.mac_ops)
        macs = sum(op.macs for op in self.mac_ops)
        float_ops = [op.name for op in self.mac_ops if not op.int8_compute]
        return {
            "int8_weight_share": round(sum(op.weights for op in self.mac_ops if op.int8_weights) / weights, 4)
            if weights else None,
            "int8_mac_share": round(sum(op.macs for op in self.mac_ops if op.int8_compute) / macs, 4) if macs else None,
            "mac_ops": len(self.mac_ops),
            "float_mac_ops": len(float_ops),
            "float_mac_op_names": float_ops[:MAX_NAMED_OPS],
        }


MAX_NAMED_OPS = 20
# Activations a runtime runs inside the conv/matmul before them (fused), whatever the file writes
# them as: they add no layer of their own, as in edgekit.measure.layer_work's Keras count.
FUSED_ACTIVATIONS = {"relu", "relu6", "clip", "clamp", "leakyrelu", "prelu", "sigmoid", "logistic", "hardswish",
                     "hswish", "swish", "tanh", "elu", "hardsigmoid"}
INT8_TYPES = {"int8", "uint8"}


def numel(shape) -> int:
    return int(np.prod([max(int(d), 1) for d in shape]))  # unknown (batch) dims count as 1


def read_facts(path: Path, fmt: str) -> ArtifactFacts:
    from edgekit.formats import get_format

    return get_format(fmt).part("facts")(Path(path))

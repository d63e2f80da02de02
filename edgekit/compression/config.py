"""Recipes: a compress pipeline as YAML, validated by pydantic (unknown keys are errors).

    name: prune50-int8
    stages:
      - {type: prune, sparsity: 0.5, epochs: 2}
    int8: true
    formats: [tflite, onnx, openvino]

`--recipe FILE` or `--recipe NAME` (a file in recipes/); CLI flags override recipe fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekit.errors import InputError
from edgekit.formats import FORMATS, get_format
from edgekit.support.shipped import shipped_files

Format = Literal["tflite", "onnx", "openvino"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PruneStage(_Strict):
    type: Literal["prune"]
    sparsity: float = Field(gt=0, lt=1, description="final fraction of zero weights")
    structure: Literal["unstructured", "2:4"] = "unstructured"
    epochs: int = Field(2, ge=1, le=10_000)


class ChannelsStage(_Strict):
    """Structured channel pruning (edgekit/compression/stages/channels.py): one of ratio,
    target_macs, target_latency_ms (with device, or measured with --remote)."""
    type: Literal["channels"]
    ratio: Optional[float] = Field(None, gt=0, lt=1, description="fraction of each prunable group's channels removed")
    target_macs: Optional[float] = Field(None, gt=0, lt=1, description="the pruned model's MACs as a fraction of the "
                                         "original's, at most")
    target_latency_ms: Optional[float] = Field(None, gt=0, description="the pruned model's latency, at most: "
                                               "estimated on `device`, or measured with --remote USER@HOST")
    device: Optional[str] = Field(None, description="the device profile a latency target is estimated on")
    importance: Literal["bn", "l1", "l2"] = Field("bn", description="how channels are ranked: |γ| of the BatchNorm "
                                                  "after the layer (its filter's L2 norm where none), or the filter's "
                                                  "L1 or L2 norm")
    multiple_of: int = Field(16, ge=1, le=256, description="kept channels rounded to a multiple of this (groups at "
                             "least twice as wide): SIMD-friendly widths (XNNPACK's int8 kernels tile 16 channels on "
                             "AVX-512: a trained MobileNetV2 at half the MACs ran 1.6× faster at 16, 1.5× at 8)")
    epochs: int = Field(3, ge=1, le=10_000)

    @model_validator(mode="after")
    def _one_goal(self) -> "ChannelsStage":
        goals = [k for k in ("ratio", "target_macs", "target_latency_ms") if getattr(self, k) is not None]
        if len(goals) != 1:
            raise ValueError("channel pruning needs exactly one of ratio (--prune-channels R), target_macs "
                             "(--prune-channels-target-macs F) or target_latency_ms (--prune-channels-target-latency MS)"
                             + (f"; got {', '.join(goals)}" if goals else ""))
        # a latency target without a device is measured with --remote (a run option: where, not what);
        # pipeline.validate_options refuses it without either
        if self.device is not None and self.target_latency_ms is None:
            raise ValueError("device is the device a latency target (--prune-channels-target-latency MS) is "
                             "estimated on: it goes with target_latency_ms")
        return self


class QATStage(_Strict):
    type: Literal["qat"]
    epochs: int = Field(2, ge=1, le=10_000)


Stage = Annotated[Union[ChannelsStage, PruneStage, QATStage], Field(discriminator="type")]
STAGE_ORDER = ("channels", "prune", "qat")


class AccuracyAware(_Strict):
    max_drop: float = Field(ge=0, le=100, description="max top-1 drop in points of each int8 file vs the float model")
    max_steps: int = Field(16, ge=1, le=1000, description="at most this many re-quantizations per format")


class Repairs(_Strict):
    """Changes to the float model that keep int8 files integer (edgekit/compression/repairs)."""
    equalize: bool = Field(False, description="cross-layer equalization of conv/dense pairs joined by ReLU, "
                           "max pooling or padding (the float function is unchanged)")
    relu6: bool = Field(False, description="with equalize: ReLU6 becomes ReLU so that pairs join through it too "
                        "(MobileNets); changes the function where an activation passed 6: reported")
    bias_correction: bool = Field(False, description="subtract the mean int8 weight-rounding error, measured on the "
                                  "calibration data, from each conv/dense bias")
    adaround: bool = Field(False, description="learned weight rounding (AdaRound): each conv/dense weight rounds up or "
                           "down to the int8 step that moves the layer's output least on the calibration data, and "
                           "each bias absorbs the mean shift left (checked: the int8 files hold those weights)")
    dead_channels: bool = Field(False, description="γ := 0 on each BatchNorm channel of ~0 moving variance (a "
                                "dead input): its output stays β, and folding no longer blows its kernel up by "
                                "1/√ε into the layer's widest channel (unchanged where the channel is constant)")
    batchnorm_as_conv: bool = Field(False, description="each BatchNormalization folding cannot remove (after a "
                                    "concatenation, an add, the input) becomes the 1×1 depthwise convolution it "
                                    "computes, which every converter quantizes (the float function is unchanged)")

    @property
    def any(self) -> bool:
        return self.equalize or self.bias_correction or self.adaround or self.batchnorm_as_conv or self.dead_channels

    @property
    def named(self) -> str:
        return " and ".join(f"repairs.{k}" for k in ("dead_channels", "batchnorm_as_conv", "equalize", "bias_correction",
                                                      "adaround")
                            if getattr(self, k))

    @model_validator(mode="after")
    def _consistent(self) -> "Repairs":
        if self.relu6 and not self.equalize:
            raise ValueError("repairs.relu6 lets equalization pass through ReLU6: it needs repairs.equalize")
        if self.adaround and self.bias_correction:
            raise ValueError("repairs.adaround corrects each bias for the rounding it chooses; repairs.bias_correction "
                             "would correct for rounding to nearest, which is not used: choose one")
        return self


class Recipe(_Strict):
    name: Optional[str] = None
    description: Optional[str] = None
    stages: list[Stage] = Field(default_factory=list)
    int8: bool = False
    fp16: bool = False
    int16x8: bool = Field(False, description="also a TFLite file with int16 activations and int8 weights "
                          "(TFLite's 16x8 mode): closer to float than int8, for CPUs that run it")
    formats: list[Format] = Field(default_factory=lambda: ["tflite", "onnx", "openvino"], min_length=1)
    calib_samples: int = Field(200, ge=1, le=10_000_000)
    io_dtype: Literal["float32", "int8", "uint8"] = "float32"
    preprocess: Optional[Literal["unit", "symmetric", "none"]] = None
    accuracy_aware: Optional[AccuracyAware] = None
    repairs: Repairs = Field(default_factory=Repairs)
    per_tensor: bool = Field(False, description="one int8 scale per weight tensor instead of one per output channel "
                             "(NPUs whose kernels take no per-channel scales); each int8 file is checked for it")
    ranges: Literal["default", "minmax", "percentile", "mse"] = Field(
        "default", description="int8 activation ranges: each library's default, min/max, percentile or MSE "
        "(edgekit/formats/ranges.py)")
    integer_only: bool = Field(False, description="every op of each int8 file computes in integers: a float op "
                               "left in any file is exit 2, naming it (edgekit/compression/targets.py)")
    target: Optional[str] = Field(None, description="a device profile (name or YAML) that decides formats, "
                                  "I/O types and integer-only, and that each int8 file is checked against")
    accuracy_tolerance: Optional[float] = Field(None, ge=0, le=100, description="max top-1 drop in points vs the fp32 model")
    batch_size: int = Field(32, ge=1, le=65_536)
    learning_rate: Optional[float] = Field(None, gt=0, le=10, description="fine-tuning peak learning rate; "
                                           "default: derived from the file's recorded optimizer (edgekit.compression.stages.finetune)")
    distillation: float = Field(0.5, ge=0, le=1, description="weight of the original model's probabilities in the "
                                "fine-tuning targets (0: labels only)")
    distillation_temperature: float = Field(1.0, ge=1, le=20, description="T: both models' probabilities softened "
                                            "as softmax(logits / T) in the distillation term, weighted T² "
                                            "(edgekit.compression.stages.finetune); 1: the original's as they are")

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        kinds = [s.type for s in self.stages]
        if len(set(kinds)) != len(kinds):
            raise ValueError("each stage type may appear once")
        if kinds != sorted(kinds, key=STAGE_ORDER.index):
            raise ValueError(f"stages run in the order {', '.join(STAGE_ORDER)}: channels are removed first, "
                             "prune must come before qat (prune-preserving QAT keeps the sparsity)")
        if self.fp16 and self.int8:
            raise ValueError("choose int8 or fp16, not both")
        if self.int16x8 and self.fp16:
            raise ValueError("choose int16x8 or fp16, not both")
        having = [f for f in FORMATS if "int16x8" in get_format(f).precisions]
        if self.int16x8 and not set(having) & set(self.formats):
            raise ValueError(f"int16x8 (--int16x8) is a TFLite precision (its 16x8 mode): add {', '.join(having)} "
                             "to the formats")
        if self.int16x8 and "qat" in kinds:
            raise ValueError("int16x8 (--int16x8) is post-training; QAT here trains int8 ranges")
        if "qat" in kinds and not self.int8:
            self.int8 = True  # QAT exists to make int8 artifacts
        if self.accuracy_aware and "qat" in kinds:
            raise ValueError("accuracy_aware re-quantizes post-training int8; QAT int8 keeps the ranges it learned")
        if self.accuracy_aware and not self.int8:
            raise ValueError("accuracy_aware needs int8")
        if self.repairs.any and not self.int8 and not self.target:  # a target may decide int8: checked after
            raise ValueError(f"{self.repairs.named} {'prepares' if ' ' not in self.repairs.named else 'prepare'} "
                             "the model for int8: needs int8")
        if self.per_tensor and not self.int8 and not self.target:
            raise ValueError("per_tensor (--per-tensor) sets how int8 weights are scaled: it needs int8 (--int8 --data CALIB)")
        if self.ranges != "default" and not self.int8 and not self.target:
            raise ValueError(f"ranges {self.ranges} (--ranges) sets how int8 activations are calibrated: it needs "
                             "int8 (--int8 --data CALIB)")
        if self.ranges != "default" and "qat" in kinds:
            raise ValueError(f"ranges {self.ranges} (--ranges) is for post-training int8; QAT learns its own ranges")
        if self.per_tensor and "qat" in kinds:
            raise ValueError("per_tensor (--per-tensor) is for post-training int8; QAT here trains per-channel weight ranges")
        if self.repairs.any and "qat" in kinds:
            raise ValueError(f"{self.repairs.named}: for post-training int8; QAT learns its own ranges")
        return self

    @property
    def prune(self) -> PruneStage | None:
        return next((s for s in self.stages if isinstance(s, PruneStage)), None)

    @property
    def channels(self) -> ChannelsStage | None:
        return next((s for s in self.stages if isinstance(s, ChannelsStage)), None)

    @property
    def qat(self) -> QATStage | None:
        return next((s for s in self.stages if isinstance(s, QATStage)), None)


def shipped_recipes() -> dict[str, Path]:
    return shipped_files("recipes")


def _describe(error: dict, flags: dict[str, str]) -> str:
    where = ".".join(str(p) for p in error["loc"] if not (isinstance(p, str) and p in STAGE_ORDER))
    field = str(error["loc"][0]) if error["loc"] else ""
    if field in flags:  # set on the command line: name the flag, not the recipe field
        return f"{flags[field]} {error['input']!r}: {_message(error)}"
    if error["type"] == "extra_forbidden":
        return f"unknown field {where!r} (allowed: {', '.join(Recipe.model_fields)} and, in stages, " \
               f"{', '.join(sorted(set(PruneStage.model_fields) | set(QATStage.model_fields) | set(ChannelsStage.model_fields)))}; " \
               f"in accuracy_aware, {', '.join(AccuracyAware.model_fields)}; in repairs, {', '.join(Repairs.model_fields)})"
    if error["type"] == "union_tag_invalid":
        return f"{where or 'stages'}: unknown stage type {error['input'].get('type')!r} (allowed: {', '.join(STAGE_ORDER)})"
    if error["type"] == "literal_error":
        return f"{where} = {error['input']!r}: {_message(error)}"
    return f"{where + ': ' if where else ''}{_message(error)}" + (
        f" (got {error['input']!r})" if not isinstance(error.get("input"), (dict, list)) else "")


def _message(error: dict) -> str:
    """pydantic's message in our voice: no "Value error, " prefix, lower-case start."""
    text = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return text[:1].lower() + text[1:]


def _first_error(errors: list[dict]) -> dict:
    """The error to show: a misspelled key ("sparsty") is the cause, and the "field required"
    that pydantic lists for the key it replaced only follows from it."""
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def validate_recipe(data, source: str, flags: dict[str, str] | None = None) -> Recipe:
    """`flags` maps the fields set by command-line flags to the flag names, for messages."""
    if not isinstance(data, dict):
        raise InputError(f"recipe {source} must be a YAML mapping of fields")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        detail = _describe(_first_error(exc.errors()), flags or {})
        raise InputError(detail if detail.startswith("--") else f"recipe {source}: {detail}") from None


def repairs_set(recipe: Recipe) -> set[str]:
    """The repairs the recipe turns on or off itself (integer-only then leaves those as they are)."""
    return set(recipe.repairs.model_fields_set) if "repairs" in recipe.model_fields_set else set()


def load_recipe(spec: str) -> Recipe:
    """--recipe FILE or NAME."""
    from edgekit.support.untrusted import load_yaml

    shipped = shipped_recipes()
    path = Path(spec)
    if not path.is_file():
        if spec not in shipped:
            raise InputError(f"--recipe {spec}: no such file or shipped recipe (shipped: {', '.join(shipped) or 'none'})")
        path = shipped[spec]
    data = load_yaml(path, "recipe")
    recipe = validate_recipe(data, str(path))
    from edgekit.compression.targets import apply_target  # a recipe's own target decides as --target does

    return apply_target(recipe.model_copy(update={"name": recipe.name or path.stem}),
                        formats_chosen="formats" in recipe.model_fields_set,
                        repairs_chosen=repairs_set(recipe))

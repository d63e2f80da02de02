"""Merge CLI flags over a recipe: flags win, and the result is validated like a recipe file."""

from __future__ import annotations

from edgekit.compression.config import STAGE_ORDER, Recipe, load_recipe, repairs_set, validate_recipe
from edgekit.errors import InputError
from edgekit.formats import FORMATS


def recipe_from_flags(spec: str | None, *, int8: bool, fp16: bool, prune: float | None,
                      prune_structure: str | None, qat: bool, epochs: int | None, formats: str | None,
                      preprocess: str | None, calib_samples: int | None, io_dtype: str | None,
                      max_accuracy_drop: float | None = None, learning_rate: float | None = None,
                      accuracy_tolerance: float | None = None, equalize: bool = False, integer_only: bool = False,
                      target: str | None = None, per_tensor: bool = False, bias_correction: bool = False,
                      relu6: bool = False, ranges: str | None = None, int16x8: bool = False,
                      adaround: bool = False, prune_channels: float | None = None,
                      prune_channels_target_macs: float | None = None,
                      prune_channels_target_latency: float | None = None, device: str | None = None) -> Recipe:
    base = load_recipe(spec) if spec else Recipe()
    data = base.model_dump(mode="json")
    if prune is not None and not 0 < prune < 1:
        raise InputError(f"--prune {prune}: the sparsity must be between 0 and 1, e.g. --prune 0.5")
    if prune_structure is not None and prune is None and base.prune is None:
        raise InputError("--prune-structure needs --prune S")
    stages = {stage["type"]: stage for stage in data["stages"]}
    if prune is not None or prune_structure is not None:
        stages["prune"] = stages.get("prune", {"type": "prune"}) | (
            {"sparsity": prune} if prune is not None else {}) | (
            {"structure": prune_structure} if prune_structure is not None else {})
    _channels_flags(stages, prune_channels, prune_channels_target_macs, prune_channels_target_latency, device)
    if qat:
        stages.setdefault("qat", {"type": "qat"})
    if epochs is not None:
        for stage in stages.values():
            stage["epochs"] = epochs
    data["stages"] = [stages[k] for k in STAGE_ORDER if k in stages]
    for key, on in (("equalize", equalize or relu6), ("relu6", relu6), ("bias_correction", bias_correction),
                    ("adaround", adaround)):
        if on:
            data["repairs"][key] = True
    flags = {"int8": int8 or None, "fp16": fp16 or None, "preprocess": preprocess, "calib_samples": calib_samples,
             "io_dtype": io_dtype, "formats": _formats(formats), "learning_rate": learning_rate,
             "accuracy_tolerance": accuracy_tolerance, "integer_only": integer_only or None, "target": target,
             "per_tensor": per_tensor or None, "ranges": ranges, "int16x8": int16x8 or None,
             "accuracy_aware": {"max_drop": max_accuracy_drop} if max_accuracy_drop is not None else None}
    given = {k: v for k, v in flags.items() if v is not None}
    data.update(given)
    names = {k: "--" + k.replace("_", "-") for k in given} | (
        {"accuracy_aware": "--max-accuracy-drop"} if "accuracy_aware" in given else {})
    recipe = validate_recipe(data, spec or "from the command line", names)
    from edgekit.compression.targets import apply_target

    return apply_target(recipe, formats_chosen=formats is not None or "formats" in base.model_fields_set,
                        repairs_chosen=repairs_set(base) | ({"equalize"} if equalize or relu6 else set()))


GOALS = ("ratio", "target_macs", "target_latency_ms")


def _channels_flags(stages: dict, ratio: float | None, target_macs: float | None, target_latency: float | None,
                    device: str | None) -> None:
    """--prune-channels R, or a target: --prune-channels-target-macs F / -target-latency MS [--device NAME]
    (over a recipe's channels stage: a flag's goal replaces the recipe's, --device joins its latency target;
    a latency target with neither --device nor --remote is refused by pipeline.validate_options)."""
    given = {k: v for k, v in zip(GOALS, (ratio, target_macs, target_latency)) if v is not None}
    for flag, value in (("--prune-channels", ratio), ("--prune-channels-target-macs", target_macs)):
        if value is not None and not 0 < value < 1:
            raise InputError(f"{flag} {value}: choose a fraction between 0 and 1 (exclusive), e.g. {flag} 0.5")
    if target_latency is not None and not target_latency > 0:
        raise InputError(f"--prune-channels-target-latency {target_latency}: choose a latency in ms above 0")
    if len(given) > 1:
        raise InputError("--prune-channels, --prune-channels-target-macs and --prune-channels-target-latency each "
                         "say how much to remove: choose one")
    existing = stages.get("channels") or {}
    latency = target_latency if given else existing.get("target_latency_ms")
    device = device or (existing.get("device") if "target_latency_ms" in given else None)
    if device is not None and latency is None:
        raise InputError("--device NAME is the device a latency target is estimated on: it goes with "
                         "--prune-channels-target-latency MS")
    if given:
        kept = {k: v for k, v in (existing or {"type": "channels"}).items() if k not in (*GOALS, "device")}
        stages["channels"] = kept | given | ({"device": device} if device else {})
    elif device:
        stages["channels"] = existing | {"device": device}


def _formats(text: str | None) -> list[str] | None:
    return None if text is None else parse_formats(text)


def parse_formats(text: str) -> list[str]:
    """--formats "tflite,onnx": known names, lower case, in the order given, without repeats."""
    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise InputError(
            f"--formats: unknown format {', '.join(unknown) or repr(text)}; choose from {','.join(FORMATS)}"
        )
    return list(dict.fromkeys(names))  # keep order, drop repeats

"""`compress --target DEVICE` and `--integer-only` (issue 26): the device profile decides what is
built, and each int8 file written is checked against it before the run succeeds.

From the profile (devices/NAME.yaml): the formats it runs (a `--formats` outside them is exit 2),
int8 where it runs nothing else, the I/O types its constraints allow, and integer-only where its
constraints say so (the Edge TPU compiler runs everything after the first float op on the host
CPU). Integer-only turns on the exact repairs (INTEGER_ONLY_REPAIRS), per-tensor weights the
dead-channel one, each unless the recipe (or a flag) says itself whether to use it; other repairs
asked for come on top.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.compression.config import Recipe
from edgekit.errors import Incompatible, InputError


# What --integer-only turns on unless the recipe says otherwise: exact rewrites of the float model
# that let more layers be integer (edgekit/compression/repairs)
INTEGER_ONLY_REPAIRS = ("dead_channels", "batchnorm_as_conv", "equalize")
# ... and what --per-tensor turns on: the one exact rewrite a per-tensor grid cannot do without
# (a dead channel's folded kernel, 1/√ε wide, sets the step of the whole tensor)
PER_TENSOR_REPAIRS = ("dead_channels",)


def apply_target(recipe: Recipe, formats_chosen: bool, repairs_chosen: set[str]) -> Recipe:
    """The recipe with what --target and --integer-only decide filled in; exit 2 where the
    recipe asks for something the device cannot run."""
    update: dict = {}
    if recipe.target:
        from edgekit.formats import FORMATS
        from edgekit.measure.devices import load_profile

        profile = load_profile(recipe.target, "--target")
        runs = [f for f in FORMATS if f in profile.runtimes]
        if formats_chosen:
            outside = [f for f in recipe.formats if f not in profile.runtimes]
            if outside:
                raise InputError(f"--target {profile.name} runs {', '.join(runs)} files, not {', '.join(outside)}: "
                                 f"leave out --formats or choose among those")
        else:
            update["formats"] = runs
        if recipe.int16x8 and "int16x8" not in profile.precisions:
            raise InputError(f"--int16x8: --target {profile.name} runs {', '.join(profile.precisions)} files, "
                             "not int16x8: leave it out")
        if not set(profile.precisions) & {"fp32", "fp16", "int8w"}:
            update["int8"] = True
        allowed = profile.constraints.io_dtypes
        if allowed and recipe.io_dtype not in allowed:
            if recipe.io_dtype != "float32":
                raise InputError(f"--io-dtype {recipe.io_dtype}: --target {profile.name} takes "
                                 f"{'/'.join(allowed)} input and output")
            update["io_dtype"] = allowed[0]
        if profile.constraints.integer_only:
            update["integer_only"] = True
        if profile.constraints.per_tensor_weights:
            update["per_tensor"] = True
    integer_only = recipe.integer_only or update.get("integer_only")
    per_tensor = recipe.per_tensor or update.get("per_tensor")
    turned_on = {k: True for k in (INTEGER_ONLY_REPAIRS if integer_only else PER_TENSOR_REPAIRS if per_tensor else ())
                 if k not in repairs_chosen}
    if turned_on:
        update["repairs"] = recipe.repairs.model_copy(update=turned_on)
    resolved = recipe.model_copy(update=update)
    if resolved.integer_only and not resolved.int8:
        raise InputError("--integer-only makes int8 files: pass --int8 with --data CALIB")
    ranges = resolved.ranges != "default"
    if (resolved.repairs.any or resolved.per_tensor or ranges) and not resolved.int8:
        what = " and ".join(filter(None, [resolved.repairs.named, "per_tensor" if resolved.per_tensor else "",
                                          f"ranges {resolved.ranges}" if ranges else ""]))
        raise InputError(f"{what}: for int8 files, and --target {recipe.target} runs float too: pass --int8")
    if resolved.per_tensor and resolved.qat:
        raise InputError(f"--target {recipe.target} takes per-tensor int8 weights, which QAT here does not train: "
                         "leave out --qat")
    return resolved


def check_written(recipe: Recipe, artifacts) -> list[dict]:
    """Each int8 file against the target's profile and the integer-only rule: the checks made,
    for the report; exit 2 naming every problem (and so nothing written) where one fails."""
    if not (recipe.target or recipe.integer_only or recipe.per_tensor):
        return []
    from edgekit.formats.facts import read_facts

    profile = None
    if recipe.target:
        from edgekit.measure.devices import load_profile

        profile = load_profile(recipe.target, "--target")
    checked, problems = [], []
    for artifact in artifacts:
        if artifact.precision != "int8":
            continue  # the fp32 files are the float reference the int8 ones were verified against
        facts = read_facts(Path(artifact.path), artifact.format)
        found = _problems(facts, profile, recipe.integer_only, recipe.per_tensor)
        entry = {"file": Path(artifact.path).name, "problems": found}
        if recipe.integer_only and facts.float_edge_ops:
            entry["float_at_edges"] = facts.float_edge_ops  # pre/post-processing the runtime runs, named
        checked.append(entry)
        problems += [f"{Path(artifact.path).name}: {p}" for p in found]
    if problems:
        where = f"--target {profile.name}" if profile else "--integer-only" if recipe.integer_only else "--per-tensor"
        raise Incompatible(f"{where}: {'; '.join(problems)}; nothing was written. Rerun without {where.split()[0]} "
                           "to write the files anyway (the device would run what it cannot on its host), or change "
                           "the named layers to ones it runs")
    return checked


def _problems(facts, profile, integer_only: bool, per_tensor: bool) -> list[str]:
    from edgekit.measure.estimate import compatibility_problems

    found = compatibility_problems(profile, facts) if profile else []
    if per_tensor:
        per_channel = [op.name for op in facts.mac_ops if (op.weight_scales or 1) > 1]
        if per_channel:
            found.append(f"{len(per_channel)} conv/dense op(s) hold per-channel weight scales ({_few(per_channel)}), "
                         "where one scale per tensor was asked for")
    if integer_only:
        floating = [op.name for op in facts.mac_ops if not op.int8_compute]
        if floating:
            found.append(f"{len(floating)} conv/dense op(s) compute in float ({_few(floating)}), which an "
                         "integer-only target cannot run")
        if facts.float_other_ops:
            found.append(f"{len(facts.float_other_ops)} other op(s) compute in float ({_few(facts.float_other_ops)})")
    return found


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

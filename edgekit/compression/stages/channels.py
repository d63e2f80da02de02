"""Structured channel pruning: remove whole output channels, rebuild a smaller model, recover
by fine-tuning with distillation from the original (edgekit/compression/channels).

Unlike `--prune` (zeros in place, which no runtime edgekit targets skips), a model with fewer
channels runs faster everywhere. How much goes: a ratio of every prunable group's channels, or
the smallest removal that brings the MACs or the device's estimated latency under a target,
spread over the groups by a sensitivity pass (the groups whose trial removal costs least top-1
lose more).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.compression.channels.graph import PRODUCERS, channel_graph
from edgekit.compression.channels.rebuild import masked, rebuild
from edgekit.compression.channels.select import (MAX_RATIO, all_scores, keep_count, macs_of_plan, plan,
                                                 search_ratio, weighted_ratios)
from edgekit.compression.config import ChannelsStage
from edgekit.compression.stages.finetune import (FinetuneSettings, finetune, outputs_probabilities, require_labelled,
                                                 training_loss)
from edgekit.errors import EdgekitError, InputError, ModelError
from edgekit.intake.data import Dataset

SEARCH_STEPS = 12  # bisection steps of a target search: estimates and MAC counts are cheap
MEASURED_STEPS = 6  # each a remote export and benchmark: resolution 1.8 / 2⁶ of the base ratio
PROBE_RATIO = 0.5  # each group's trial removal in the sensitivity pass
PROBE_SAMPLES = 256
REBUILD_TOLERANCE = 1e-4  # rebuilt vs masked original, relative to the outputs' range


@dataclass
class ChannelsResult:
    model: object  # the smaller tf_keras model, fine-tuned
    record: dict  # report.json stages.channels (without keras_accuracy and finetune)


def prunable_or_fail(model):
    """The dependency graph, or exit 2 naming why each conv/dense layer must keep its channels."""
    graph = channel_graph(model)
    if not graph.prunable():
        alone = graph.left_alone()
        why = "; ".join(f"{name}: {reason}" for name, reason in list(alone.items())[:6]) or "it has no conv/dense layer"
        raise ModelError(f"--prune-channels: nothing in this model can lose channels ({why}); nothing was written")
    return graph


def choose(graph, stage: ChannelsStage, validation, profile=None, precision: str = "fp32",
           fmt: str | None = None, measured=None) -> tuple[dict, dict]:
    """The kept channels per group, and how they were chosen (for the report). measured: a
    measured_target.RemoteLatency, for a latency target measured on a remote machine."""
    scores = all_scores(graph, stage.importance)
    groups = graph.prunable()
    if stage.ratio is not None:
        ratios = weighted_ratios(groups, None, stage.ratio)
        return plan(graph, ratios, stage.importance, stage.multiple_of, scores), {"by": "ratio", "ratio": stage.ratio}
    # the target first: an estimate the model cannot make, or a remote that cannot be reached, fails
    # before the sensitivity pass
    goal, unit, label, measure = _target(graph, stage, profile, precision, fmt, measured)
    drops = sensitivity(graph, scores, stage, validation) if validation is not None else None
    reached = {}

    def keep_for(base: float):
        return plan(graph, weighted_ratios(groups, drops, base), stage.importance, stage.multiple_of, scores)

    def meets(base: float) -> bool:
        reached[base] = measure(keep_for(base))
        return reached[base] <= goal
    base = search_ratio(meets, steps=MEASURED_STEPS if measured is not None else SEARCH_STEPS)
    if base is None:
        raise InputError(f"--prune-channels target {label} cannot be met: removing the most this stage removes "
                         f"(up to {MAX_RATIO:.0%} of each group) reaches {min(reached.values()):,.4g} {unit}; nothing "
                         "was written. Aim higher, or choose a smaller architecture")
    keep = keep_for(base)
    record = {"by": "target_macs" if stage.target_macs is not None else "target_latency", "target": label,
              "base_ratio": round(base, 4), "reached": round(float(measure(keep)), 4), "unit": unit,
              "sensitivity_top1_drop": {" + ".join(graph.groups[g].producers): round(d, 4)
                                        for g, d in (drops or {}).items()}}
    if measured is not None:
        record["measured"] = {"on": measured.where, "original_ms": round(measure({}), 4),
                              "candidates": len(measured.measured),
                              "candidates_ms": [round(ms, 4) for ms in measured.measured],
                              "how": "p50 at batch 1 of each candidate before its fine-tune (same architecture)"}
    elif profile is not None:  # how wrong the estimate may be: the per-layer model's band on this device
        from edgekit.measure.layer_estimate import keras_estimate

        estimate = keras_estimate(profile, rebuild(graph, keep), fmt, precision)
        record["estimate_likely_ms"] = [round(v, 4) for v in estimate["likely_ms"]]
    return keep, record


def _target(graph, stage: ChannelsStage, profile, precision: str, fmt: str | None, measured=None):
    """(goal, unit, label, measure): what a plan (kept channels per group) is measured by."""
    if stage.target_macs is not None:
        original = macs_of_plan(graph, {})
        return (stage.target_macs * original, "MACs", f"{stage.target_macs:.0%} of the original {original:,} MACs",
                lambda keep: macs_of_plan(graph, keep))
    if measured is not None:
        return (stage.target_latency_ms, "ms", f"{stage.target_latency_ms:g} ms measured on {measured.where}",
                _measured_once(graph, measured))
    from edgekit.measure.layer_estimate import keras_estimate

    if keras_estimate(profile, graph.model, fmt, precision) is None:
        raise InputError(f"--prune-channels-target-latency: the latency model has no estimate for {fmt} {precision} "
                         f"on {profile.name}: choose another --device, or --prune-channels-target-macs")
    return (stage.target_latency_ms, "ms", f"{stage.target_latency_ms:g} ms estimated on {profile.name} ({fmt} "
            f"{precision})", lambda keep: keras_estimate(profile, rebuild(graph, keep) if keep else graph.model,
                                                         fmt, precision)["ms"])


def _measured_once(graph, measured):
    """measure(keep) → ms, each distinct architecture measured once (many base ratios round to the
    same widths); the original first, so that an unreachable remote fails before anything else."""
    cache = {}

    def measure(keep: dict) -> float:
        widths = tuple(sorted((g, len(kept)) for g, kept in keep.items()))  # plan() lists only groups that lose any
        if widths not in cache:
            cache[widths] = measured(rebuild(graph, keep) if widths else graph.model)
        return cache[widths]
    measure({})
    return measure


def sensitivity(graph, scores: dict, stage: ChannelsStage, validation) -> dict[int, float]:
    """Top-1 lost (on up to PROBE_SAMPLES validation images) when each group alone loses
    PROBE_RATIO of its channels: the original model with those channels masked."""
    x, y = validation[0][:PROBE_SAMPLES], validation[1][:PROBE_SAMPLES]
    base = _top1(graph.model, x, y)
    drops = {}
    for group in graph.prunable():
        count = keep_count(group.size, PROBE_RATIO, stage.multiple_of)
        keep = {group.id: np.sort(np.argsort(-scores[group.id], kind="stable")[:count])}
        with masked(graph, keep) as model:
            drops[group.id] = base - _top1(model, x, y)
    return drops


def _top1(model, x, y) -> float:
    scores = np.concatenate([np.asarray(model(x[i:i + 128], training=False)) for i in range(0, len(x), 128)])
    return float(np.mean(np.argmax(scores, axis=1) == y))


def check_rebuild(graph, keep: dict, smaller, x: np.ndarray) -> float:
    """max |rebuilt − masked original| over `x`; a bug in edgekit if it is not ~0."""
    with masked(graph, keep) as model:
        expected = np.asarray(model(x, training=False))
    got = np.asarray(smaller(x, training=False))
    delta = float(np.max(np.abs(got - expected)))
    if delta > REBUILD_TOLERANCE * max(1.0, float(np.max(np.abs(expected)))):
        raise EdgekitError(f"--prune-channels: the rebuilt model differs from the original with the same channels "
                           f"masked (max |Δ| {delta:.3g}); this is a bug in edgekit: rerun with --debug and report it")
    return delta


RECALIBRATION_SAMPLES = 1024


def recalibrate_batchnorm(model, x: np.ndarray, batch: int = 64) -> int:
    """Re-estimate every BatchNorm's moving mean and variance on up to RECALIBRATION_SAMPLES
    training inputs (their running average over the batches), weights untouched. A removed
    channel changes what every later layer sees, and the statistics frozen for the fine-tune
    (stages/finetune.py) would describe the model before the removal ("adaptive BatchNorm")."""
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    x = x[:RECALIBRATION_SAMPLES]
    try:
        for k, start in enumerate(range(0, len(x), batch)):
            for layer in norms:
                layer.momentum = k / (k + 1)  # moving = the mean of the k + 1 batch statistics so far
            model(x[start:start + batch], training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return len(norms)


def per_layer_channels(graph, smaller) -> dict[str, list[int]]:
    """[before, after] output channels of each conv/dense layer that lost any."""
    after = {layer.name: layer for layer in smaller.layers}
    out = {}
    for layer in graph.model.layers:
        if type(layer).__name__ in PRODUCERS:
            before, now = int(layer.output.shape[-1]), int(after[layer.name].output.shape[-1])
            if now != before:
                out[layer.name] = [before, now]
    return out


def prune_channels(model, data: Dataset | None, stage: ChannelsStage, settings: FinetuneSettings, seed: int,
                   targets=None, validation=None, quiet: bool = False, profile=None, precision: str = "fp32",
                   fmt: str | None = None, measured=None) -> ChannelsResult:
    data = require_labelled(data, "--prune-channels")
    from edgekit.intake.model import count_macs

    graph = prunable_or_fail(model)
    keep, chosen = choose(graph, stage, validation, profile, precision, fmt, measured)
    smaller = rebuild(graph, keep)
    probe = validation[0][:64] if validation is not None else data.x[:64]
    delta = check_rebuild(graph, keep, smaller, probe)
    recalibrate_batchnorm(smaller, data.x)
    before = _top1(smaller, *validation) if validation is not None else None
    from_logits = not outputs_probabilities(model)
    finetune(smaller, data, settings, seed, "prune channels", from_logits=from_logits, targets=targets,
             validation=validation, quiet=quiet, start_loss=training_loss(smaller, data, settings, from_logits, targets))
    record = {
        "importance": stage.importance, "multiple_of": stage.multiple_of, **chosen,
        "groups": {"pruned": len(keep), "prunable": len(graph.prunable()),
                   "left_alone": len({g.id for g in graph.groups.values() if g.pinned and g.producers})},
        "channels": per_layer_channels(graph, smaller),
        "left_alone": graph.left_alone(),
        "macs": {"before": count_macs(model), "after": count_macs(smaller)},
        "params": {"before": int(model.count_params()), "after": int(smaller.count_params())},
        "rebuild_max_abs_delta": delta,
        "top1_before_finetune": round(before, 6) if before is not None else None,
    }
    return ChannelsResult(smaller, record)

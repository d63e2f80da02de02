"""Selective re-quantization, the loop the TFLite and ONNX accuracy-aware searches share: worst
ranked first, keep a layer's output in float and re-quantize, until the drop is within budget
(edgekit.quality.accuracy_aware orchestrates; each format's search.py says how it re-quantizes).
Keeping a layer's *output* in float takes the layer and the layers reading that output: both
runtimes' int8 kernels requantize every int8 op's output, and a reader quantizes its input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgekit.formats.graph import Unit, float_names


def units_to_json(units: list[Unit]) -> list[dict]:
    return [{"name": u.name, "kind": u.kind, "key": list(u.key), "macs": u.macs, "end": u.end,
             "consumers": u.consumers} for u in units]


def units_from_json(items: list[dict]) -> list[Unit]:
    return [Unit(i["name"], i["kind"], tuple(i["key"]), i["macs"], i["end"], consumers=i["consumers"]) for i in items]


def top1_of_file(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from edgekit.support.scores import top1
    from edgekit.formats.runner import open_runner

    return float(np.mean(top1(open_runner(path).predict(x)) == y))


def greedy(units: list[Unit], ranking: list[str], paired: dict, quantize, measure, reference_top1: float,
           max_drop: float, max_steps: int, out: Path) -> dict:
    """Float the ranked layers one at a time (each with its readers) until the drop is ≤ max_drop;
    the best file seen ends at `out`."""
    by_name = {u.name: u for u in units}
    roots, floated, steps, best = [], [], [], None
    for name in ranking:
        if name in floated or name not in by_name or len(steps) >= max_steps:
            continue
        roots.append(name)
        floated += [n for n in [name, *by_name[name].consumers] if n not in floated]
        names = list(dict.fromkeys(n for r in roots for n in float_names(by_name[r], paired)))
        candidate = quantize(names, len(steps))
        top1 = measure(candidate)
        step = {"float_layers": [u.name for u in units if u.name in floated], "top1": round(top1, 6),
                "drop_points": round(100 * (reference_top1 - top1), 3)}
        steps.append(step)
        if best is None or top1 > best["top1"]:
            best = step
            shutil.copyfile(candidate, out)
        if step["drop_points"] <= max_drop:
            break
    stopped = len(steps) >= max_steps and best["drop_points"] > max_drop
    return {"steps": steps, "best": best, "stopped_at_limit": stopped}


def int8_mac_share(units: list[Unit], floated: list[str]) -> float | None:
    total = sum(u.macs for u in units)
    return round(sum(u.macs for u in units if u.name not in floated) / total, 4) if total else None

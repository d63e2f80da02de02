"""Accuracy-aware int8: when plain int8 loses more than `max_drop` top-1 points on --val,
return the fewest layers to float until it does not.

Layers are ranked by the error each adds in that format's own plain int8 file
(edgekit.quality.diagnose: SQNR lost at the layer). Each format re-quantizes its own way, a step
named by its package (edgekit/formats/*/search.py): TFLite and ONNX keep the ranked layers'
outputs in float one at a time (edgekit.formats.selective), OpenVINO uses NNCF's accuracy control.
This module runs those steps for every int8 file that needs one and records the result.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.formats import get_format
from edgekit.formats.selective import int8_mac_share, units_to_json


# --- in the compress pipeline --------------------------------------------------------------

@dataclass
class Searched:
    """One int8 file's search: its record for the report and the plain int8 file kept aside."""

    artifact_id: str
    record: dict
    plain: Path | None  # the plain int8 file (moved to scratch), benchmarked beside the chosen one
    plain_size: int


def search_all(max_drop: float, max_steps: int, keras_model, request, artifacts, verdicts, diagnostics: list[dict] | None,
               evidence, log) -> dict[str, Searched]:
    """Every PTQ int8 file that loses more than max_drop points gets a mixed-precision
    replacement (same file name); verdicts are redone for the replaced files."""
    from edgekit.support.scores import top1
    from edgekit.quality.layer_graph import keras_units
    from edgekit.quality.verify import verify

    reference = float(np.mean(top1(evidence.reference) == evidence.labels))
    units = keras_units(keras_model)
    by_id = {d["artifact"]: d for d in diagnostics or []}
    val_x, val_y = request.scratch / "val-x.npy", request.scratch / "val-y.npy"
    np.save(val_x, evidence.x)
    np.save(val_y, evidence.labels)
    searched = {}
    for i, artifact in enumerate(artifacts):
        if artifact.precision != "int8":
            continue
        plain_top1 = verdicts[i].accuracy["top1"]
        record = {"max_drop": max_drop, "reference_top1": round(reference, 6),
                  "plain_int8": {"top1": plain_top1, "drop_points": round(100 * (reference - plain_top1), 3),
                                 "size_bytes": artifact.size_bytes}}
        if record["plain_int8"]["drop_points"] <= max_drop:
            searched[artifact.id] = Searched(artifact.id, record | {"needed": False}, None, artifact.size_bytes)
            continue
        plain = _move(artifact.files, request.scratch / "plain-int8")  # measured beside the mix, not shipped
        ranking = [layer["layer"] for layer in by_id.get(artifact.id, {}).get("layers", [])]
        kwargs = {"calibration": request.calibration, "val_x": str(val_x), "val_y": str(val_y),
                  "reference_top1": reference, "max_drop": max_drop, "max_steps": max_steps,
                  "units": units_to_json(units), "out": str(artifact.path)}
        fmt = get_format(artifact.format)
        kwargs |= fmt.part("search_inputs")(request, ranking, log)
        result = request.run(fmt.part("search_step"), f"{artifact.id}: accuracy-aware int8 (≤ {max_drop:g} points)",
                             fmt.step("search"), kwargs, log)
        best = result["best"]
        if best is None:  # nothing to return to float: no conv/dense layer was matched in the file
            _move([plain.parent / f.name for f in artifact.files], artifact.path.parent)
            plain = None
            best = {"float_layers": [], "top1": plain_top1, "drop_points": record["plain_int8"]["drop_points"]}
        record |= {"needed": True, "method": fmt.part("search_method"), "ranking": ranking[:10],
                   "steps": result["steps"], "float_layers": best["float_layers"], "top1": best["top1"],
                   "drop_points": best["drop_points"], "reached": best["drop_points"] <= max_drop,
                   "int8_mac_share": int8_mac_share(units, best["float_layers"]),
                   "stopped_at_step_limit": result["stopped_at_limit"]}
        with log.step(f"Verify {artifact.path.name} (accuracy-aware)"):
            verdicts[i] = verify(artifact, evidence)
        searched[artifact.id] = Searched(artifact.id, record, plain, record["plain_int8"]["size_bytes"])
    return searched


def _move(files: list[Path], folder: Path) -> Path:
    """Move an artifact's files into `folder`; return its main file's new path."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.move(str(file), folder / file.name)
    return folder / files[0].name


def add_to_report(report: dict, searched: dict[str, Searched], latencies: list[dict] | None) -> None:
    """Each searched artifact's record, with what the mix cost against plain int8."""
    if not searched:
        return
    plain_latency = {}
    if latencies:
        extra = latencies[len(report["artifacts"]):]
        waiting = [s for s in searched.values() if s.plain is not None]
        plain_latency = {s.artifact_id: t["p50"] for s, t in zip(waiting, extra)}
    for entry in report["artifacts"]:
        found = searched.get(entry["id"])
        if found is None:
            continue
        record = found.record
        if record.get("needed"):
            record["cost"] = {"size": round(entry["size_bytes"] / found.plain_size, 3)}
            p50 = (entry.get("latency_ms") or {}).get("p50")
            if found.artifact_id in plain_latency and p50:
                record["plain_int8"]["latency_p50_ms"] = plain_latency[found.artifact_id]
                record["cost"]["latency"] = round(p50 / plain_latency[found.artifact_id], 3)
        entry["accuracy_aware"] = record


def unreached(report: dict) -> list[str]:
    """Why each format missed the budget: the step limit, or every ranked layer already in float."""
    missed = []
    for a in report["artifacts"]:
        record = a.get("accuracy_aware") or {}
        if not record.get("needed") or record["reached"]:
            continue
        why = ("stopped at max_steps " + str(len(record["steps"])) if record["stopped_at_step_limit"]
               else "no more layers to return to float")
        missed.append(f"{a['id']} best {record['drop_points']:.2f} points with {len(record['float_layers'])} "
                      f"layers in float ({why})")
    return missed

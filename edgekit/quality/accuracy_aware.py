"""Accuracy-aware int8: when plain int8 loses more than `max_drop` top-1 points on --val,
return the fewest layers to float until it does not.

TFLite and ONNX share one method. Layers are ranked by the error each adds in that format's
own plain int8 file (edgekit.quality.diagnose: SQNR lost at the layer). Then, worst first, a layer's
output is kept in float and the file re-quantized, until the drop is within bounds:
- TFLite: the converter's selective quantization (`denylisted_nodes`) on a model calibrated once;
- ONNX: ONNX Runtime's `quantize_static(nodes_to_exclude=…)`.
Keeping a layer's *output* in float takes the layer and the layers reading that output: both
runtimes' int8 kernels requantize every int8 op's output, and a reader quantizes its input.

OpenVINO uses NNCF's `quantize_with_accuracy_control`, the format's own and better tool: it
ranks by removing each quantizer in place (no re-quantization) and measuring, and OpenVINO's
int8 ops give float outputs, so removing the one FakeQuantize at a reader's input is enough.

Every function named `*_search` is a step (edgekit.support.steps): paths in, a file and a record out.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.quality.layer_graph import Unit, file_chains, float_names, match


def units_to_json(units: list[Unit]) -> list[dict]:
    return [{"name": u.name, "kind": u.kind, "key": list(u.key), "macs": u.macs, "end": u.end,
             "consumers": u.consumers} for u in units]


def units_from_json(items: list[dict]) -> list[Unit]:
    return [Unit(i["name"], i["kind"], tuple(i["key"]), i["macs"], i["end"], consumers=i["consumers"]) for i in items]


def _top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from edgekit.quality.evaluation import top1
    from edgekit.runtime import open_runner

    return float(np.mean(top1(open_runner(path).predict(x)) == y))


def _greedy(units: list[Unit], ranking: list[str], paired: dict, quantize, measure, reference_top1: float,
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


def tflite_search(source: dict, calibration: str, val_x: str, val_y: str, reference_top1: float, max_drop: float,
                  max_steps: int, units: list[dict], ranking: list[str], out: str) -> dict:
    """A step: calibrate once, then quantize with more layers denylisted until within max_drop."""
    from tensorflow.lite.python import convert as tflite_convert

    from edgekit.export.tflite import configure, converter_for

    with converter_for(source) as converter:
        configure(converter, "int8", calibration, "float32", qat=False)
        converter._experimental_calibrate_only = True  # noqa: SLF001 - what QuantizationDebugger does
        calibrated = converter.convert()
    calibrated_path = Path.cwd() / "calibrated.tflite"
    calibrated_path.write_bytes(calibrated)
    units_ = units_from_json(units)
    paired = match(units_, file_chains(calibrated_path, "tflite"))
    x, y = np.load(val_x), np.load(val_y)

    def quantize(names: list[str], step: int) -> Path:
        path = Path.cwd() / f"search-{step}.tflite"
        path.write_bytes(tflite_convert.mlir_quantize(calibrated, denylisted_nodes=names))
        return path

    return _greedy(units_, ranking, paired, quantize, lambda p: _top1(p, x, y), reference_top1, max_drop, max_steps,
                   Path(out))


def onnx_search(fp32: str, calibration: str, input_name: str, val_x: str, val_y: str, reference_top1: float,
                max_drop: float, max_steps: int, units: list[dict], ranking: list[str], out: str) -> dict:
    """A step: quantize_static with more nodes excluded until within max_drop."""
    import onnx

    from edgekit.export.onnx import prepare, quantize_static

    prepared = prepare(fp32)
    units_ = units_from_json(units)
    paired = match(units_, file_chains(onnx.load(prepared), "onnx"))
    x, y = np.load(val_x), np.load(val_y)

    def quantize(names: list[str], step: int) -> Path:
        path = Path.cwd() / f"search-{step}.onnx"
        quantize_static(prepared, str(path), calibration, input_name, exclude=names, prepared=True)
        return path

    return _greedy(units_, ranking, paired, quantize, lambda p: _top1(p, x, y), reference_top1, max_drop, max_steps,
                   Path(out))


def openvino_search(fp32: str, calibration: str, val_x: str, val_y: str, reference_top1: float, max_drop: float,
                    max_steps: int, units: list[dict], out: str) -> dict:
    """A step: NNCF's accuracy control with an absolute top-1 budget."""
    from edgekit.errors import require
    from edgekit.quality.evaluation import top1
    from edgekit.export.openvino import _quiet_nncf

    ov, nncf = require("openvino", "openvino"), _quiet_nncf()
    x, y = np.load(val_x), np.load(val_y)
    calib = np.load(calibration)

    def validate(compiled, items):
        output = compiled.outputs[0]
        hits = [float(top1(compiled(batch)[output])[0] == label) for batch, label in items]
        return (float(np.mean(hits)) if hits else 0.0), hits  # per-sample values: NNCF ranks on them

    quantized = nncf.quantize_with_accuracy_control(
        ov.Core().read_model(fp32), nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]),
        nncf.Dataset([(x[i:i + 1], int(y[i])) for i in range(len(x))]), validation_fn=validate,
        max_drop=max_drop / 100, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib),
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=max_steps))
    ov.save_model(quantized, out, compress_to_fp16=False)
    units_ = units_from_json(units)
    top = _top1(Path(out), x, y)
    floated = float_layers_openvino(Path(out), units_)
    step = {"float_layers": floated, "top1": round(top, 6), "drop_points": round(100 * (reference_top1 - top), 3)}
    return {"steps": [step], "best": step, "stopped_at_limit": False}


OPENVINO_LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "MaxPool", "Pad"}


def float_layers_openvino(path: Path, units: list[Unit]) -> list[str]:
    """Units whose conv/matmul input has no FakeQuantize before it (looking back through
    transposes, reshapes and pools): OpenVINO runs those in float."""
    paired = match(units, file_chains(path, "openvino"))
    return [u.name for u in units if u.name in paired and not _fake_quantized_input(paired[u.name].head)]


def _fake_quantized_input(op, depth: int = 0) -> bool:
    source = op.input(0).get_source_output().get_node()
    kind = source.get_type_name()
    if kind == "FakeQuantize":
        return True
    return kind in OPENVINO_LAYOUT_OPS and depth < 6 and _fake_quantized_input(source, depth + 1)


def int8_mac_share(units: list[Unit], floated: list[str]) -> float | None:
    total = sum(u.macs for u in units)
    return round(sum(u.macs for u in units if u.name not in floated) / total, 4) if total else None


# --- in the compress pipeline --------------------------------------------------------------

@dataclass
class Searched:
    """One int8 file's search: its record for the report and the plain int8 file kept aside."""

    artifact_id: str
    record: dict
    plain: Path | None  # the plain int8 file (moved to scratch), benchmarked beside the chosen one
    plain_size: int


SEARCH_STEPS = {"tflite": ("tflite", "edgekit.quality.accuracy_aware:tflite_search"),
                "onnx": ("onnx-quantize", "edgekit.quality.accuracy_aware:onnx_search"),
                "openvino": ("openvino-quantize", "edgekit.quality.accuracy_aware:openvino_search")}
METHODS = {"tflite": "ranked by added SQNR loss; TFLite selective quantization (denylisted_nodes)",
           "onnx": "ranked by added SQNR loss; ONNX Runtime quantize_static(nodes_to_exclude)",
           "openvino": "NNCF quantize_with_accuracy_control (its own ranking, absolute drop)"}


def search_all(max_drop: float, max_steps: int, keras_model, request, artifacts, verdicts, diagnostics: list[dict] | None,
               evidence, log) -> dict[str, Searched]:
    """Every PTQ int8 file that loses more than max_drop points gets a mixed-precision
    replacement (same file name); verdicts are redone for the replaced files."""
    from edgekit.quality.evaluation import top1
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
        kwargs |= _format_inputs(artifact.format, request, ranking, log)
        kind, target = SEARCH_STEPS[artifact.format]
        result = request.run(kind, f"{artifact.id}: accuracy-aware int8 (≤ {max_drop:g} points)", target, kwargs, log)
        best = result["best"]
        if best is None:  # nothing to return to float: no conv/dense layer was matched in the file
            _move([plain.parent / f.name for f in artifact.files], artifact.path.parent)
            plain = None
            best = {"float_layers": [], "top1": plain_top1, "drop_points": record["plain_int8"]["drop_points"]}
        record |= {"needed": True, "method": METHODS[artifact.format], "ranking": ranking[:10],
                   "steps": result["steps"], "float_layers": best["float_layers"], "top1": best["top1"],
                   "drop_points": best["drop_points"], "reached": best["drop_points"] <= max_drop,
                   "int8_mac_share": int8_mac_share(units, best["float_layers"]),
                   "stopped_at_step_limit": result["stopped_at_limit"]}
        with log.step(f"Verify {artifact.path.name} (accuracy-aware)"):
            verdicts[i] = verify(artifact, evidence)
        searched[artifact.id] = Searched(artifact.id, record, plain, record["plain_int8"]["size_bytes"])
    return searched


def _format_inputs(fmt: str, request, ranking: list[str], log) -> dict:
    """TFLite re-converts from the model itself; ONNX and OpenVINO re-quantize their fp32 file."""
    if fmt == "tflite":
        return {"source": request.source, "ranking": ranking}
    fp32 = str(request.files(fmt, "fp32")[0])
    if fmt == "onnx":
        return {"fp32": fp32, "input_name": request.graph_source(log)["input_name"], "ranking": ranking}
    return {"fp32": fp32}


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

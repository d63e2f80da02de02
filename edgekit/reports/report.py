"""report.json (the contract: README, "What it writes") and report.md, its readable twin. The
terminal's tables are in edgekit.reports.terminal; the lines and rows both share, in edgekit.reports.text."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from edgekit.reports.text import accuracy_aware_lines, count, headers, pct, repair_lines, rows, stage_lines
from edgekit.support.version import __version__

SCHEMA = "edgekit.reports.report/1"


def artifact_entry(verdict, fp32_sizes: dict[str, int], sparsity: float) -> dict:
    a = verdict.artifact
    fp32 = fp32_sizes.get(a.format)
    return {
        "id": a.id,
        "format": a.format,
        "precision": a.precision,
        "path": a.path.name,
        "files": [f.name for f in a.files],
        "size_bytes": a.size_bytes,
        "size_vs_fp32": round(a.size_bytes / fp32, 4) if fp32 else None,
        "sparsity": sparsity,
        "io_dtype": a.io_dtype,
        "settings": a.settings,
        "verification": verdict.check,
        "accuracy": verdict.accuracy,
        "agreement": round(verdict.agreement, 6),
        "latency_ms": None,
        "device": "host",
    }


def environment() -> dict:
    from importlib import metadata

    versions = {}
    for dist in ("tensorflow", "tf-keras", "tf2onnx", "onnx", "onnxruntime", "openvino", "nncf", "ai-edge-litert"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or None, "versions": versions}


def write_json(report: dict, path: Path) -> None:
    """Through the schema `gate` reads with, as strict JSON: a report edgekit writes is one it accepts."""
    from edgekit.reports.report_schema import validate_report

    validate_report(report)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def diagnostics_markdown(report: dict, top: int = 5) -> list[str]:
    found = [d for d in report.get("diagnostics") or [] if d["layers"]]
    if not found:
        return []
    lines = ["", f"## Per-layer int8 error (worst {top} per file, against the Keras float model)", "",
             "| artifact | layer | SQNR dB | lost dB | rel RMSE | float range | outlier × |", "|---|---|---|---|---|---|---|"]
    for d in found:
        for layer in d["layers"][:top]:
            low, high = layer["float_range"]
            lines.append(f"| {d['artifact']} | {layer['layer']} | {layer['sqnr_db']:.1f} | {layer['added_db']:.1f} | "
                         f"{layer['relative_rmse']:.3g} | {low:.3g} … {high:.3g} | {layer['outlier_ratio'] or '—'} |")
    return lines


def _describe_calibration(calib: dict | None) -> str:
    if calib is None:
        return "none — weight-only int8 where int8 was asked (full int8 needs --data)"
    return f"{calib['samples']} samples from `{calib['path']}` (preprocess {calib['preprocess']})"


def render_markdown(report: dict) -> str:
    src = report["source"]
    ref = (report["reference"] or {}).get("accuracy")
    calib = report["data"]["calibration"]
    lines = [
        f"# edgekit report: `{src['path']}`",
        "",
        f"- Model: {src['keras']} ({src['format']}), input {src['input_shape']}, {src['num_classes']} classes, "
        f"{src['params']:,} parameters, {count(src['macs'])} MACs",
        f"- Calibration: {_describe_calibration(calib)}",
        f"- Keras reference top-1: {pct(ref['top1']) if ref else 'not measured (no --val)'}",
        *[f"- {line}" for line in stage_lines(report)],
        *[f"- Accuracy-aware int8: {line}" for line in accuracy_aware_lines(report)],
        *[f"- {line}" for line in repair_lines(report)],
        "",
        "| " + " | ".join(headers(report)) + " |",
        "|" + "|".join("---" for _ in headers(report)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(report)]
    lines += diagnostics_markdown(report)
    lines += ["", f"edgekit {report['edgekit_version']} · schema `{report['schema']}`", ""]
    return "\n".join(lines)


def base_report() -> dict:
    return {"schema": SCHEMA, "edgekit_version": __version__}

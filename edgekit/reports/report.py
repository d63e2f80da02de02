"""report.json (the contract: README, "What it writes"), report.md, and the same table on the terminal."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

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


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _count(n) -> str:
    return "n/a" if n is None else f"{n:,}"


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _check(entry: dict) -> str:
    v = entry["verification"]
    if v["kind"] == "max_abs_diff":
        return f"Δ {v['max_abs_diff']:.1e}"  # max |Δ| vs Keras; no pipes: they break Markdown tables
    return f"agree {_pct(v['agreement'])}"


def _has_gzip(report: dict) -> bool:
    return any(a.get("gzip_bytes") for a in report["artifacts"])


def _headers(report: dict) -> tuple:
    return HEADERS[:4] + (("gzip",) if _has_gzip(report) else ()) + HEADERS[4:]


def _rows(report: dict):
    """(artifact, file, size, ×fp32, [gzip,] check, top-1, top-5) per artifact, for md and terminal."""
    gzip = _has_gzip(report)
    for a in report["artifacts"]:
        acc = a["accuracy"] or {}
        ratio = "—" if a["size_vs_fp32"] is None else f"{a['size_vs_fp32']:.2f}×"
        packed = (_size(a["gzip_bytes"]),) if gzip else ()
        latency = a.get("latency_ms") or {}
        p50 = "—" if not latency else f"{latency['p50']:.3g}"
        flag = " (mostly float)" if (a.get("quantization") or {}).get("mostly_float") else ""
        yield (a["id"] + flag, a["path"], _size(a["size_bytes"]), ratio, *packed, _check(a),
               _pct(acc.get("top1")), _pct(acc.get("top5")), p50)


HEADERS = ("artifact", "file", "size", "vs fp32", "check", "top-1", "top-5", "p50 ms")


def stage_lines(report: dict) -> list[str]:
    stages = report.get("stages") or {}
    lines = []
    original = ((report.get("reference") or {}).get("accuracy") or {}).get("top1")
    if "prune" in stages:
        p = stages["prune"]
        lines.append(f"{_top1_of(p, 'Pruned model', original)}: {p['sparsity']:.1%} zeros "
                     f"({p['schedule']['structure']}) in {_per_layer(p['per_layer'])}")
    if "qat" in stages:
        q = stages["qat"]
        left = f"; left in float: {', '.join(q['unquantized'])}" if q["unquantized"] else ""
        lines.append(f"{_top1_of(q, 'QAT model (fake-quant)', original)}: {q['scheme']}{left}")
        if q.get("fp32_artifacts"):
            lines.append(f"fp32 files: {q['fp32_artifacts']}")
    return lines


def accuracy_aware_lines(report: dict) -> list[str]:
    """One line per int8 file that --max-accuracy-drop changed: what it kept in float and what that cost."""
    from edgekit.quality.tolerance import signed_points

    lines = []
    for a in report["artifacts"]:
        record = a.get("accuracy_aware")
        if not record:
            continue
        plain = record["plain_int8"]
        if not record["needed"]:
            lines.append(f"{a['id']}: plain int8 is within {record['max_drop']:g} points "
                         f"({signed_points(-plain['drop_points'])}): kept as it is")
            continue
        cost = record.get("cost") or {}
        spent = ", ".join(f"{k} {v:.2f}×" for k, v in cost.items())
        verdict = "within" if record["reached"] else "NOT within"
        lines.append(f"{a['id']}: plain int8 {signed_points(-plain['drop_points'])}; in float: "
                     f"{', '.join(record['float_layers']) or 'none'} → top-1 {_pct(record['top1'])} "
                     f"({signed_points(-record['drop_points'])}, {verdict} {record['max_drop']:g}), "
                     f"{_pct(record['int8_mac_share'])} of MACs int8{'; vs plain int8: ' + spent if spent else ''}")
    return lines


def worst_layer_lines(report: dict) -> list[str]:
    """The layer that adds the most int8 error, per file (the report's diagnostics section)."""
    lines = []
    for d in report.get("diagnostics") or []:
        if d["layers"]:
            w = d["layers"][0]
            ratio = f", outlier ratio {w['outlier_ratio']:g}×" if w.get("outlier_ratio") else ""
            lines.append(f"{d['artifact']}: most int8 error added by {w['layer']} "
                         f"(SQNR {w['sqnr_db']:.1f} dB, {w['added_db']:.1f} dB lost there{ratio})")
    return lines


def render_diagnosis(result: dict, top: int = 10) -> Table:
    data = result["data"]
    table = Table(title=f"edgekit diagnose {result['model']} on {data['path']} ({data['samples']} samples)",
                  caption="worst first by SQNR lost at the layer; SQNR per channel, against the Keras float model",
                  box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    for h in ("artifact", "layer", "kind", "SQNR dB", "lost dB", "rel RMSE", "float range", "outlier ×"):
        table.add_column(h, justify="left" if h in ("artifact", "layer", "kind", "float range") else "right",
                         no_wrap=True)
    for a in result["artifacts"]:
        for layer in a["layers"][:top]:
            low, high = layer["float_range"]
            ratio = layer["outlier_ratio"]
            table.add_row(a["artifact"], layer["layer"], layer["kind"], f"{layer['sqnr_db']:.1f}",
                          f"{layer['added_db']:.1f}", f"{layer['relative_rmse']:.3g}", f"{low:.3g} … {high:.3g}",
                          f"{ratio:g}" if ratio else "—")
        if a.get("not_compared"):
            table.add_row(a["artifact"], f"not compared: {', '.join(a['not_compared'])}", "", "", "", "", "", "")
    return table


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


def _top1_of(stage: dict, what: str, original: float | None) -> str:
    """"Pruned model top-1 88.50% (-0.74 points)": the stage's result first, with its sign."""
    from edgekit.quality.tolerance import signed_points

    measured = stage.get("keras_accuracy")
    if not measured:
        return what
    change = f" ({signed_points(100 * (measured['top1'] - original))})" if original is not None else ""
    return f"{what} top-1 {_pct(measured['top1'])}{change}"


def _per_layer(per_layer: dict[str, float]) -> str:
    """Layers grouped by sparsity: "36 layers at 50%", or the few that differ by name."""
    groups: dict[str, list[str]] = {}
    for name, value in per_layer.items():
        groups.setdefault(f"{value:.0%}", []).append(name)
    parts = [f"{len(names)} layers at {value}" if len(names) > 3 else f"{', '.join(names)} at {value}"
             for value, names in groups.items()]
    return "; ".join(parts) or "no layers"


def render_table(report: dict) -> Table:
    """The terminal table: like report.md without the file column (the id names it)."""
    ref = (report["reference"] or {}).get("accuracy")
    caption = f"Keras reference top-1 {_pct(ref['top1'])}" if ref else "no validation labels: accuracy not measured"
    caption = "\n".join([*stage_lines(report), caption])
    # box.SIMPLE: no vertical rules, so the table fits 80 columns with the gzip column too
    table = Table(title=f"edgekit: {report['source']['path']}", caption=caption, box=box.SIMPLE,
                  collapse_padding=True, pad_edge=False)
    for h in _headers(report):
        if h != "file":
            table.add_column(h, justify="left" if h in ("artifact", "check") else "right", no_wrap=True)
    for row in _rows(report):
        table.add_row(*row[:1], *row[2:])
    return table


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
        f"{src['params']:,} parameters, {_count(src['macs'])} MACs",
        f"- Calibration: {_describe_calibration(calib)}",
        f"- Keras reference top-1: {_pct(ref['top1']) if ref else 'not measured (no --val)'}",
        *[f"- {line}" for line in stage_lines(report)],
        *[f"- Accuracy-aware int8: {line}" for line in accuracy_aware_lines(report)],
        "",
        "| " + " | ".join(_headers(report)) + " |",
        "|" + "|".join("---" for _ in _headers(report)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    lines += diagnostics_markdown(report)
    lines += ["", f"edgekit {report['edgekit_version']} · schema `{report['schema']}`", ""]
    return "\n".join(lines)


def base_report() -> dict:
    return {"schema": SCHEMA, "edgekit_version": __version__}


def _listing(items) -> str:
    from edgekit.intake.safety import group_layers

    if items is None:
        return "n/a"
    return group_layers(items) if items else "none"


def describe_format(facts: dict) -> str:
    """What wrote the file, as far as the file says: a SavedModel has no Keras version, and a
    Keras 2 version number alone does not tell tf_keras from standalone Keras 2."""
    if facts["format"] == "savedmodel":
        return "TensorFlow SavedModel"
    suffix = {"h5": ".h5 (HDF5)", "keras": ".keras (zip)"}.get(facts["format"], facts["format"])
    version = facts.get("keras_version") or ""
    if facts["keras"] == "keras3":
        return f"{suffix} · written by Keras {version or '3'}"
    return f"{suffix} · written by Keras {version or '2'} (tf_keras or standalone Keras 2), read with tf_keras"


def render_inspection(facts: dict) -> Table:
    """`edgekit inspect` as a two-column table."""
    table = Table(title=f"edgekit inspect: {facts['path']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    bridge = facts["bridge"]
    if bridge is None:
        bridged = "not needed" if facts["keras"] == "tf_keras" else "n/a"
    else:
        bridged = f"rebuilt as tf_keras (max |Δ| {bridge['max_abs_diff']:.1e})" if bridge["bridged"] else "not possible"
    macs = "n/a (no Keras layers)" if facts["macs"] is None else _count(facts["macs"])
    rows = [
        ("format", describe_format(facts)),
        ("file size", _size(facts["size_bytes"])),
        ("input", str(tuple(facts["input_shape"]))),
        ("output", str(tuple(facts["output_shape"]))),
        ("classes", str(facts["num_classes"])),
        ("parameters", f"{facts['params']:,}"),
        ("MACs / inference", macs),
        ("tf_keras bridge", bridged),
        ("bridge cannot translate", _listing(facts["bridge_untranslatable"])),
        ("pruning / QAT", "available" if facts["trainable_path"] else "not available (needs a tf_keras model)"),
        ("QAT cannot quantize", _listing(facts["qat_unsupported"])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def render_evaluation(result: dict) -> Table:
    data = result["data"]
    agree = "; ".join(f"{k} {_pct(v)}" for k, v in result["agreement"].items())
    table = Table(title=f"edgekit eval on {data['path']} ({data['samples']} samples)",
                  caption=f"top-1 agreement: {agree}" if agree else None, box=box.SIMPLE, collapse_padding=True,
                  pad_edge=False)
    for h in ("artifact", "format", "input", "top-1", "top-5"):
        table.add_column(h, justify="right" if h.startswith("top") else "left", no_wrap=True)
    for a in result["artifacts"]:
        table.add_row(a["name"], a["format"], a["input"]["dtype"], _pct(a["accuracy"]["top1"]),
                      _pct(a["accuracy"]["top5"]))
    return table


def render_bench(results: list[dict]) -> Table:
    host = results[0]["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in host["runtimes"].items() if v)
    where = f"measured on {results[0]['remote']} ({host['hostname']})" if results[0].get("remote") else "measured here"
    if results[0].get("device") not in (None, "host", results[0].get("remote")):
        where += f" as device {results[0]['device']}"
    table = Table(title=f"edgekit bench on {host['cpu']} ({host['arch']}; {' '.join(host['isa']) or 'no SIMD flags'})",
                  caption=f"{where}, batch 1 · {versions}", box=box.SIMPLE, collapse_padding=True,
                  pad_edge=False)
    # mean, std, min, max and the first inference are in --json; the table keeps to 80 columns
    for h in ("artifact", "runs", "init ms", "p50 ms", "p90 ms", "p99 ms", "per s", "RSS MB"):
        table.add_column(h, justify="left" if h == "artifact" else "right", no_wrap=True)
    for r in results:
        table.add_row(Path(r["path"]).name, str(r["runs"]), f"{r['init_ms']:.3g}", f"{r['p50']:.3g}",
                      f"{r['p90']:.3g}", f"{r['p99']:.3g}", f"{r['throughput_per_s']:.0f}", f"{r['peak_rss_mb']:.0f}")
    return table


def render_estimates(results: list[dict]) -> Table:
    """Estimates get their own table, titled as such: never beside measured numbers."""
    first = results[0]
    table = Table(title=f"ESTIMATED latency on {first['device']} (not measured)",
                  caption=f"{first['method']}\nefficiency {first['efficiency']:.3g}, {first['basis']}",
                  box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    for h in ("artifact", "precision", "computes in", "MMACs", "bound", "estimate ms"):
        table.add_column(h, justify="left" if h == "artifact" else "right", no_wrap=h != "artifact")
    for r in results:
        table.add_row(Path(r["path"]).name, r["precision"], r["computes_in"], f"{r['macs'] / 1e6:.3g}", r["bound"],
                      f"{r['latency_ms']['estimate']:.3g}")
    notes = [n for n in (first.get("toolchain"), first.get("gpu_runtime_here") and
                         f"GPU runtime on this machine: {first['gpu_runtime_here']}") if n]
    if notes:
        table.caption += "\n" + "\n".join(notes)
    return table


def render_devices(profiles: list[dict]) -> Table:
    table = Table(title="Device profiles (edgekit devices NAME for one in full)", box=box.SIMPLE,
                  collapse_padding=True, pad_edge=False)
    for h in ("name", "kind", "runtimes", "estimates"):  # precisions and the rest: `edgekit devices NAME`
        table.add_column(h, no_wrap=True)
    for p in profiles:
        ref = p.get("reference")
        basis = ("measured live" if p["name"] == "host" else
                 f"calibrated ({ref['precision']} {ref['latency_ms']:g} ms)" if ref else "uncalibrated")
        table.add_row(p["name"], p["kind"], ",".join(p["runtimes"]), basis)
    return table


def render_device(profile: dict) -> Table:
    table = Table(title=f"{profile['name']}: {profile['title']}", box=box.SIMPLE, show_header=False,
                  collapse_padding=True, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in profile.items():
        if key in ("name", "title"):
            continue
        if isinstance(value, dict):
            value = "\n".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(key, str(value).strip())
    return table


def render_gate(result: dict) -> Table:
    from edgekit.reports.gating import Check, describe

    checks = result["checks"]
    failed = sum(c["verdict"] == "fail" for c in checks)
    skipped = sum(c["verdict"] == "skipped" for c in checks)
    table = Table(title=f"edgekit gate: {'PASSED' if result['passed'] else 'FAILED'}",
                  caption=f"{len(checks)} checks: {failed} failed, {skipped} skipped · baseline {result['baseline']}",
                  box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    for h in ("artifact", "check", "verdict", "detail"):
        table.add_column(h, no_wrap=h != "detail")
    style = {"pass": "green", "fail": "bold red", "skipped": "yellow"}
    for c in checks:
        table.add_row(c["artifact"], c["check"], Text(c["verdict"], style=style[c["verdict"]]), describe(Check(**c)))
    return table

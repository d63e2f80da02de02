"""The words and rows a report is told in, shared by report.md, the terminal table and report.html."""

from __future__ import annotations

import statistics


def pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def count(n) -> str:
    return "n/a" if n is None else f"{n:,}"


def size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _check(entry: dict) -> str:
    v = entry["verification"]
    if v["kind"] == "max_abs_diff":
        return f"Δ {v['max_abs_diff']:.1e}"  # max |Δ| vs Keras; no pipes: they break Markdown tables
    return f"agree {pct(v['agreement'])}"


def _has_gzip(report: dict) -> bool:
    return any(a.get("gzip_bytes") for a in report["artifacts"])


def headers(report: dict) -> tuple:
    return HEADERS[:4] + (("gzip",) if _has_gzip(report) else ()) + HEADERS[4:]


def rows(report: dict):
    """(artifact, file, size, ×fp32, [gzip,] check, top-1, top-5) per artifact, for md and terminal."""
    gzip = _has_gzip(report)
    for a in report["artifacts"]:
        acc = a["accuracy"] or {}
        ratio = "—" if a["size_vs_fp32"] is None else f"{a['size_vs_fp32']:.2f}×"
        packed = (size(a["gzip_bytes"]),) if gzip else ()
        latency = a.get("latency_ms") or {}
        p50 = "—" if not latency else f"{latency['p50']:.3g}"
        flag = " (mostly float)" if (a.get("quantization") or {}).get("mostly_float") else ""
        yield (a["id"] + flag, a["path"], size(a["size_bytes"]), ratio, *packed, _check(a),
               pct(acc.get("top1")), pct(acc.get("top5")), p50)


HEADERS = ("artifact", "file", "size", "vs fp32", "check", "top-1", "top-5", "p50 ms")


def stage_lines(report: dict) -> list[str]:
    stages = report.get("stages") or {}
    lines = []
    original = ((report.get("reference") or {}).get("accuracy") or {}).get("top1")
    if "channels" in stages:
        c = stages["channels"]
        macs, params, ms = c["macs"], c["params"], c.get("host_latency_ms")
        faster = (f", {ms['file']} p50 on this host {ms['before']:.3g} → {ms['after']:.3g} ms"
                  if ms and ms["after"] else "")
        lines.append(f"{_top1_of(c, 'Channel-pruned model', original)}: {len(c['channels'])} layers narrower, MACs "
                     f"{macs['before']:,} → {macs['after']:,}, parameters {params['before']:,} → {params['after']:,}"
                     f"{faster}; agrees with the original on "
                     f"{pct(c['agreement_with_original'])}" + (f"; {len(c['left_alone'])} layers kept every channel"
                                                                if c["left_alone"] else ""))
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
    """One line per int8 file that --max-accuracy-drop changed: what it kept in float and what that
    cost; for integer-only files, one line per repair attempt it tried."""
    from edgekit.quality.tolerance import signed_points

    search = report.get("repair_search")
    lines = [f"integer-only, attempt {i + 1} ({a['attempt']}): worst int8 file "
             f"{signed_points(-a['worst_drop_points'])} "
             f"{'within' if a['within'] else 'NOT within'} {search['max_drop']:g}"
             f"{' → written' if i == search['chosen'] else ''}"
             for i, a in enumerate(search["attempts"])] if search else []
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
                     f"{', '.join(record['float_layers']) or 'none'} → top-1 {pct(record['top1'])} "
                     f"({signed_points(-record['drop_points'])}, {verdict} {record['max_drop']:g}), "
                     f"{pct(record['int8_mac_share'])} of MACs int8{'; vs plain int8: ' + spent if spent else ''}")
    return lines


def repair_lines(report: dict) -> list[str]:
    """The repairs' per-layer int8 SQNR, first stage to last, in one line."""
    record = (report.get("repairs") or {}).get("layer_sqnr_db")
    line = sqnr_summary(record) if record else None
    return [f"Repairs ({', '.join(record['stages'][1:])}): {line}"] if line else []


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


def _top1_of(stage: dict, what: str, original: float | None) -> str:
    """"Pruned model top-1 88.50% (-0.74 points)": the stage's result first, with its sign."""
    from edgekit.quality.tolerance import signed_points

    measured = stage.get("keras_accuracy")
    if not measured:
        return what
    change = f" ({signed_points(100 * (measured['top1'] - original))})" if original is not None else ""
    return f"{what} top-1 {pct(measured['top1'])}{change}"


def _per_layer(per_layer: dict[str, float]) -> str:
    """Layers grouped by sparsity: "36 layers at 50%", or the few that differ by name."""
    groups: dict[str, list[str]] = {}
    for name, value in per_layer.items():
        groups.setdefault(f"{value:.0%}", []).append(name)
    parts = [f"{len(names)} layers at {value}" if len(names) > 3 else f"{', '.join(names)} at {value}"
             for value, names in groups.items()]
    return "; ".join(parts) or "no layers"


def sqnr_summary(record: dict) -> str | None:
    """repairs.layer_sqnr_db from the first stage to the last, in one phrase: the median layer's
    int8 SQNR and the worst layer's (named)."""
    rows = record["layers"]
    first = [(r["sqnr_db"][0], r["layer"]) for r in rows if r["sqnr_db"][0] is not None]
    last = [(r["sqnr_db"][-1], r["layer"]) for r in rows if r["sqnr_db"][-1] is not None]
    if not first or not last or len(record["stages"]) < 2:
        return None
    median = f"{statistics.median(v for v, _ in first):.1f} → {statistics.median(v for v, _ in last):.1f} dB"
    (low, low_name), (high, high_name) = min(first), min(last)
    return f"per-layer int8 SQNR median {median}, worst {low:.1f} dB ({low_name}) → {high:.1f} dB ({high_name})"

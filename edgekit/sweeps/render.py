"""sweep.md and sweep.html: per device the front, the greyed dominated points and the pick.

The page is one self-contained file: the plots are inline SVG drawn here (no script, no
external file), so it opens anywhere and a browser test can find every point by its class.
Every name in it may come from a user's recipe file and is escaped.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from edgekit.formats import REGISTRY

FORMAT_COLOURS = {name: fmt.colour for name, fmt in REGISTRY.items()}
DOMINATED = "#c8c8c8"
PICK = "#d62728"
WIDTH, HEIGHT, MARGIN = 720, 380, (60, 20, 50, 60)  # left, top, bottom, right


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.4g} ms"


def _latency(on: dict) -> str:
    """A device's latency for a point: measured, or estimated with its likely band."""
    if "latency_ms" not in on:
        return f"cannot run: {on.get('incompatible') or on.get('error')}"
    band = on.get("likely_ms")
    return _ms(on["latency_ms"]) + (f" (estimate, likely {band[0]:.3g}–{band[1]:.3g})" if band else
                                    " (estimate)" if on.get("estimated") else "")


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def _device_rows(result: dict, device: dict) -> list[tuple[dict, dict]]:
    name = device["device"]
    rows = [(p, p["devices"].get(name) or {}) for p in result["points"]]
    return sorted(rows, key=lambda r: (r[1].get("latency_ms") is None, r[1].get("latency_ms") or 0, r[0]["id"]))


def _cell_counts(result: dict) -> str:
    cells = result["cells"]
    ok = sum(c["status"] == "ok" for c in cells)
    reused = sum(c["reused"] for c in cells)
    return f"{len(cells)} cells: {ok} ok ({reused} reused from an earlier run), {len(cells) - ok} failed"


# --- Markdown -------------------------------------------------------------------------------

def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(result: dict) -> str:
    lines = [f"# edgekit sweep: {_md(result['model'])}", "",
             f"- Keras float top-1 on {_md(result['val'])}: {_pct(result['reference_top1'])}; "
             f"accuracy budget {result['max_accuracy_drop']:g} points",
             f"- {_cell_counts(result)}; engine: {result['engine']['name']}", ""]
    for device in result["devices"]:
        lines += _device_markdown(result, device)
    lines += ["## Cells", "", "| cell | status | seconds | peak MiB | ran on | error or note |", "|---|---|---|---|---|---|"]
    for cell in result["cells"]:
        worker = cell.get("worker") or {}
        where = worker.get("node") or worker.get("host") or ""
        lines.append(f"| {_md(cell['name'])} | {cell['status']}{' (reused)' if cell['reused'] else ''} | "
                     f"{cell['seconds'] if cell['seconds'] is not None else ''} | {cell['peak_rss_mb'] or ''} | "
                     f"{_md(where)} | {_md(cell['error'] or cell['note'] or '')} |")
    return "\n".join(lines) + "\n"


def _device_markdown(result: dict, device: dict) -> list[str]:
    pick = device["pick"]
    lines = [f"## {_md(device['device'])}: {_md(device['title'])}", "",
             f"Latency {device['latency']}. Pick: " + (f"**{_md(pick)}**" if pick else f"none ({_md(device['why_no_pick'])})")
             + (f" (its estimated band overlaps {', '.join(map(_md, device['pick_overlaps']))}: the estimate cannot "
                "tell which is faster)" if device.get("pick_overlaps") else ""),
             "", "| artifact | format | precision | size | top-1 | latency | front | pick |", "|---|---|---|---|---|---|---|---|"]
    front = set(device["front"])
    for point, on in _device_rows(result, device):
        latency = _latency(on)
        lines.append(f"| {_md(point['id'])} | {point['format']} | {point['precision']} | {_kb(point['size_bytes'])} | "
                     f"{_pct(point['top1'])} | {_md(latency)} | {'✓' if point['id'] in front else ''} | "
                     f"{'★' if point['id'] == pick else ''} |")
    return lines + [""]


# --- HTML -------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 24px}td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px}
th{background:#f4f4f4}tr.pick td{background:#fde8e8;font-weight:600}tr.dominated td{color:#888}
.failed{color:#b00}svg{border:1px solid #eee;background:#fff}.legend span{margin-right:16px}"""


def render_html(result: dict) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>edgekit sweep: {escape(result['model'])}</title><style>{STYLE}</style></head><body>",
             f"<h1>edgekit sweep: {escape(result['model'])}</h1>",
             f"<p>Keras float top-1 on {escape(result['val'])}: <b>{_pct(result['reference_top1'])}</b>; "
             f"accuracy budget {result['max_accuracy_drop']:g} points. {escape(_cell_counts(result))}; "
             f"engine: {escape(result['engine']['name'])}.</p>", _legend()]
    for device in result["devices"]:
        parts.append(_device_html(result, device))
    parts.append(_cells_html(result))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _legend() -> str:
    dots = "".join(f'<span><svg width="12" height="12"><circle cx="6" cy="6" r="5" fill="{c}"/></svg> {f}</span>'
                   for f, c in FORMAT_COLOURS.items())
    return (f'<p class="legend">{dots}<span><svg width="12" height="12"><circle cx="6" cy="6" r="5" '
            f'fill="{DOMINATED}"/></svg> dominated</span><span><svg width="14" height="14"><circle cx="7" cy="7" '
            f'r="5" fill="none" stroke="{PICK}" stroke-width="2.5"/></svg> pick</span></p>')


def _device_html(result: dict, device: dict) -> str:
    pick = device["pick"]
    head = (f'<section class="device" id="device-{escape(device["device"])}"><h2>{escape(device["device"])}: '
            f'{escape(device["title"])}</h2><p>Latency {device["latency"]}; {device["runnable"]} of '
            f'{len(result["points"])} artifacts run there. Pick: '
            + (f'<b class="pick-name">{escape(pick)}</b>' if pick else f'none ({escape(device["why_no_pick"])})')
            + (f' (its estimated band overlaps {escape(", ".join(device["pick_overlaps"]))}: the estimate cannot '
               'tell which is faster)' if device.get("pick_overlaps") else "")
            + "</p>")
    return head + _plot(result, device) + _device_table(result, device) + "</section>"


def _device_table(result: dict, device: dict) -> str:
    front, pick = set(device["front"]), device["pick"]
    rows = ["<table><tr><th>artifact</th><th>format</th><th>precision</th><th>size</th><th>top-1</th>"
            "<th>latency</th><th>front</th></tr>"]
    for point, on in _device_rows(result, device):
        kind = "pick" if point["id"] == pick else ("front" if point["id"] in front else "dominated")
        latency = _latency(on)
        rows.append(f'<tr class="{kind}"><td>{escape(point["id"])}</td><td>{point["format"]}</td>'
                    f'<td>{point["precision"]}</td><td>{_kb(point["size_bytes"])}</td><td>{_pct(point["top1"])}</td>'
                    f'<td>{escape(latency)}</td><td>{"✓" if point["id"] in front else ""}</td></tr>')
    return "".join(rows) + "</table>"


def _plot(result: dict, device: dict) -> str:
    """Latency (log) against top-1: the front in format colours joined by a line, the rest grey,
    the pick ringed, the accuracy floor dashed."""
    name = device["device"]
    points = [(p, p["devices"][name]["latency_ms"]) for p in result["points"]
              if (p["devices"].get(name) or {}).get("latency_ms") is not None and p["top1"] is not None]
    if not points:
        return f'<p class="no-plot">Nothing to plot: {escape(device["why_no_pick"] or "no artifact runs there")}.</p>'
    floor = None if result["reference_top1"] is None else result["reference_top1"] - result["max_accuracy_drop"] / 100
    x_of, y_of, axes = _scales([ms for _, ms in points], [p["top1"] for p, _ in points] + ([floor] if floor else []))
    front = [pid for pid in device["front"]]
    by_id = {p["id"]: (p, ms) for p, ms in points}
    svg = [f'<svg class="front-plot" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'role="img" aria-label="top-1 against latency on {escape(name)}">', axes]
    if floor is not None:
        svg.append(f'<line class="floor" x1="{MARGIN[0]}" x2="{WIDTH - MARGIN[3]}" y1="{y_of(floor):.1f}" '
                   f'y2="{y_of(floor):.1f}" stroke="{PICK}" stroke-dasharray="5,4" stroke-width="1"/>')
    line = " ".join(f"{x_of(by_id[pid][1]):.1f},{y_of(by_id[pid][0]['top1']):.1f}" for pid in front)
    svg.append(f'<polyline class="front-line" points="{line}" fill="none" stroke="#444" stroke-width="1.5"/>')
    for point, ms in sorted(points, key=lambda item: item[0]["id"] in front):  # front drawn on top
        on_front = point["id"] in front
        colour = FORMAT_COLOURS.get(point["format"], "#555") if on_front else DOMINATED
        svg.append(f'<circle class="point {"front" if on_front else "dominated"}" cx="{x_of(ms):.1f}" '
                   f'cy="{y_of(point["top1"]):.1f}" r="6" fill="{colour}"><title>{escape(point["id"])}: top-1 '
                   f'{_pct(point["top1"])}, {_ms(ms)}, {_kb(point["size_bytes"])}</title></circle>')
    if device["pick"] in by_id:
        point, ms = by_id[device["pick"]]
        x, y = x_of(ms), y_of(point["top1"])
        anchor = "end" if x > WIDTH / 2 else "start"
        svg.append(f'<circle class="pick" cx="{x:.1f}" cy="{y:.1f}" r="11" fill="none" stroke="{PICK}" '
                   f'stroke-width="3"/><text x="{x + (-14 if anchor == "end" else 14):.1f}" y="{y - 12:.1f}" '
                   f'text-anchor="{anchor}" font-size="12" fill="{PICK}">pick: {escape(point["id"])}</text>')
    return "".join(svg) + "</svg>"


def _scales(latencies: list[float], accuracies: list[float]):
    """x: log10 latency; y: top-1 in percent, each padded so no point sits on the frame."""
    left, top, bottom, right = MARGIN
    lo, hi = math.log10(min(latencies)), math.log10(max(latencies))
    lo, hi = (lo - 0.15, hi + 0.15) if hi - lo > 1e-9 else (lo - 0.5, hi + 0.5)
    y_lo, y_hi = min(accuracies), max(accuracies)
    pad = max((y_hi - y_lo) * 0.12, 0.005)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def x_of(ms: float) -> float:
        return left + (math.log10(ms) - lo) / (hi - lo) * (WIDTH - left - right)

    def y_of(top1: float) -> float:
        return top + (y_hi - top1) / (y_hi - y_lo) * (HEIGHT - top - bottom)

    axes = [f'<line x1="{left}" y1="{HEIGHT - bottom}" x2="{WIDTH - right}" y2="{HEIGHT - bottom}" stroke="#888"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{HEIGHT - bottom}" stroke="#888"/>',
            f'<text x="{(WIDTH + left - right) / 2}" y="{HEIGHT - 12}" text-anchor="middle" font-size="12">'
            "latency, ms (log scale)</text>",
            f'<text x="14" y="{(HEIGHT - bottom + top) / 2}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 14 {(HEIGHT - bottom + top) / 2})">top-1, %</text>']
    for k in range(5):
        ms = 10 ** (lo + (hi - lo) * k / 4)
        axes.append(f'<text x="{x_of(ms):.1f}" y="{HEIGHT - bottom + 16}" text-anchor="middle" font-size="11">'
                    f"{ms:.3g}</text>")
        acc = y_lo + (y_hi - y_lo) * k / 4
        axes.append(f'<text x="{left - 6}" y="{y_of(acc) + 4:.1f}" text-anchor="end" font-size="11">'
                    f"{100 * acc:.1f}</text>")
    return x_of, y_of, "".join(axes)


def _cells_html(result: dict) -> str:
    rows = ["<h2>Cells</h2><table><tr><th>cell</th><th>status</th><th>seconds</th><th>peak MiB</th>"
            "<th>ran on</th><th>error or note</th></tr>"]
    for cell in result["cells"]:
        worker = cell.get("worker") or {}
        status = cell["status"] + (" (reused)" if cell["reused"] else "")
        rows.append(f'<tr class="{"failed" if cell["status"] != "ok" else "ok"}"><td>{escape(cell["name"])}</td>'
                    f"<td>{escape(status)}</td><td>{cell['seconds'] if cell['seconds'] is not None else ''}</td>"
                    f"<td>{cell['peak_rss_mb'] or ''}</td>"
                    f"<td>{escape(str(worker.get('node') or worker.get('host') or ''))}</td>"
                    f"<td>{escape(cell['error'] or cell['note'] or '')}</td></tr>")
    return "".join(rows) + "</table>"


# --- terminal ---------------------------------------------------------------------------------

def render_summary(result: dict):
    """Per device: how many artifacts run there, the front's size and the pick."""
    from rich.console import Group
    from rich.table import Table

    by_id = {p["id"]: p for p in result["points"]}
    table = Table(title=f"edgekit sweep: {result['model']} · {_cell_counts(result)}")
    for column in ("device", "latency", "runs", "front", "pick", "top-1", "p50 / estimate", "size"):
        table.add_column(column)
    for device in result["devices"]:
        point = by_id.get(device["pick"])
        on = (point or {}).get("devices", {}).get(device["device"], {})
        table.add_row(device["device"], device["latency"], f"{device['runnable']}/{len(result['points'])}",
                      str(len(device["front"])), device["pick"] or f"none: {device['why_no_pick']}",
                      _pct(point["top1"]) if point else "", _latency(on) if point else "",
                      _kb(point["size_bytes"]) if point else "")
    floor = "" if result["reference_top1"] is None else (
        f"Keras float top-1 {_pct(result['reference_top1'])}, budget {result['max_accuracy_drop']:g} points. ")
    # sweep.json keeps paths relative to the sweep folder (it moves with it); here they are
    # shown as the user can open them from where they typed the command
    shipped = "".join(f"Pick for {device['device']}: {Path(result['output']) / by_id[device['pick']]['path']}\n"
                      for device in result["devices"] if device["pick"] in by_id)
    shipped += "".join(f"  on {device['device']} the estimate cannot tell it from {', '.join(device['pick_overlaps'])} "
                       "(their likely bands overlap)\n" for device in result["devices"] if device.get("pick_overlaps"))
    return Group(table, f"{shipped}{floor}Wrote {result['output']}/sweep.json, sweep.md and sweep.html")

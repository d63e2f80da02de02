"""report.html: one self-contained page (inline CSS, plots as embedded PNG, no scripts, no
links out) with the artifact table and three plots: accuracy against latency, size per
artifact, and the latency distribution of each artifact's measured runs."""

from __future__ import annotations

import base64
import html
import io

from edgekit.formats import REGISTRY

FORMAT_COLOURS = {name: fmt.colour for name, fmt in REGISTRY.items()}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
.muted { color: #777; } .fail { color: #b00020; font-weight: bold; }
"""


def render_html(report: dict, samples: dict[str, list[float]] | None = None) -> str:
    samples = samples or {}
    source = report["source"]
    title = f"edgekit report: {html.escape(str(source['path']))}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{title}</h1>", _summary(report), _stages(report),
             _accuracy_aware(report), _repairs(report), _table(report)]
    for caption, figure in (("Accuracy against latency: up and to the left is better", _tradeoff_plot(report)),
                            ("Size of each artifact", _size_plot(report)),
                            ("Latency of the measured runs: box p25-p75, line p50, whiskers p1-p99 (batch 1, this host)", _distribution_plot(report, samples))):
        parts.append(f"<figure><figcaption>{caption}</figcaption>{figure}</figure>")
    parts.append(_diagnostics(report))
    parts.append(f"<p class=\"muted\">edgekit {html.escape(str(report.get('edgekit_version')))} · "
                 f"{html.escape(str(report.get('created', '')))} · schema {html.escape(report['schema'])}</p>")
    return "\n".join(parts) + "\n</body></html>\n"


def _summary(report: dict) -> str:
    source, reference = report["source"], (report.get("reference") or {}).get("accuracy") or {}
    host = report.get("host") or {}
    macs = "MACs unknown" if source.get("macs") is None else f"{source['macs'] / 1e6:.3g} M MACs"
    params = "parameters unknown" if source.get("params") is None else f"{source['params']:,} parameters"
    items = [f"{params}, {macs}, input {source.get('input_shape')}, {source.get('num_classes')} classes "
             f"({source.get('keras')})"]
    if reference.get("top1") is not None:
        items.append(f"Keras fp32 reference top-1: {100 * reference['top1']:.2f}%")
    if host:
        items.append(f"latency measured on {host.get('cpu')} ({host.get('arch')})")
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _stages(report: dict) -> str:
    """Pruning and QAT, as report.md shows them: sparsity per layer, scheme, layers left in
    float, the accuracy after each stage; gzip sizes are in the table."""
    from edgekit.reports.text import stage_lines

    lines = stage_lines(report)
    if not lines:
        return ""
    return "<h2>Stages</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def _accuracy_aware(report: dict) -> str:
    from edgekit.reports.text import accuracy_aware_lines

    lines = accuracy_aware_lines(report)
    if not lines:
        return ""
    return "<h2>Accuracy-aware int8</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


REPAIR_ROWS = 15  # layers in the repairs table: the worst before the repairs


def _repairs(report: dict) -> str:
    """Per-layer int8 SQNR after each repair (report.json repairs.layer_sqnr_db), worst layers first."""
    record = (report.get("repairs") or {}).get("layer_sqnr_db")
    if not record or not record["layers"]:
        return ""
    rows = sorted(record["layers"], key=lambda r: (r["sqnr_db"][0] is None, r["sqnr_db"][0] or 0))[:REPAIR_ROWS]
    head = "".join(f"<th>{html.escape(s)}</th>" for s in record["stages"])
    body = "".join(f"<tr><td>{html.escape(r['layer'])}</td>"
                   + "".join(f"<td>{'—' if v is None else f'{v:.1f}'}</td>" for v in r["sqnr_db"]) + "</tr>"
                   for r in rows)
    return (f"<h2>Repairs: per-layer int8 SQNR (dB)</h2><p class=\"muted\">Each conv/dense layer alone on "
            f"{record['inputs']} evidence inputs: int8 weights and input against the float layer, after each repair; "
            f"the {len(rows)} worst before the repairs.</p><table><tr><th>layer</th>{head}</tr>{body}</table>")


DIAGNOSTIC_BARS = 15  # layers per chart: the worst ones


def _diagnostics(report: dict) -> str:
    """Per-layer int8 error: one bar chart per file, worst layers on top."""
    found = [d for d in report.get("diagnostics") or [] if d["layers"]]
    if not found:
        return ""
    parts = [f"<h2>Per-layer int8 error</h2><p>Each conv/dense layer's output against the Keras float model on "
             f"{found[0]['samples']} inputs. Bars: SQNR lost at the layer (what it adds to the error before it); "
             "labels: its SQNR and the outlier ratio of its float activations (largest channel peak / median).</p>"]
    for d in found:
        parts.append(f"<figure><figcaption>{html.escape(d['artifact'])}</figcaption>"
                     f"{_figure(lambda ax, d=d: draw_diagnosis(ax, d), alt='per-layer int8 error')}</figure>")
    return "\n".join(parts)


def draw_diagnosis(ax, diagnosis: dict) -> None:
    layers = diagnosis["layers"][:DIAGNOSTIC_BARS]
    colour = FORMAT_COLOURS.get(diagnosis["format"], "#555")
    positions = range(len(layers))
    ax.barh(list(positions), [l["added_db"] for l in layers], color=colour)
    ax.set_yticks(list(positions), [l["layer"] for l in layers], fontsize=8)
    ax.invert_yaxis()  # worst on top
    ax.set_xlabel("SQNR lost at the layer (dB)")
    top = max([l["added_db"] for l in layers] + [1.0])
    ax.set_xlim(0, top * 1.45)
    for i, l in enumerate(layers):
        ratio = f", outliers {l['outlier_ratio']:g}×" if l.get("outlier_ratio") else ""
        ax.text(l["added_db"] + top * 0.01, i, f"SQNR {l['sqnr_db']:.1f} dB{ratio}", va="center", fontsize=7)


def _table(report: dict) -> str:
    gzip = any(a.get("gzip_bytes") for a in report["artifacts"])
    rows = ["<tr><th>artifact</th><th>file</th><th>size KiB</th>" + ("<th>gzip KiB</th>" if gzip else "") +
            "<th>top-1 %</th><th>agreement %</th><th>p50 ms</th><th>p90 ms</th></tr>"]
    for a in report["artifacts"]:
        acc, lat = a.get("accuracy") or {}, a.get("latency_ms") or {}
        packed = [f"{a['gzip_bytes'] / 1024:.1f}" if a.get("gzip_bytes") else "—"] if gzip else []
        cells = [a["id"], a["path"], f"{a['size_bytes'] / 1024:.1f}", *packed, _pct(acc.get("top1")),
                 _pct(a.get("agreement")), _ms(lat.get("p50")), _ms(lat.get("p90"))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _ms(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _figure(draw, alt: str = "plot") -> str:
    """Draw on a fresh Agg figure and return it as an embedded PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=100)
    try:
        draw(ax)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt=\"{alt}\" src=\"data:image/png;base64,{data}\">"


def _missing(why: str) -> str:
    return f"<p class=\"muted\">{html.escape(why)}</p>"


ACCURACY_HALF_SPAN = 1.0  # points: a narrower axis makes 0.2 points of noise look like a cliff


def _tradeoff_plot(report: dict) -> str:
    points = tradeoff_points(report)
    if not points:
        return _missing(_why_no_tradeoff(report))
    return _figure(lambda ax: draw_tradeoff(ax, points))


def tradeoff_points(report: dict) -> list[tuple[dict, float, float]]:
    points = [(a, (a.get("latency_ms") or {}).get("p50"), (a.get("accuracy") or {}).get("top1"))
              for a in report["artifacts"]]
    return [(a, x, 100 * y) for a, x, y in points if x is not None and y is not None]


def _why_no_tradeoff(report: dict) -> str:
    has_accuracy = any(a.get("accuracy") for a in report["artifacts"])
    has_latency = any(a.get("latency_ms") for a in report["artifacts"])
    missing = ([] if has_accuracy else ["accuracy (pass --val with labelled validation data)"]) + \
              ([] if has_latency else ["latency (the run used --no-bench)"])
    return "No accuracy-against-latency plot: it needs " + " and ".join(missing) + "."


def draw_tradeoff(ax, points) -> None:
    """One marker per artifact (colour: format, shape: precision), named in a legend beside the
    plot: no text on the plot itself, so no label can overlap another, however many there are."""
    for a, x, y in points:
        ax.scatter(x, y, s=60, color=FORMAT_COLOURS.get(a["format"], "grey"),
                   marker=PRECISION_MARKERS.get(a["precision"], "D"), label=a["id"], edgecolors="black",
                   linewidths=0.5)
    ys = [y for _, _, y in points]
    middle, half = (max(ys) + min(ys)) / 2, max((max(ys) - min(ys)) / 2 * 1.15, ACCURACY_HALF_SPAN)
    ax.set_ylim(middle - half, middle + half)
    ax.set_xlabel("p50 latency, ms (batch 1)")
    ax.set_ylabel("top-1 accuracy, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


PRECISION_MARKERS = {"fp32": "o", "fp16": "^", "int8w": "v", "int8": "s", "int16x8": "D"}


def _size_plot(report: dict) -> str:
    def draw(ax):
        ids = [a["id"] for a in report["artifacts"]]
        sizes = [a["size_bytes"] / 1024 for a in report["artifacts"]]
        ax.bar(ids, sizes, color=[FORMAT_COLOURS.get(a["format"], "grey") for a in report["artifacts"]])
        ax.set_ylabel("KiB")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    return _figure(draw)


def _distribution_plot(report: dict, samples: dict[str, list[float]]) -> str:
    series = [(a["id"], samples[a["id"]]) for a in report["artifacts"] if samples.get(a["id"])]
    if not series:
        return _missing("No latency distribution: the run used --no-bench, so no latency was measured.")

    def draw(ax):
        ax.boxplot([s for _, s in series], whis=(1, 99), showfliers=False)  # whiskers: p1 to p99
        ax.set_xticks(range(1, len(series) + 1), [name for name, _ in series], rotation=30, fontsize=8)
        ax.set_ylabel("ms per inference (log scale)")
        ax.set_yscale("log")  # one slow outlier format must not flatten the others
        ax.grid(axis="y", alpha=0.3)
    return _figure(draw)

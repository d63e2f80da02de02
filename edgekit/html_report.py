"""report.html: one self-contained page (inline CSS, plots as embedded PNG, no scripts, no
links out) with the artifact table and three plots: accuracy against latency, size per
artifact, and the latency distribution of each artifact's measured runs."""

from __future__ import annotations

import base64
import html
import io

FORMAT_COLOURS = {"tflite": "#1f77b4", "onnx": "#ff7f0e", "openvino": "#2ca02c"}
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
             f"<style>{STYLE}</style></head><body>", f"<h1>{title}</h1>", _summary(report), _table(report)]
    for caption, figure in (("Accuracy against latency: up and to the left is better", _tradeoff_plot(report)),
                            ("Size of each artifact", _size_plot(report)),
                            ("Latency of the measured runs: box p25-p75, line p50, whiskers p1-p99 (batch 1, this host)", _distribution_plot(report, samples))):
        parts.append(f"<figure><figcaption>{caption}</figcaption>{figure}</figure>")
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


def _table(report: dict) -> str:
    rows = ["<tr><th>artifact</th><th>file</th><th>size KB</th><th>top-1 %</th><th>agreement %</th>"
            "<th>p50 ms</th><th>p90 ms</th></tr>"]
    for a in report["artifacts"]:
        acc, lat = a.get("accuracy") or {}, a.get("latency_ms") or {}
        cells = [a["id"], a["path"], f"{a['size_bytes'] / 1024:.1f}", _pct(acc.get("top1")), _pct(a.get("agreement")),
                 _ms(lat.get("p50")), _ms(lat.get("p90"))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _ms(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _figure(draw) -> str:
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
    return f"<img alt=\"plot\" src=\"data:image/png;base64,{data}\">"


def _missing(why: str) -> str:
    return f"<p class=\"muted\">{html.escape(why)}</p>"


def _tradeoff_plot(report: dict) -> str:
    points = [(a, (a.get("latency_ms") or {}).get("p50"), (a.get("accuracy") or {}).get("top1"))
              for a in report["artifacts"]]
    points = [(a, x, 100 * y) for a, x, y in points if x is not None and y is not None]
    if not points:
        return _missing("Needs validation data (--val or --data) and latency (without --no-bench).")

    def draw(ax):
        for a, x, y in points:
            ax.scatter(x, y, s=60, color=FORMAT_COLOURS.get(a["format"], "grey"),
                       marker="o" if a["precision"] == "fp32" else "s")
            ax.annotate(a["id"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel("p50 latency, ms (batch 1)")
        ax.set_ylabel("top-1 accuracy, %")
        ax.grid(alpha=0.3)
        _legend(ax)
    return _figure(draw)


def _legend(ax) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=f) for f, c in FORMAT_COLOURS.items()]
    handles += [Line2D([], [], color="grey", marker=m, linestyle="", label=label)
                for m, label in (("o", "fp32"), ("s", "quantized"))]
    ax.legend(handles=handles, fontsize=8, loc="best")


def _size_plot(report: dict) -> str:
    def draw(ax):
        ids = [a["id"] for a in report["artifacts"]]
        sizes = [a["size_bytes"] / 1024 for a in report["artifacts"]]
        ax.bar(ids, sizes, color=[FORMAT_COLOURS.get(a["format"], "grey") for a in report["artifacts"]])
        ax.set_ylabel("KB")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    return _figure(draw)


def _distribution_plot(report: dict, samples: dict[str, list[float]]) -> str:
    series = [(a["id"], samples[a["id"]]) for a in report["artifacts"] if samples.get(a["id"])]
    if not series:
        return _missing("No latency was measured (--no-bench).")

    def draw(ax):
        ax.boxplot([s for _, s in series], whis=(1, 99), showfliers=False)  # whiskers: p1 to p99
        ax.set_xticks(range(1, len(series) + 1), [name for name, _ in series], rotation=30, fontsize=8)
        ax.set_ylabel("ms per inference (log scale)")
        ax.set_yscale("log")  # one slow outlier format must not flatten the others
        ax.grid(axis="y", alpha=0.3)
    return _figure(draw)

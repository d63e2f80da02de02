"""report.html: self-contained, with its plots, and rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest


def test_report_html_is_self_contained_with_three_plots(validated_run):
    page = (validated_run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)
    plots = re.findall(r'<img alt="plot" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(plots) == 3 and all(len(p) > 5000 for p in plots)
    for artifact_id in ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"):
        assert f"<td>{artifact_id}</td>" in page
    assert "Keras fp32 reference top-1" in page


def test_without_latency_the_page_says_what_is_missing(cli, digits, tmp_path):
    out = tmp_path / "out"
    assert cli("compress", digits["model"], "--formats", "tflite", "-o", out).exit_code == 0  # --no-bench
    page = (out / "report.html").read_text()
    assert "No latency distribution: the run used --no-bench" in page
    assert "it needs accuracy (pass --val with labelled validation data) and latency (the run used --no-bench)" in page
    assert page.count('<img alt="plot"') == 1  # only the size plot has data


def test_report_json_is_moved_into_place_last_when_files_move_one_by_one(tmp_path, monkeypatch):
    """The fallback commit (outdir holds a sub-folder, which cannot be carried over as a hard
    link): report.json, which claims success, arrives last."""
    import os

    from edgekit.support.output_folders import staged

    (tmp_path / "out" / "sub").mkdir(parents=True)
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moved.append(os.path.basename(dst)), real_replace(src, dst)))
    with staged(tmp_path / "out") as staging:
        for name in ("report.json", "report.html", "model.int8.tflite", "report.md"):
            (staging / name).write_text(name)
    assert moved == ["model.int8.tflite", "report.md", "report.html", "report.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*moved, "sub"])


def _synthetic_report(count: int, top1_spread: float = 0.002) -> dict:
    """A report with `count` artifacts close together in latency and accuracy: the worst case
    for labels on a plot."""
    formats, precisions = ["tflite", "onnx", "openvino"], ["fp32", "int8", "fp16", "int8w"]
    artifacts = []
    for i in range(count):
        fmt, precision = formats[i % 3], precisions[(i // 3) % 4]
        artifacts.append({"id": f"{fmt}-{precision}" + (f"-{i}" if i >= 12 else ""), "format": fmt,
                          "precision": precision, "path": f"m.{i}", "size_bytes": 1000 + i,
                          "accuracy": {"top1": 0.97 + top1_spread * (i % 2)}, "agreement": 1.0,
                          "latency_ms": {"p50": 0.01 + 0.0001 * i, "p90": 0.02}})
    return {"artifacts": artifacts}


def _tradeoff_figure(report):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    from edgekit.reports.html_report import draw_tradeoff, tradeoff_points

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=100)
    draw_tradeoff(ax, tradeoff_points(report))
    fig.tight_layout()
    fig.canvas.draw()
    return fig, ax


@pytest.mark.parametrize("count", [2, 6, 12, 18])
def test_no_two_labels_of_the_tradeoff_plot_overlap(count):
    """Every artifact is named once, in a legend beside the axes: the text boxes, read from
    the drawn figure, overlap neither each other nor the plotting area, and stay on the page."""
    from matplotlib import pyplot as plt

    fig, ax = _tradeoff_figure(_synthetic_report(count))
    try:
        renderer = fig.canvas.get_renderer()
        texts = ax.get_legend().get_texts()
        assert sorted(t.get_text() for t in texts) == sorted(a["id"] for a in _synthetic_report(count)["artifacts"])
        boxes = [t.get_window_extent(renderer) for t in texts]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)
            assert not a.overlaps(ax.get_window_extent(renderer))
            assert fig.bbox.x0 <= a.x0 and a.x1 <= fig.bbox.x1 and fig.bbox.y0 <= a.y0 and a.y1 <= fig.bbox.y1
        assert [t for t in ax.texts] == []  # nothing written on the plot itself
    finally:
        plt.close(fig)


def test_accuracy_axis_spans_at_least_one_point_each_side():
    from matplotlib import pyplot as plt

    fig, ax = _tradeoff_figure(_synthetic_report(4, top1_spread=0.002))  # 0.2 points apart
    low, high = ax.get_ylim()
    plt.close(fig)
    assert high - low >= 2.0 and low <= 97.0 and high >= 97.2


@pytest.mark.heavy
def test_stages_and_gzip_sizes_are_on_the_page(cli, digits, tmp_path):
    out = tmp_path / "out"
    result = cli("compress", digits["model"], "--prune", "0.5", "--int8", "--data", digits["calib"], "--val",
                 digits["val"], "--epochs", "1", "--formats", "tflite", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "<h2>Stages</h2>" in page and "50.0% zeros" in page and "Pruned model top-1" in page
    assert "<th>gzip KiB</th>" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(page, shot):
    from matplotlib import image

    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1100,2000", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    return image.imread(shot)[..., :3]


@pytest.mark.system
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (.ci/run installs it)")
@pytest.mark.parametrize("count", [3, 9, 18])
def test_pages_with_many_artifacts_render_in_headless_chromium(count, tmp_path):
    """Screenshots at several artifact counts: the page draws, every format's colour is on
    screen, and the trade-off plot (legend beside it) fits the page width."""
    from edgekit.reports.html_report import render_html

    report = _synthetic_report(count)
    report.update({"schema": "edgekit.reports.report/1", "source": {"path": "m.h5", "macs": 1, "params": 1}})
    page = tmp_path / "report.html"
    page.write_text(render_html(report, {a["id"]: [0.01, 0.011, 0.012] for a in report["artifacts"]}))
    pixels = _screenshot(page, tmp_path / "report.png")
    flat = (pixels.reshape(-1, 3) * 255).round().astype(int)
    colours = {tuple(c) for c in flat[::3]}
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44)} <= colours
    assert not (pixels[:, -40:] < 0.5).any()  # nothing runs off the right edge


@pytest.mark.system
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (.ci/run installs it)")
def test_report_html_renders_in_headless_chromium(validated_run, tmp_path):
    pixels = _screenshot(validated_run / "report.html", tmp_path / "report.png")
    assert pixels.shape[:2] == (2000, 1100)
    # The page drew: dark text, and the plots' format colours (TFLite blue, ONNX orange) are on screen.
    flat = (pixels.reshape(-1, 3) * 255).round().astype(int)
    colours = {tuple(c) for c in flat[::7]}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours
    assert (flat.sum(axis=1) < 150).mean() > 0.002  # text


def test_a_report_with_unknown_macs_still_renders():
    """A SavedModel input has no Keras layers to count MACs from (source.macs is null)."""
    from edgekit.reports.html_report import render_html

    report = {"schema": "edgekit.reports.report/1", "source": {"path": "sm", "macs": None, "params": None},
              "artifacts": [{"id": "tflite-fp32", "format": "tflite", "precision": "fp32", "path": "sm.fp32.tflite",
                             "size_bytes": 1000, "accuracy": None, "agreement": None, "latency_ms": None}]}
    page = render_html(report)
    assert "MACs unknown" in page and "parameters unknown" in page and page.count('<img alt="plot"') == 1

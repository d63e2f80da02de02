"""report.md, the terminal table and report.html rendered from the checked-in report
(tests/reports/fixtures/report.json): no compress run needed to test how a report is told."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

REPORT = json.loads((Path(__file__).parent / "fixtures" / "report.json").read_text())
IDS = [a["id"] for a in REPORT["artifacts"]]


def test_markdown_lists_every_artifact_with_its_check_and_accuracy():
    from edgekit.reports.report import render_markdown

    text = render_markdown(REPORT)
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| artifact")]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows[:len(IDS)]] == IDS
    assert "agree 100.00%" in text and "Δ " in text and "97.03%" in text
    assert f"schema `{REPORT['schema']}`" in text


def test_the_terminal_table_has_a_row_per_artifact():
    from edgekit.reports.terminal import render_table
    from edgekit.support.progress import escaping_console

    console = escaping_console(file=io.StringIO(), width=200)
    console.print(render_table(REPORT))
    printed = console.file.getvalue()
    assert all(any(line.lstrip().startswith(i) for line in printed.splitlines()) for i in IDS)
    assert "Keras reference top-1 97.03%" in printed


@pytest.mark.parametrize("missing", ["latency_ms", "accuracy"])
def test_html_is_one_self_contained_page_even_without_latency_or_accuracy(missing):
    from edgekit.reports.html_report import render_html

    report = json.loads(json.dumps(REPORT))
    for artifact in report["artifacts"]:
        artifact[missing] = None
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert all(i in page for i in IDS)
    assert "<script" not in page and "http://" not in page and "https://" not in page

"""Text from files (names, layer names) cannot move the cursor or forge a line on the terminal."""

from __future__ import annotations

import io

from rich.table import Table
from rich.text import Text

from edgekit.support.progress import escaping_console, one_line

EVIL = "model\x1b[2J\nerror: all good\x9b31m.h5"


def _printed(*renderables) -> str:
    console = escaping_console(file=io.StringIO(), width=200)
    for renderable in renderables:
        console.print(renderable)
    return console.file.getvalue()


def test_a_message_stays_one_visible_line():
    assert one_line(EVIL) == "model␛[2J␊error: all good\ufffd31m.h5"
    assert one_line("plain text, tabs\tand all") == "plain text, tabs␉and all"


def test_strings_text_and_table_cells_print_without_terminal_escapes():
    """Everything printed loses its escapes; line breaks stay where tables and summaries put them
    (one-line messages, errors and notes, go through one_line and lose those too)."""
    table = Table(title=f"edgekit: {EVIL}", caption="first line\nsecond line")
    table.add_column(EVIL)
    table.add_row(EVIL)
    table.add_row(Text(EVIL, style="bold"))
    printed = _printed(EVIL, Text.assemble(("!", "yellow"), EVIL), table)
    assert "\x1b" not in printed and "\x9b" not in printed
    assert printed.count("␛[2J") == 6  # string, Text, title, header, two cells: each shown, none acted on
    assert "first line" in printed and "second line" in printed


def test_a_note_quoting_a_hostile_name_is_one_line(capsys):
    from edgekit.support.progress import StepLog, console

    console.file = io.StringIO()
    try:
        StepLog().note(f"skipped {EVIL}")
        printed = console.file.getvalue()
    finally:
        console.file = None  # back to stderr
    assert printed.count("\n") == 1 and "\x1b" not in printed and "␊error: all good" in printed

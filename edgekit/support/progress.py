"""Progress for long steps: a spinner while a step runs, then one line with its time and peak memory."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console, RenderHook
from rich.table import Table
from rich.text import Text

# Control characters in text from files and users (a file named "a\x1b[2J\nerror: ok") would clear
# the screen or forge a line: each prints as one visible symbol instead (␛, ␊; C1 codes as �), one
# character for one so a Text's styled spans stay where they were. Tables and summaries break lines
# on purpose, so what every print escapes keeps line breaks and tabs; one-line messages (errors,
# notes, progress) escape those too.
ONE_LINE = {c: 0x2400 + c for c in range(0x20)} | {0x7F: 0x2421} | {c: 0xFFFD for c in range(0x80, 0xA0)}
KEEP_LINES = {c: v for c, v in ONE_LINE.items() if chr(c) not in "\n\t"}


def one_line(text: str) -> str:
    """A message from one line of text, whatever file or folder names it quotes."""
    return text.translate(ONE_LINE)


class EscapeControls(RenderHook):
    """Applied to everything a console prints: strings, Text, and the cells, headers and title of a Table."""

    def process_renderables(self, renderables):
        return [self._escaped(r) for r in renderables]

    def _escaped(self, renderable):
        if isinstance(renderable, str):
            return renderable.translate(KEEP_LINES)
        if isinstance(renderable, Text):
            safe = renderable.copy()
            safe.plain = renderable.plain.translate(KEEP_LINES)
            return safe
        if isinstance(renderable, Table):
            renderable.title = self._escaped(renderable.title) if renderable.title else renderable.title
            for column in renderable.columns:
                column.header = self._escaped(column.header)
                column._cells = [self._escaped(cell) for cell in column._cells]
        return renderable


def escaping_console(**options) -> Console:
    """markup=False: paths, layer names and messages come from files and users, and "[/x]" in a
    file name must print as it is, not be read as Rich markup (and crash the printer)."""
    made = Console(highlight=False, markup=False, **options)
    made.push_render_hook(EscapeControls())
    return made


# Progress and messages go to stderr so --json output on stdout stays clean.
console = escaping_console(stderr=True)


@dataclass
class StepStats:
    """Filled in while a step runs; a step run in a child process reports the child's peak."""

    peak_rss_mb: float | None = None


class StepLog:
    """Records how long each named step took and its peak resident memory, and shows it as it goes."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.times: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    @contextmanager
    def step(self, title: str):
        from edgekit.support.isolated_steps import current_peak_rss_mb, reset_peak_rss

        stats = StepStats()
        reset_peak_rss()
        start = time.perf_counter()
        if self.quiet:
            yield stats
        else:
            with console.status(Text(f"{title}…")):
                yield stats
        elapsed = time.perf_counter() - start
        peak = stats.peak_rss_mb if stats.peak_rss_mb is not None else current_peak_rss_mb()
        self.times[title] = round(elapsed, 3)
        self.peaks[title] = peak
        if not self.quiet:
            console.print(Text.assemble(("✓", "green"), f" {title} ",
                                        (f"({elapsed:.1f} s, peak {peak:,.0f} MiB)", "dim")), soft_wrap=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            console.print(Text.assemble(("!", "yellow"), f" {one_line(message)}"), soft_wrap=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            console.print(Text.assemble(("•", "cyan"), f" {one_line(message)}"), soft_wrap=True)

    def done(self, message: str, ok: bool = True) -> None:
        """One finished piece of a longer job (a sweep's cell): ✓ or ✗, then the message."""
        if not self.quiet:
            console.print(Text.assemble(("✓", "green") if ok else ("✗", "red"), f" {one_line(message)}"), soft_wrap=True)

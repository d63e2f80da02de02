"""Progress for long steps: a spinner while a step runs, then one line with its time and peak memory."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

# Progress and messages go to stderr so --json output on stdout stays clean. markup=False:
# paths, layer names and messages come from files and users, and "[/x]" in a file name must
# print as it is, not be read as Rich markup (and crash the printer). Styles are Text spans.
console = Console(stderr=True, highlight=False, markup=False)


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
        from edgekit.support.steps import current_peak_rss_mb, reset_peak_rss

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
            console.print(Text.assemble(("!", "yellow"), f" {message}"), soft_wrap=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            console.print(Text.assemble(("•", "cyan"), f" {message}"), soft_wrap=True)

    def done(self, message: str, ok: bool = True) -> None:
        """One finished piece of a longer job (a sweep's cell): ✓ or ✗, then the message."""
        if not self.quiet:
            console.print(Text.assemble(("✓", "green") if ok else ("✗", "red"), f" {message}"), soft_wrap=True)

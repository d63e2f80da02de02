"""Progress for long steps: a spinner while a step runs, then one line with its time and peak memory."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console

# Progress and messages go to stderr so --json output on stdout stays clean.
console = Console(stderr=True, highlight=False)


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
        from edgekit.steps import current_peak_rss_mb, reset_peak_rss

        stats = StepStats()
        reset_peak_rss()
        start = time.perf_counter()
        if self.quiet:
            yield stats
        else:
            with console.status(f"{title}…"):
                yield stats
        elapsed = time.perf_counter() - start
        peak = stats.peak_rss_mb if stats.peak_rss_mb is not None else current_peak_rss_mb()
        self.times[title] = round(elapsed, 3)
        self.peaks[title] = peak
        if not self.quiet:
            console.print(f"[green]✓[/green] {title} [dim]({elapsed:.1f} s, peak {peak:,.0f} MiB)[/dim]",
                          soft_wrap=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            console.print(f"[yellow]![/yellow] {message}", soft_wrap=True)

"""Progress for long steps: a spinner while a step runs, then one line with its time."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console

# Progress and messages go to stderr so --json output on stdout stays clean.
console = Console(stderr=True, highlight=False)


class StepLog:
    """Records how long each named step took, and shows it as it goes."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.times: dict[str, float] = {}

    @contextmanager
    def step(self, title: str):
        start = time.perf_counter()
        if self.quiet:
            yield
        else:
            with console.status(f"{title}…"):
                yield
        elapsed = time.perf_counter() - start
        self.times[title] = round(elapsed, 3)
        if not self.quiet:
            console.print(f"[green]✓[/green] {title} [dim]({elapsed:.1f} s)[/dim]", soft_wrap=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            console.print(f"[yellow]![/yellow] {message}", soft_wrap=True)

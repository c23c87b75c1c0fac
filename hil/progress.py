"""Progress of a long command: a live bar on a terminal, plain lines elsewhere (CI logs, cron mail, a pipe).

Off a terminal a line is printed at least every 10 s and at every 10% of the work, and once at the end, each
flushed at once, so a piped `hil accuracy --images 500` is never silent for long.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PLAIN_EVERY_S = 10.0
PLAIN_EVERY_FRACTION = 0.10


class ProgressDisplay:
    """`with ProgressDisplay("check qemu", 200, counter="mismatched") as p: p.advance(bad=1)`."""

    def __init__(self, description: str, total: int, *, counter: str | None = None, quiet: bool = False,
                 stream: IO[str] | None = None, every_s: float = PLAIN_EVERY_S,
                 every_fraction: float = PLAIN_EVERY_FRACTION) -> None:
        self.description, self.total, self.counter = description, max(int(total), 0), counter
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = not quiet and self.stream.isatty()
        self.every_s, self.every_fraction = every_s, every_fraction
        self.done = self.count = 0
        self._start = self._last_line = time.monotonic()
        self._last_step = 0
        self._rich: Progress | None = None
        self._task = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
            if self.counter:
                columns.append(TextColumn(f"{{task.fields[count]}} {self.counter}"))
            columns.append(TimeRemainingColumn())
            self._rich = Progress(*columns, console=Console(file=self.stream), transient=True)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total, count=0)
        return self

    def advance(self, n: int = 1, *, count: int = 0) -> None:
        """`n` more items done; `count` more of what `counter` counts (mismatches, errors)."""
        self.done += n
        self.count += count
        if self._rich is not None:
            self._rich.update(self._task, advance=n, count=self.count)
        elif not self.quiet:
            now = time.monotonic()
            steps = round(1 / self.every_fraction)
            step = self.done * steps // self.total if self.total else 0  # integers: 3/10 is exactly 30%
            if now - self._last_line >= self.every_s or step > self._last_step:
                self._line(now)
                self._last_step = step

    def _line(self, now: float) -> None:
        self._last_line = now
        elapsed = now - self._start
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        extra = f", {self.count} {self.counter}" if self.counter else ""
        left = ""
        if self.total and 0 < self.done < self.total:
            left = f", ~{elapsed / self.done * (self.total - self.done):.0f} s left"
        self.stream.write(f"{self.description}: {self.done}/{self.total}{pct}{extra}, {elapsed:.1f} s{left}\n")
        self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(None, None, None)
        elif not self.quiet and self.done and self._last_step < round(1 / self.every_fraction):
            self._line(time.monotonic())

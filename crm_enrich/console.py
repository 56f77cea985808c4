"""What the command line prints: rich tables, marks and a progress bar on a
terminal; plain lines when stdout is a file or a pipe (a log should read
well and stay short)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Redirected, a progress line at most this often (and one at the end).
PLAIN_PROGRESS_EVERY_S = 5.0


def make_console() -> Console:
    # soft_wrap: a long line stays one line in a log instead of being cut at 80 columns.
    return Console(soft_wrap=True, highlight=False)


def cell(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def print_table(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table on a terminal; redirected, a title line and one line per row,
    columns separated by two spaces."""
    if console.is_terminal:
        table = Table(title=title, title_justify="left", show_lines=False)
        for name in columns:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        console.print(table)
        return
    console.print(title, markup=False)
    widths = [max([len(name)] + [len(cell(row[i])) for row in rows]) for i, name in enumerate(columns)]
    console.print("  " + "  ".join(name.ljust(w) for name, w in zip(columns, widths, strict=True)).rstrip(),
                  markup=False)
    for row in rows:
        console.print("  " + "  ".join(cell(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(),
                      markup=False)


def print_fields(console: Console, title: str, fields: dict[str, Any]) -> None:
    print_table(console, title, ("field", "value"), [(k, v) for k, v in fields.items()])


class JobProgress:
    """A progress bar on a terminal; redirected, one plain line at most
    every PLAIN_PROGRESS_EVERY_S and one when everything is done."""

    def __init__(self, console: Console, total: int, what: str = "jobs final"):
        self.console, self.total, self.what = console, total, what
        self.started = time.monotonic()
        self._last_line = float("-inf")
        self._last_done = -1
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> JobProgress:
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("  "), BarColumn(), MofNCompleteColumn(), TextColumn(self.what),
                                 TimeElapsedColumn(), console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total)
        return self

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        now = time.monotonic()
        finished = done >= self.total and self._last_done < self.total
        if finished or (done != self._last_done and now - self._last_line >= PLAIN_PROGRESS_EVERY_S):
            self.console.print(f"  {done}/{self.total} {self.what}  {now - self.started:.1f}s", markup=False)
            self._last_line, self._last_done = now, done

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

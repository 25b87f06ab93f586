"""``send --file`` output: a progress bar while sending, then one screen of summary."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from router_core.cli.output import console
from router_core.results import BatchReport

__all__ = ["MAX_ERRORS", "PROGRESS_MIN", "print_batch_summary", "send_progress"]

PROGRESS_MIN = 100
"""Files with fewer events than this get no progress bar (they are sent in a blink)."""

MAX_ERRORS = 5
"""Distinct errors the summary lists; the rest are counted."""


@contextlib.contextmanager
def send_progress(total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (only when stderr is a terminal); yields the step function.

    The step function is called from the router's thread; rich's ``Progress`` is thread-safe.
    """
    if not enabled or total == 0 or not sys.stderr.isatty():
        yield lambda _n: None
        return
    columns = (
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("sending", total=total)
        yield lambda n: progress.advance(task, n)


def print_batch_summary(batch: BatchReport) -> None:
    """Counts per destination, then the first few distinct errors."""
    out = console()
    counts = batch.counts()
    states = [
        s
        for s in ("delivered", "failed", "skipped", "queued", "disabled")
        if any(row[s] for row in counts.values())
    ] or ["delivered", "failed"]
    title = "1 event" if len(batch) == 1 else f"{len(batch)} events"
    table = Table(title=title, title_justify="left", title_style="bold")
    table.add_column("destination", no_wrap=True)
    for state in states:
        table.add_column(state, justify="right", no_wrap=True)
    for name, row in counts.items():
        cells = [str(row[s]) if s != "failed" or not row[s] else f"[red]{row[s]}" for s in states]
        table.add_row(name, *cells)
    out.print(table)
    errors: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], str] = {}
    for report in batch.reports:
        for name, result in report.failed.items():
            key = (name, result.error or "failed")
            errors[key] = errors.get(key, 0) + 1
            first.setdefault(key, report.message_id)
    for (name, error), count in list(errors.items())[:MAX_ERRORS]:
        line = Text(f"{name}: ", style="bold")
        line.append(error, style="red")
        line.append(f"  ({count} event(s), first message_id={first[(name, error)]})")
        out.print(line)
    if len(errors) > MAX_ERRORS:
        out.print(f"... and {len(errors) - MAX_ERRORS} more distinct error(s); use --json")
    failed = len(batch.failed)
    if failed:
        out.print(f"[bold red]{failed} of {len(batch)} events failed at some destination")
    elif not any(r.queued or r.disabled for r in batch.reports):
        out.print(f"[green]{len(batch)} events delivered to every destination they were routed to")

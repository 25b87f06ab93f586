"""Printing: rich tables for people, plain JSON (and nothing else) on stdout for ``--json``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from router_core.events import Event
from router_core.results import DeliveryResult, SendReport

__all__ = [
    "console",
    "event_title",
    "key_value_table",
    "print_json",
    "print_report",
    "print_response",
    "report_rows",
    "results_table",
    "status_text",
]


def console() -> Console:
    """A console on the current stdout (looked up on every write, so test runners capture it).

    Lines of text are not wrapped (so they copy and grep whole); tables fit the width.
    """
    return Console(highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout: the only thing ``--json`` output contains."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_response(title: str, response: Mapping[str, Any]) -> None:
    """Print a job's response object under a title."""
    out = console()
    out.print(Text(title, style="bold"))
    out.print(Text(json.dumps(response, indent=2, ensure_ascii=False, default=str)))


def event_title(event: Event) -> str:
    """A short description of an event: its type, name and message id."""
    name = event.event if event.type == "track" else event.name
    what = f"{event.type} {name!r}" if name else event.type
    return f"{what}  message_id={event.message_id}"


def status_text(success: bool) -> Text:
    return Text("yes", style="green") if success else Text("NO", style="bold red")


def results_table(
    rows: Iterable[tuple[str | None, DeliveryResult]], title: str | None = None
) -> Table:
    """One row per destination result; an ``event`` column when any row is labelled."""
    materialised = list(rows)
    labelled = any(label is not None for label, _ in materialised)
    # The plugin column only says something when a destination is not named after its plugin.
    with_plugin = any(r.plugin != r.destination for _, r in materialised)
    table = Table(title=title, title_justify="left", title_style="bold")
    if labelled:
        table.add_column("event", no_wrap=True)
    table.add_column("destination", no_wrap=True)
    if with_plugin:
        table.add_column("plugin", no_wrap=True)
    table.add_column("success", no_wrap=True)
    table.add_column("status", justify="right", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("duration ms", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold")
    for label, result in materialised:
        cells: list[str | Text] = [label or ""] if labelled else []
        cells.append(result.destination)
        if with_plugin:
            cells.append(result.plugin)
        cells += [
            status_text(result.success),
            "" if result.status_code is None else str(result.status_code),
            str(result.attempts),
            f"{result.duration_ms:.1f}",
            Text(result.error or "", style="red"),
        ]
        table.add_row(*cells)
    return table


def report_rows(
    report: SendReport, label: str | None = None
) -> list[tuple[str | None, DeliveryResult]]:
    """The rows of ``results_table`` for one report."""
    return [(label, result) for result in report.results.values()]


def print_report(report: SendReport, title: str) -> None:
    """A results table for one event, and a note for destinations that were skipped."""
    out = console()
    if report.queued:
        out.print(Text(title, style="bold"))
        out.print("queued in the outbox: delivered in the background")
    elif report.results:
        out.print(results_table(report_rows(report), title=title))
    else:
        out.print(Text(title, style="bold"))
        out.print("no destination was sent this event")
    if report.skipped:
        out.print(f"skipped (filtered out): {', '.join(report.skipped)}")


def key_value_table(pairs: Sequence[tuple[str, str]], title: str | None = None) -> Table:
    """A two-column table of names and values."""
    table = Table(title=title, title_justify="left", title_style="bold", show_header=False)
    table.add_column("name", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in pairs:
        table.add_row(name, value)
    return table

"""Printing: rich tables for people, plain JSON (and nothing else) on stdout for ``--json``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click
from rich.console import Console, Group
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


_MIN_ERROR_WIDTH = 30
"""Narrower than this, an error column would be a tower of fragments: errors go below."""


def results_table(
    rows: Iterable[tuple[str | None, DeliveryResult]],
    title: str | None = None,
    *,
    width: int | None = None,
) -> Group:
    """One row per destination result; an ``event`` column when any row is labelled.

    Errors wrap between words, never inside one: the short columns keep their width, and when
    what is left for the error column (of ``width``, default the console's) is too narrow,
    each error is printed under the table instead, as ``destination: error``.
    """
    materialised = list(rows)
    labelled = any(label is not None for label, _ in materialised)
    # The plugin column only says something when a destination is not named after its plugin.
    with_plugin = any(r.plugin != r.destination for _, r in materialised)
    headers = [*(["event"] if labelled else []), "destination"]
    headers += [*(["plugin"] if with_plugin else []), "success", "status", "attempts"]
    headers.append("duration ms")
    body: list[list[str | Text]] = []
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
        ]
        body.append(cells)
    errors = [(r.destination, r.error) for _, r in materialised if r.error]
    event_width = _longest_word([label or "" for label, _ in materialised], "event")
    widths = [
        event_width if header == "event" else max(len(str(row[i])) for row in body)
        for i, header in enumerate(headers)
    ]
    widths = [max(w, len(header)) for w, header in zip(widths, headers, strict=True)]
    fixed = sum(w + 3 for w in widths)  # a cell's padding and its border
    room = (width if width is not None else console().width) - fixed - 4
    inline = not errors or room >= _MIN_ERROR_WIDTH
    table = Table(title=title, title_justify="left", title_style="bold")
    for header in headers:
        right = header in {"status", "attempts", "duration ms"}
        # An event's title wraps between its words; the other cells are single words.
        table.add_column(
            header,
            justify="right" if right else "left",
            no_wrap=header != "event",
            min_width=event_width if header == "event" else None,
        )
    if inline:
        table.add_column("error", overflow="fold", min_width=min(room, _MIN_ERROR_WIDTH))
    for cells, (_, result) in zip(body, materialised, strict=True):
        extra = [Text(result.error or "", style="red")] if inline else []
        table.add_row(*cells, *extra)
    if inline:
        return Group(table)
    below = Table.grid()  # a grid wraps its lines to the width, between words
    below.add_column(overflow="fold")
    for name, error in errors:
        below.add_row(Text(f"{name}: {error}", style="red"))
    return Group(table, below)


def _longest_word(texts: list[str], header: str) -> int:
    return max(len(word) for text in [header, *texts] for word in text.split() or [""])


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

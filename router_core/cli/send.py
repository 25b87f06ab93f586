"""``event-router send``: route one event (from options) or many (a JSON / JSON-lines file)."""

from __future__ import annotations

import json
from typing import Any, TextIO, get_args

import click

from router_core.cli.errors import EXIT_FAILED, EXIT_OK, BadInput
from router_core.cli.options import (
    config_option,
    json_option,
    plugin_registry,
    setup_logging,
    verbose_option,
)
from router_core.cli.output import console, event_title, print_json, print_report
from router_core.cli.summary import PROGRESS_MIN, print_batch_summary, send_progress
from router_core.config import RouterConfig
from router_core.errors import InvalidEventError
from router_core.events import Event, EventType
from router_core.results import SendReport
from router_core.router import Router

__all__ = ["parse_events", "read_events", "send"]

_TEXT_FIELDS = (
    "event",
    "user_id",
    "anonymous_id",
    "timestamp",
    "message_id",
    "group_id",
    "previous_id",
    "name",
    "category",
)
_JSON_FIELDS = ("properties", "traits", "context")


@click.command()
@click.option(
    "--type",
    "event_type",
    type=click.Choice(get_args(EventType), case_sensitive=False),
    help="Event type (default: track).",
)
@click.option("--event", help="Event name (required for track).")
@click.option("--user-id")
@click.option("--anonymous-id")
@click.option("--properties", metavar="JSON", help="Properties as a JSON object.")
@click.option("--traits", metavar="JSON", help="Traits as a JSON object.")
@click.option("--context", metavar="JSON", help="Context as a JSON object.")
@click.option("--timestamp", help="ISO 8601 time (default: now).")
@click.option("--message-id", help="Idempotency key (default: a new UUID).")
@click.option("--group-id", help="Group id (group events).")
@click.option("--previous-id", help="Previous id (alias events).")
@click.option("--name", help="Page or screen name.")
@click.option("--category", help="Page category.")
@click.option(
    "-f",
    "--file",
    "file",
    type=click.File("r", encoding="utf-8"),
    help=(
        "Read events from a file ('-' for stdin): one JSON event, a JSON array, or JSON lines. "
        "Sent in batches; prints a summary (--json: one JSON line per event)."
    ),
)
@config_option()
@json_option
@verbose_option
def send(
    event_type: str | None,
    file: TextIO | None,
    config_path: str,
    as_json: bool,
    verbose: bool,
    **fields: str | None,
) -> int:
    """Send events to every enabled destination; a result table, or a summary for --file.

    \b
    event-router send --event "Order Completed" --user-id user_12345 \\
        --properties '{"total": 99.99}'
    event-router send --file events.jsonl
    """
    events = read_events(event_type, file, fields)
    config = RouterConfig.load(config_path, plugins=plugin_registry())
    setup_logging(verbose, config.logging)
    if file is not None:
        return _send_file(config, events, as_json)
    with Router(config, plugins=plugin_registry()) as router:
        reports = [router.send(event) for event in events]

    ok = all(report.ok for report in reports)
    if as_json:
        print_json({"ok": ok, "reports": [report.to_dict() for report in reports]})
    else:
        _print_human(events, reports)
    return EXIT_OK if ok else EXIT_FAILED


def _send_file(config: RouterConfig, events: list[Event], as_json: bool) -> int:
    """Send a file's events with ``send_many``: a summary, or one JSON line per event."""
    with Router(config, plugins=plugin_registry()) as router:
        total = len(events) * len(router.destinations)
        with send_progress(total, enabled=not as_json and len(events) >= PROGRESS_MIN) as step:
            batch = router.send_many(events, progress=step)
    if as_json:
        for report in batch.reports:
            click.echo(json.dumps(report.to_dict(), ensure_ascii=False, default=str))
    else:
        print_batch_summary(batch)
    return EXIT_OK if batch.ok else EXIT_FAILED


def read_events(
    event_type: str | None, file: TextIO | None, fields: dict[str, str | None]
) -> list[Event]:
    """The events the command's options (or its ``--file``) describe."""
    given = {name: value for name, value in fields.items() if value is not None}
    if file is None:
        return [_event_from_options(event_type or "track", given)]
    mixed = [f"--{_flag(name)}" for name in given]
    if event_type is not None:
        mixed.insert(0, "--type")
    if mixed:
        raise BadInput(
            f"--file cannot be combined with {', '.join(mixed)}; put every field in the file"
        )
    source = "<stdin>" if file.name == "-" else file.name
    return parse_events(file.read(), source)


def _flag(field: str) -> str:
    return field.replace("_", "-")


def _event_from_options(event_type: str, given: dict[str, str]) -> Event:
    data: dict[str, Any] = {"type": event_type}
    for field in _TEXT_FIELDS:
        if field in given:
            data[field] = given[field]
    for field in _JSON_FIELDS:
        if field in given:
            data[field] = _json_object(given[field], f"--{field}")
    return Event.parse(data)


def _loads(text: str, where: str) -> Any:
    """``json.loads`` whose every failure is ``BadInput`` naming ``where``."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _not_json(where, exc) from None


def _not_json(where: str, exc: ValueError | RecursionError) -> BadInput:
    if isinstance(exc, json.JSONDecodeError):
        return BadInput(f"{where}: not valid JSON ({exc})")
    if isinstance(exc, RecursionError):  # the decoder recurses once per level of nesting
        return BadInput(f"{where}: JSON nested too deeply")
    return BadInput(f"{where}: a JSON number has too many digits")  # int() refused it


def _json_object(text: str, where: str) -> dict[str, Any]:
    value = _loads(text, where)
    if not isinstance(value, dict):
        raise BadInput(f"{where}: must be a JSON object like '{{\"key\": 1}}'")
    return value


def parse_events(text: str, source: str) -> list[Event]:
    """Events from one JSON object, a JSON array of objects, or JSON lines.

    Every event is validated before any is sent; errors name the line (or position) at fault.
    """
    if not text.strip():
        raise BadInput(f"{source}: no events (the input is empty)")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return _parse_json_lines(text, source)
    except (ValueError, RecursionError) as exc:
        raise _not_json(source, exc) from None
    if isinstance(document, dict):
        return [_parse_one(document, f"{source}")]
    if isinstance(document, list):
        if not document:
            raise BadInput(f"{source}: no events (the array is empty)")
        return [_parse_one(item, f"{source} event {i}") for i, item in enumerate(document, 1)]
    raise BadInput(f"{source}: expected a JSON object, an array of objects, or JSON lines")


def _parse_json_lines(text: str, source: str) -> list[Event]:
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        events.append(_parse_one(_loads(line, where), where))
    return events


def _parse_one(item: Any, where: str) -> Event:
    if not isinstance(item, dict):
        raise BadInput(f"{where}: an event must be a JSON object, not {type(item).__name__}")
    try:
        return Event.parse(item)
    except InvalidEventError as exc:
        raise BadInput(f"{where}: {exc}") from None


def _print_human(events: list[Event], reports: list[SendReport]) -> None:
    for event, report in zip(events, reports, strict=True):
        print_report(report, title=event_title(event))
    failed = sum(not report.ok for report in reports)
    out = console()
    if len(reports) > 1:
        if failed:
            out.print(f"[bold red]{failed} of {len(reports)} events failed at some destination")
        else:
            out.print(f"[green]{len(reports)} events delivered to every destination")

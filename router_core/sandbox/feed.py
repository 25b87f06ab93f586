"""The viewer's live feed: what one or more emulators recorded since a cursor.

The page polls ``GET /_feed?since=CURSOR`` and gets only what is new, so a poll costs the
size of the news, not of everything held. A cursor names, per emulator, its generation (new
on every clear) and how many events and requests it held; an emulator that was cleared (or
restarted) since is sent again from the start, flagged ``reset`` so the page drops its rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from router_core.sandbox.records import ReceivedEvent, RequestRecord

if TYPE_CHECKING:
    from router_core.sandbox.emulator import Emulator

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Activity",
    "BadFeedQuery",
    "Mark",
    "build_feed",
    "format_cursor",
    "parse_cursor",
]

DEFAULT_LIMIT = 500
"""At most this many of the newest events (and of the newest requests) per emulator per answer."""
MAX_LIMIT = 5000

_MARK = re.compile(r"(?P<name>[a-z]+):(?P<generation>[0-9a-f]+):(?P<events>\d+):(?P<requests>\d+)")


class BadFeedQuery(ValueError):
    """A ``/_feed`` query the viewer cannot answer (answered 400 with this message)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """A position in one emulator's record."""

    generation: str
    """Changes on every clear, so a mark from before one is recognised."""
    events: int
    """How many events were held."""
    requests: int
    """How many entries the request log held."""


@dataclass(frozen=True, slots=True)
class Activity:
    """What one emulator recorded after a mark (see ``Emulator.activity``)."""

    vendor: str
    mark: Mark
    """Where the next call should start."""
    reset: bool
    """The mark given was ``None`` or from before a clear: this starts from the beginning."""
    first_event: int
    """Index of ``events[0]`` in the emulator's record."""
    events: list[ReceivedEvent]
    first_request: int
    """Index of ``requests[0]`` in the emulator's request log."""
    requests: list[RequestRecord]
    skipped: int
    """Events and requests after the mark left out because of the limit."""
    refused: int
    """Requests not accepted so far (refused, faulted or unanswered), in all."""


def parse_cursor(text: str, names: Sequence[str]) -> dict[str, Mark]:
    """Read a cursor made by ``format_cursor``; emulators it does not name start over."""
    marks: dict[str, Mark] = {}
    for part in filter(None, text.split(",")):
        match = _MARK.fullmatch(part)
        if match is None:
            raise BadFeedQuery(
                f"since: {part!r} is not NAME:GENERATION:EVENTS:REQUESTS "
                "(pass back the cursor of the previous answer)"
            )
        name = match["name"]
        if name not in names:
            raise BadFeedQuery(f"since: no emulator named {name!r} here (have {', '.join(names)})")
        marks[name] = Mark(match["generation"], int(match["events"]), int(match["requests"]))
    return marks


def format_cursor(marks: Mapping[str, Mark]) -> str:
    """The cursor to pass back as ``since`` to get what comes after ``marks``."""
    return ",".join(
        f"{name}:{mark.generation}:{mark.events}:{mark.requests}" for name, mark in marks.items()
    )


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise BadFeedQuery(f"limit: {value!r} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadFeedQuery(f"limit must be from 1 to {MAX_LIMIT}, got {limit}")
    return limit


def build_feed(
    title: str, emulators: Mapping[str, Emulator], query: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """The answer to ``GET /_feed``: news since ``query["since"]``, oldest first."""
    since = parse_cursor((query.get("since") or [""])[-1], list(emulators))
    limits = query.get("limit")
    limit = _limit(limits[-1] if limits else None)
    activities = [emulator.activity(since.get(name), limit) for name, emulator in emulators.items()]
    timed: list[tuple[datetime, int, dict[str, Any]]] = []
    for order, activity in enumerate(activities):
        timed.extend((received_at, order, entry) for received_at, entry in _entries(activity))
    timed.sort(key=lambda item: (item[0], item[1]))  # stable: a batch keeps its order
    return {
        "title": title,
        "cursor": format_cursor({a.vendor: a.mark for a in activities}),
        "sources": [
            {
                "vendor": activity.vendor,
                "url": emulators[activity.vendor].url,
                "events": activity.mark.events,
                "refused": activity.refused,
                "reset": activity.reset,
                "skipped": activity.skipped,
            }
            for activity in activities
        ],
        "entries": [entry for _at, _order, entry in timed],
    }


def _entries(activity: Activity) -> list[tuple[datetime, dict[str, Any]]]:
    """An activity's events, and the requests it did not accept, as feed entries."""
    generation = activity.mark.generation
    entries = [
        (
            event.received_at,
            {
                "id": f"{activity.vendor}:{generation}:e{activity.first_event + i}",
                "kind": "event",
                **event.to_dict(),
            },
        )
        for i, event in enumerate(activity.events)
    ]
    entries.extend(
        (
            record.received_at,
            {
                "id": f"{activity.vendor}:{generation}:r{activity.first_request + i}",
                "kind": "request",
                "vendor": activity.vendor,
                **record.to_dict(),
            },
        )
        for i, record in enumerate(activity.requests)
        if record.outcome != "accepted"
    )
    return entries

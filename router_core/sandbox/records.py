"""What an emulator remembers: accepted events and a log of the requests it answered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = ["ReceivedEvent", "RequestRecord", "Vendor", "mask_key"]

Vendor = Literal["segment", "posthog"]

_VISIBLE_TAIL = 4
_MIN_LENGTH_TO_SHOW_TAIL = 16  # shorter keys are masked whole: 4 chars would be too much of them


def mask_key(key: str) -> str:
    """Return a masked form of a write/API key that is safe to store and show.

    Long keys keep their last four characters so two keys can be told apart;
    shorter ones are masked whole. The key itself is never kept.
    """
    if len(key) >= _MIN_LENGTH_TO_SHOW_TAIL:
        return "****" + key[-_VISIBLE_TAIL:]
    return "****"


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One event an emulator accepted.

    ``type`` is the Segment message type (track, identify, page, screen, group, alias). For
    PostHog it is derived from the event name the same way: ``$identify`` is identify,
    ``$pageview`` page, ``$screen`` screen, ``$groupidentify`` group, ``$create_alias`` alias,
    anything else track. ``event`` is the event name (Segment: ``event`` of a track, ``name``
    of a page or screen, else ``None``; PostHog: ``event`` verbatim). ``distinct_id`` is
    Segment's ``userId`` (else ``anonymousId``) or PostHog's ``distinct_id``.

    ``payload`` is the event as received (a fresh dict on each access), except that any key
    it carried (``writeKey``, ``api_key``, ``token``) is replaced by its masked form. It is
    kept as compact JSON text (``payload_json``): a recorded event then costs one object the
    garbage collector tracks instead of a tree of dicts, which doubles throughput once a few
    hundred thousand events are held.
    """

    vendor: Vendor
    message_id: str
    type: str
    event: str | None
    distinct_id: str | None
    payload_json: str
    received_at: datetime
    key: str
    """The masked key the request was authenticated with."""
    request_id: int
    """Sequence number of the HTTP request that carried the event (1 for the first)."""
    path: str

    @property
    def payload(self) -> dict[str, Any]:
        """The event as received (keys masked), decoded afresh on each access."""
        payload: dict[str, Any] = json.loads(self.payload_json)
        return payload

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the shape served by ``GET /_events``)."""
        return {
            "vendor": self.vendor,
            "message_id": self.message_id,
            "type": self.type,
            "event": self.event,
            "distinct_id": self.distinct_id,
            "received_at": self.received_at.isoformat(),
            "key": self.key,
            "request_id": self.request_id,
            "path": self.path,
            "payload": self.payload,
        }


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One ingestion request and how the emulator answered it.

    ``status`` is ``None`` when the connection was dropped without an answer (a fault).
    ``error`` says why a request was refused; ``fault`` names the injected fault, if any.
    """

    request_id: int
    method: str
    path: str
    status: int | None
    events: int
    received_at: datetime
    error: str | None = None
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the shape served by ``GET /_requests``)."""
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "events": self.events,
            "received_at": self.received_at.isoformat(),
            "error": self.error,
            "fault": self.fault,
        }

"""What an emulator remembers: accepted events and a log of the requests it answered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = ["Outcome", "ReceivedEvent", "RequestRecord", "Vendor", "mask_key"]

Vendor = Literal["segment", "posthog"]

_VISIBLE_TAIL = 4
_MIN_SECRET_TO_SHOW_TAIL = 16  # shorter keys are masked whole: 4 chars would be too much of them
_MASK = "…"  # an ellipsis: "phc_…a1b2"
_PUBLIC_PREFIXES = ("phc_", "phx_")  # PostHog's key kinds (project, personal): not secret


def mask_key(key: str) -> str:
    """Return a masked form of a write/API key that is safe to store and show.

    PostHog's ``phc_``/``phx_`` prefix (which kind of key it is) is kept. Keys with 16
    characters or more after it keep their last four characters too, so two keys can be told
    apart: ``phc_…a1b2``, ``…a1b2``. Shorter ones are masked whole (``phc_…``,
    ``…``). The key itself is never kept.
    """
    prefix = next((p for p in _PUBLIC_PREFIXES if key.startswith(p)), "")
    secret = key[len(prefix) :]
    if len(secret) >= _MIN_SECRET_TO_SHOW_TAIL:
        return prefix + _MASK + secret[-_VISIBLE_TAIL:]
    return prefix + _MASK


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


Outcome = Literal["accepted", "key", "too_large", "malformed", "not_found", "fault", "unanswered"]
"""How a request was answered, as the viewer groups it: accepted; refused for its key (wrong,
missing or personal), for its size, for its content (bad JSON, a message breaking a rule) or its
path; given an injected fault; or left unanswered because the emulator stopped."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One ingestion request and how the emulator answered it.

    ``status`` is ``None`` when the connection was dropped without an answer (a fault).
    ``error`` says why a request was refused and ``code`` is the vendor-style error code
    (``invalid_key``, ``message_too_large``...); ``fault`` names the injected fault, if any.
    ``key`` is the masked key the request carried, when it got far enough to be read.
    """

    request_id: int
    method: str
    path: str
    status: int | None
    events: int
    received_at: datetime
    error: str | None = None
    fault: str | None = None
    code: str | None = None
    key: str | None = None

    @property
    def outcome(self) -> Outcome:
        """What became of the request (see ``Outcome``)."""
        if self.fault is not None:
            return "fault"
        if self.status is None:
            return "unanswered"
        if self.status == 200:
            return "accepted"
        if self.status in (401, 403):
            return "key"
        if self.status == 413 or (self.code or "").endswith("_too_large"):
            return "too_large"
        if self.status == 404:
            return "not_found"
        return "malformed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the shape served by ``GET /_requests``)."""
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "outcome": self.outcome,
            "events": self.events,
            "received_at": self.received_at.isoformat(),
            "error": self.error,
            "code": self.code,
            "fault": self.fault,
            "key": self.key,
        }

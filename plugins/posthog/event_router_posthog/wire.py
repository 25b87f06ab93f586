"""Segment-spec events as PostHog capture events, and the ``/batch/`` request body.

The mapping follows posthog-python (``posthog/client.py``): ``capture()`` sends the event name
with its properties; ``identify()`` sends ``$identify`` with ``$set``; ``page()`` (3.x) sends
``$pageview`` with ``$current_url``; ``group_identify()`` sends ``$groupidentify`` with
``$group_type``, ``$group_key`` and ``$group_set``; ``alias(previous_id, distinct_id)`` sends
``$create_alias`` from ``distinct_id=previous_id`` with ``properties.alias=distinct_id``;
``_enrich_event_properties()`` adds ``$lib`` and ``$lib_version``. ``$anon_distinct_id`` on
``$identify`` is what posthog-js sends to merge the anonymous person into the identified one;
``$screen`` with ``$screen_name`` is what PostHog's own Segment destination sends for screens.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from router_core import LIBRARY_NAME, LIBRARY_VERSION, Event, encode_json

__all__ = ["CaptureEvent", "batch_body", "capture_uuid", "encode_event", "to_capture"]

_MESSAGE_ID_NAMESPACE = uuid.UUID("6f0d6c2e-9d7b-4d1e-8a3e-2b5f1c0e7a41")  # fixed forever
# A UUID already in the form str(uuid.UUID(...)) gives: most message ids (the router's own).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class CaptureEvent:
    """One event as PostHog receives it: its name, its distinct id and its JSON, encoded once."""

    name: str
    distinct_id: str
    json: bytes


def _page_url(event: Event) -> Any:
    url = event.properties.get("url")
    if url:
        return url
    page = event.context.get("page")
    return page.get("url") if isinstance(page, dict) else None


def to_capture(event: Event, group_type: str) -> dict[str, Any]:
    """The PostHog capture event for ``event``; group events get ``group_type``."""
    properties = dict(event.properties)
    distinct_id = event.distinct_id
    kind = event.type
    if kind == "track":
        name = event.event or ""
    elif kind == "identify":
        name = "$identify"
        # posthog-python puts "$set" beside "event"; PostHog's ingestion folds it into
        # properties.$set, the form its capture docs and its Segment destination send.
        properties["$set"] = event.traits
        if event.user_id and event.anonymous_id:
            properties["$anon_distinct_id"] = event.anonymous_id
    elif kind == "page":
        name = "$pageview"
        url = _page_url(event)
        if url:
            properties.setdefault("$current_url", url)
    elif kind == "screen":
        name = "$screen"
        if event.name:
            properties.setdefault("$screen_name", event.name)
    elif kind == "group":
        name = "$groupidentify"
        properties["$group_type"] = group_type
        properties["$group_key"] = event.group_id
        properties["$group_set"] = event.traits
    else:  # alias: the previous id is the one sent, the new id its alias (posthog-python)
        name = "$create_alias"
        distinct_id = event.previous_id or ""
        properties["distinct_id"] = distinct_id
        properties["alias"] = event.user_id
    properties["$lib"] = LIBRARY_NAME
    properties["$lib_version"] = LIBRARY_VERSION
    return {
        "event": name,
        "distinct_id": distinct_id,
        "uuid": capture_uuid(event.message_id),
        "timestamp": event.timestamp.isoformat(),  # the Event model keeps timestamps in UTC
        "properties": properties,
    }


def capture_uuid(message_id: str) -> str:
    """PostHog's ``uuid`` for ``message_id``: PostHog dedups on it, so it must be stable.

    PostHog accepts only UUIDs there. A message id that is one is sent as is; any other id an
    app chose (``order-42``) becomes a UUID derived from it, the same on every retry.
    """
    if _CANONICAL_UUID.fullmatch(message_id):
        return message_id  # what str(uuid.UUID(message_id)) would give, without parsing it
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, message_id))


def encode_event(event: Event, group_type: str) -> CaptureEvent:
    """Map and JSON-encode ``event`` (compact UTF-8)."""
    capture = to_capture(event, group_type)
    return CaptureEvent(
        name=capture["event"],
        distinct_id=capture["distinct_id"],
        json=encode_json(capture),
    )


def batch_body(api_key: str, events: Sequence[bytes], sent_at: str) -> bytes:
    """The ``/batch/`` request body around already-encoded events, without re-encoding them."""
    return b"".join(
        (
            b'{"api_key":',
            encode_json(api_key),
            b',"batch":[',
            b",".join(events),
            b'],"sent_at":',
            encode_json(sent_at),
            b',"historical_migration":false}',
        )
    )

"""Segment's wire format: spec events as camelCase JSON messages and the batch envelope.

This is the hot path. Each message is built as a plain dict (faster than ``model_dump`` with
aliases, which also copies every nested dict) and encoded exactly once; the request body is
spliced together from the encoded messages, so the size checked against Segment's limits is
the size sent.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from router_core import LIBRARY_NAME, LIBRARY_VERSION, Event, encode_json

__all__ = ["basic_auth", "encode_body", "encode_message", "message"]

LIBRARY: dict[str, str] = {"name": LIBRARY_NAME, "version": LIBRARY_VERSION}


def message(event: Event) -> dict[str, Any]:
    """The Segment message for ``event``, with camelCase keys (the event is not modified)."""
    msg: dict[str, Any] = {"type": event.type}
    if event.user_id is not None:
        msg["userId"] = event.user_id
    if event.anonymous_id is not None:
        msg["anonymousId"] = event.anonymous_id
    kind = event.type
    if kind == "track":
        msg["event"] = event.event
        msg["properties"] = event.properties
    elif kind == "identify":
        msg["traits"] = event.traits
    elif kind in ("page", "screen"):
        if event.name is not None:
            msg["name"] = event.name
        if event.category is not None:
            msg["category"] = event.category
        msg["properties"] = event.properties
    elif kind == "group":
        msg["groupId"] = event.group_id
        msg["traits"] = event.traits
    else:  # alias; userId is set above
        msg["previousId"] = event.previous_id
    msg["messageId"] = event.message_id
    msg["timestamp"] = event.timestamp.isoformat()
    # A new dict: the event's own context stays as the app built it.
    msg["context"] = {**event.context, "library": LIBRARY}
    msg["integrations"] = event.integrations
    return msg


def encode_message(event: Event) -> bytes:
    """``event`` as one compact UTF-8 JSON message.

    Events are JSON-safe when built; this only fails (``ValueError``, ``TypeError``) for one
    changed in place afterwards, which the plugin kit reports naming the event.
    """
    return encode_json(message(event))


def encode_body(
    messages: Sequence[bytes], write_key: SecretStr, sent_at: datetime | None = None
) -> bytes:
    """The ``/v1/batch`` body ``{"batch": [...], "sentAt": ..., "writeKey": ...}``."""
    stamp = (sent_at or datetime.now(UTC)).isoformat()
    tail = encode_json({"sentAt": stamp, "writeKey": write_key.get_secret_value()})
    # tail is '{"sentAt":...}': splice the batch in front of its first key.
    return b'{"batch":[' + b",".join(messages) + b"]," + tail[1:]


def basic_auth(write_key: SecretStr) -> str:
    """``Authorization`` value: HTTP Basic with the write key as user and an empty password."""
    token = base64.b64encode(f"{write_key.get_secret_value()}:".encode()).decode("ascii")
    return f"Basic {token}"

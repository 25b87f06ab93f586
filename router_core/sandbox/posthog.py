"""A local emulator of PostHog's capture API (``/batch/``, ``/i/v0/e/`` and the legacy paths)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any, ClassVar

from router_core.sandbox.bodies import (
    GZIP_MAGIC,
    Rejected,
    compact_json,
    gunzip,
    parse_json,
    sent_with,
    utf8_size,
)
from router_core.sandbox.emulator import Emulator, IncomingRequest
from router_core.sandbox.records import ReceivedEvent, Vendor, mask_key

__all__ = ["MAX_EVENT_BYTES", "MAX_REQUEST_BYTES", "PERSONAL_KEY_PREFIX", "PostHogEmulator"]

MAX_EVENT_BYTES = 1024 * 1024
"""About 1 MB per event, measured as compact JSON."""
MAX_REQUEST_BYTES = 20 * 1024 * 1024
"""20 MB per request, measured on the (decompressed) body."""
PERSONAL_KEY_PREFIX = "phx_"

_ENDPOINTS = {
    "/batch": "batch",
    "/i/v0/ai/batch": "batch",  # posthog-python's opt-in lane for $ai_* events
    "/capture": "capture",
    "/e": "capture",
    "/i/v0/e": "capture",
    "/track": "capture",
}
_GZIP_HINTS = ("gzip", "gzip-js")
_KEY_FIELDS = ("api_key", "token")
_TYPES = {
    "$identify": "identify",
    "$pageview": "page",
    "$screen": "screen",
    "$groupidentify": "group",
    "$create_alias": "alias",
}


class PostHogEmulator(Emulator):
    """PostHog's capture API on loopback, enforcing its documented rules.

    - ``POST /batch/`` (``{"api_key", "batch": [...]}``), and single events (or a JSON array
      of events, as posthog-js sends) at ``/i/v0/e/``, ``/e/``, ``/capture/``, ``/track/``.
      Gzip bodies are accepted whether announced by ``Content-Encoding: gzip`` (posthog-python),
      by ``?compression=gzip-js`` (posthog-js) or by neither, as PostHog sniffs the body.
    - Auth: the project key as ``api_key`` (or ``token``) in the body, or in each event
      (``api_key``, ``token`` or ``properties.token``). No key: 401. A personal key
      (``phx_...``) is refused with 401 as capture does. With ``api_keys`` given, any other
      key is refused with 401.
    - Each event needs ``event`` and a ``distinct_id`` (top level, ``$distinct_id``, or
      ``properties.distinct_id``); ``uuid``, when sent, must be a valid UUID (one is assigned
      if missing). An empty batch or a broken rule is a 400; an event over about 1 MB or a
      request over 20 MB is a 413; nothing from a refused request is recorded.
    - Accepted: 200 ``{"status": 1}``. Errors carry ``{"type", "code", "detail"}``.
    """

    vendor: ClassVar[Vendor] = "posthog"
    too_large_status: ClassVar[int] = 413
    max_body_bytes: ClassVar[int] = MAX_REQUEST_BYTES + 1024 * 1024

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, api_keys: Iterable[str] | None = None
    ) -> None:
        super().__init__(host, port, api_keys)

    def endpoint(self, path: str) -> str | None:
        """``batch`` for ``/batch/``, ``capture`` for the single-event paths."""
        return _ENDPOINTS.get(path.rstrip("/"))

    def accepted_body(self) -> dict[str, Any]:
        """PostHog's answer to an accepted request."""
        return {"status": 1}

    def error_body(self, rejected: Rejected) -> dict[str, Any]:
        """Shaped as posthog-python reads it (``detail``)."""
        kind = "authentication_error" if rejected.status == 401 else "validation_error"
        return {"type": kind, "code": rejected.code, "detail": rejected.message}

    def check_key(self, key: str | None, field: str) -> str:
        """Refuse personal keys before the usual checks, as capture does."""
        if key and key.startswith(PERSONAL_KEY_PREFIX):
            raise Rejected(
                401,
                "personal_api_key",
                "a personal API key (phx_) cannot capture events; use the project API key (phc_)",
                key=mask_key(key),
            )
        return super().check_key(key, field)

    def ingest(self, request: IncomingRequest) -> list[ReceivedEvent]:
        """Validate a whole request, then build its events (all or nothing)."""
        data = _decode(request)
        body = parse_json(data)
        if isinstance(body, dict) and "batch" in body:
            events = body["batch"]
            if not isinstance(events, list):
                raise Rejected(400, "invalid_payload", "batch must be a list of events")
            labels = [f"batch[{i}]" for i in range(len(events))]
            token = _string_key(body, "request")
        elif isinstance(body, list):
            events, labels, token = body, [f"[{i}]" for i in range(len(body))], None
        elif isinstance(body, dict):
            events, labels, token = [body], ["event"], None
        else:
            raise Rejected(400, "invalid_payload", "body must be a JSON object or array")
        if not events:
            raise Rejected(400, "empty_batch", "the request carries no events")
        if not all(isinstance(event, dict) for event in events):
            bad = next(
                lab for lab, ev in zip(labels, events, strict=True) if not isinstance(ev, dict)
            )
            raise Rejected(400, "invalid_payload", f"{bad} must be a JSON object")
        if token is None:
            token = _event_token(events, labels)
        key = self.check_key(token, "api_key")
        with sent_with(key):
            checked = [_check_event(lab, event) for lab, event in zip(labels, events, strict=True)]
        return [
            self.new_event(
                request,
                message_id=message_id,
                type=_TYPES.get(name, "track"),
                event=name,
                distinct_id=distinct_id,
                payload_json=text,
                key=key,
            )
            for text, name, distinct_id, message_id in checked
        ]


def _decode(request: IncomingRequest) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    hint = (request.query.get("compression") or [""])[-1].lower()
    if encoding not in ("", "identity", "gzip"):
        raise Rejected(400, "invalid_payload", f"Content-Encoding {encoding!r} is not supported")
    if hint not in ("", *_GZIP_HINTS):
        raise Rejected(400, "invalid_payload", f"compression {hint!r} is not supported")
    # Capture sniffs the body too: some clients compress without saying so.
    if encoding == "gzip" or hint in _GZIP_HINTS or request.body.startswith(GZIP_MAGIC):
        return gunzip(request.body, MAX_REQUEST_BYTES, 413)
    if len(request.body) > MAX_REQUEST_BYTES:
        raise Rejected(
            413,
            "request_too_large",
            f"body is {len(request.body):,} bytes, over the 20 MB limit per request",
        )
    return request.body


def _string_key(holder: dict[str, Any], label: str) -> str | None:
    for field in _KEY_FIELDS:
        value = holder.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise Rejected(400, "invalid_payload", f"{label} {field} must be a string")
        return value
    return None


def _event_token(events: list[dict[str, Any]], labels: list[str]) -> str | None:
    """The key carried by the events themselves; they must agree on it."""
    found: str | None = None
    for label, event in zip(labels, events, strict=True):
        token = _string_key(event, label)
        properties = event.get("properties")
        if token is None and isinstance(properties, dict):
            token = _string_key(properties, f"{label}.properties")
        if token is None:
            continue
        if found is not None and token != found:
            raise Rejected(401, "invalid_key", "events in one request carry different api keys")
        found = token
    return found


def _check_event(label: str, event: dict[str, Any]) -> tuple[str, str, str, str]:
    """Apply capture's per-event rules.

    Returns (the event as JSON with keys masked, name, distinct_id, uuid).
    """
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise Rejected(400, "invalid_payload", f"{label}: event (the name) is missing")
    properties = event.get("properties")
    if properties is not None and not isinstance(properties, dict):
        raise Rejected(400, "invalid_payload", f"{label}.properties must be an object")
    distinct_id = _distinct_id(event, properties)
    if distinct_id is None:
        raise Rejected(400, "invalid_payload", f"{label}: distinct_id is missing")
    raw_uuid = event.get("uuid")
    if raw_uuid is None:
        message_id = str(uuid.uuid4())  # capture assigns one
    else:
        try:
            uuid.UUID(raw_uuid)
        except (TypeError, ValueError, AttributeError):
            raise Rejected(
                400, "invalid_payload", f"{label}.uuid {raw_uuid!r} is not a valid UUID"
            ) from None
        message_id = raw_uuid
    text = compact_json(event)
    size = utf8_size(text)
    if size > MAX_EVENT_BYTES:
        raise Rejected(
            413,
            "event_too_large",
            f"{label} is {size:,} bytes, over the {MAX_EVENT_BYTES:,}-byte (1 MB) limit",
        )
    masked = _masked(event)
    if masked is not event:
        text = compact_json(masked)
    return text, name, distinct_id, message_id


def _distinct_id(event: dict[str, Any], properties: dict[str, Any] | None) -> str | None:
    """Top-level ``distinct_id``/``$distinct_id`` wins over ``properties.distinct_id``."""
    for value in (
        event.get("distinct_id"),
        event.get("$distinct_id"),
        (properties or {}).get("distinct_id"),
    ):
        if value is None or value == "":
            continue
        # Capture stringifies non-string ids (numbers, even containers) rather than refusing.
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return None


def _masked(event: dict[str, Any]) -> dict[str, Any]:
    """The event with any key it carries replaced by its masked form."""
    masked = event
    for field in _KEY_FIELDS:
        if field in event:
            masked = {**masked, field: _mask_value(event[field])}
    properties = event.get("properties")
    if isinstance(properties, dict) and "token" in properties:
        masked = {**masked, "properties": {**properties, "token": _mask_value(properties["token"])}}
    return masked


def _mask_value(value: Any) -> str:
    return mask_key(value) if isinstance(value, str) else "****"

"""A local emulator of Segment's HTTP Tracking API (``/v1/batch`` and the single-call endpoints)."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable
from typing import Any, ClassVar

from router_core.sandbox.bodies import (
    Rejected,
    compact_json,
    gunzip,
    parse_json,
    sent_with,
    utf8_size,
)
from router_core.sandbox.emulator import Emulator, IncomingRequest
from router_core.sandbox.records import ReceivedEvent, Vendor, mask_key

__all__ = [
    "MAX_BATCH_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "MAX_MESSAGE_ID_LENGTH",
    "MAX_REQUEST_BYTES",
    "SegmentEmulator",
]

MAX_MESSAGE_BYTES = 32 * 1024
"""32 KB per message, measured as compact JSON."""
MAX_REQUEST_BYTES = 500 * 1024
"""500 KB per request, measured on the (decompressed) body."""
MAX_BATCH_MESSAGES = 2500
MAX_MESSAGE_ID_LENGTH = 100

MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
_SINGLE_ENDPOINTS = {f"/v1/{kind}": kind for kind in MESSAGE_TYPES}
_BATCH_ENDPOINTS = {"/v1/batch": "batch", "/v1/import": "batch"}  # import is batch's alias
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")


class SegmentEmulator(Emulator):
    """Segment's HTTP Tracking API on loopback, enforcing its documented rules.

    - ``POST /v1/batch`` (``{"batch": [...]}``) and ``POST /v1/{track,identify,page,screen,
      group,alias}`` (one message); gzip bodies (``Content-Encoding: gzip``) are accepted.
    - Auth: HTTP Basic with the write key as user name, or ``writeKey`` in the body. No key:
      401. Real Segment answers 200 even for a wrong write key (the events just go nowhere);
      with ``write_keys=None`` the emulator mirrors that and accepts any non-empty key. Give
      ``write_keys`` to refuse every other key with 401 and so catch misconfiguration.
    - Each message: track needs ``event``; all but alias need ``userId`` or ``anonymousId``;
      group needs ``groupId``; alias needs ``previousId`` and ``userId``; ``messageId`` is at
      most 100 characters (one is assigned if missing, as Segment does).
    - Over 32 KB per message, 500 KB per request or 2,500 messages per batch, bad JSON, or a
      message breaking a rule: 400 with a JSON body ``{"success": false, "code", "message"}``
      naming what is wrong, and nothing from that request is recorded.
    - Accepted: 200 ``{"success": true}``.
    """

    vendor: ClassVar[Vendor] = "segment"
    too_large_status: ClassVar[int] = 400
    max_body_bytes: ClassVar[int] = 2 * MAX_REQUEST_BYTES  # gzip of incompressible data grows

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, write_keys: Iterable[str] | None = None
    ) -> None:
        super().__init__(host, port, write_keys)

    def endpoint(self, path: str) -> str | None:
        """``batch`` or the message type a single-call endpoint implies."""
        path = path.rstrip("/")
        return _BATCH_ENDPOINTS.get(path) or _SINGLE_ENDPOINTS.get(path)

    def accepted_body(self) -> dict[str, Any]:
        """Segment's answer to an accepted request."""
        return {"success": True}

    def error_body(self, rejected: Rejected) -> dict[str, Any]:
        """Shaped as analytics-python reads it (``code`` and ``message``)."""
        return {"success": False, "code": rejected.code, "message": rejected.message}

    def ingest(self, request: IncomingRequest) -> list[ReceivedEvent]:
        """Validate a whole request, then build its events (all or nothing)."""
        data = _decode(request)
        body = parse_json(data)
        if not isinstance(body, dict):
            raise Rejected(400, "invalid_request", "body must be a JSON object")
        key = self.check_key(_basic_user(request) or _body_key(body), "write key")
        with sent_with(key):
            checked = _check_messages(request, body)
        return [
            self.new_event(
                request,
                message_id=message_id,
                type=kind,
                event=name,
                distinct_id=distinct_id,
                payload_json=text,
                key=key,
            )
            for text, kind, message_id, name, distinct_id in checked
        ]


def _check_messages(
    request: IncomingRequest, body: dict[str, Any]
) -> list[tuple[str, str, str, str | None, str | None]]:
    """Apply the per-message rules to every message of a request."""
    if request.endpoint == "batch":
        batch = body.get("batch")
        if not isinstance(batch, list):
            raise Rejected(400, "invalid_request", "batch must be a list of messages")
        if len(batch) > MAX_BATCH_MESSAGES:
            raise Rejected(
                400,
                "batch_too_large",
                f"batch has {len(batch):,} messages, over the {MAX_BATCH_MESSAGES:,} limit",
            )
        labelled: list[tuple[str, Any, str | None]] = [
            (f"batch[{i}]", message, None) for i, message in enumerate(batch)
        ]
    else:
        labelled = [("message", body, request.endpoint)]
    return [_check_message(label, msg, kind) for label, msg, kind in labelled]


def _decode(request: IncomingRequest) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "gzip":
        return gunzip(request.body, MAX_REQUEST_BYTES, 400)
    if encoding not in ("", "identity"):
        raise Rejected(400, "invalid_request", f"Content-Encoding {encoding!r} is not supported")
    if len(request.body) > MAX_REQUEST_BYTES:
        raise Rejected(
            400,
            "request_too_large",
            f"body is {len(request.body):,} bytes, over the {MAX_REQUEST_BYTES:,}-byte "
            "(500 KB) limit per request",
        )
    return request.body


def _basic_user(request: IncomingRequest) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        # The scheme is not echoed: a bare "Authorization: <key>" would put the key in it.
        raise Rejected(
            401, "invalid_auth", "Authorization must be HTTP Basic with the write key as user"
        )
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Rejected(
            401, "invalid_auth", "Authorization Basic credentials are not base64"
        ) from None
    return decoded.partition(":")[0] or None


def _body_key(body: dict[str, Any]) -> str | None:
    key = body.get("writeKey")
    if key is not None and not isinstance(key, str):
        raise Rejected(400, "invalid_request", "writeKey must be a string")
    return key


def _check_message(
    label: str, message: Any, kind: str | None
) -> tuple[str, str, str, str | None, str | None]:
    """Apply Segment's per-message rules.

    Returns (the message as JSON with keys masked, type, messageId, name, identity).
    """
    if not isinstance(message, dict):
        raise Rejected(400, "invalid_message", f"{label} must be a JSON object")
    declared = message.get("type")
    if kind is None:
        if declared not in MESSAGE_TYPES:
            raise Rejected(
                400,
                "invalid_message",
                f"{label}.type must be one of {', '.join(MESSAGE_TYPES)}, got {declared!r}",
            )
        kind = str(declared)
    elif declared is not None and declared != kind:
        raise Rejected(
            400, "invalid_message", f"{label}.type is {declared!r} but was sent to /v1/{kind}"
        )
    text = compact_json(message)
    size = utf8_size(text)
    if size > MAX_MESSAGE_BYTES:
        raise Rejected(
            400,
            "message_too_large",
            f"{label} is {size:,} bytes, over the {MAX_MESSAGE_BYTES:,}-byte (32 KB) limit",
        )
    message_id = message.get("messageId")
    if message_id is None:
        message_id = f"api-{uuid.uuid4()}"  # what Segment assigns when a message has none
    elif not isinstance(message_id, str) or not message_id:
        raise Rejected(400, "invalid_message", f"{label}.messageId must be a non-empty string")
    elif len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise Rejected(
            400,
            "invalid_message",
            f"{label}.messageId is {len(message_id)} characters, over the limit of "
            f"{MAX_MESSAGE_ID_LENGTH}",
        )
    user_id = _identifier(label, message, "userId")
    anonymous_id = _identifier(label, message, "anonymousId")
    if kind != "alias" and user_id is None and anonymous_id is None:
        raise Rejected(400, "invalid_message", f"{label}: {kind} needs userId or anonymousId")
    name: str | None = None
    if kind == "track":
        event = message.get("event")
        if not isinstance(event, str) or not event:
            raise Rejected(400, "invalid_message", f"{label}: track needs event (a name)")
        name = event
    elif kind in ("page", "screen"):
        page_name = message.get("name")
        if page_name is not None and not isinstance(page_name, str):
            raise Rejected(400, "invalid_message", f"{label}.name must be a string")
        name = page_name
    elif kind == "group" and _identifier(label, message, "groupId") is None:
        raise Rejected(400, "invalid_message", f"{label}: group needs groupId")
    elif kind == "alias":
        if _identifier(label, message, "previousId") is None:
            raise Rejected(400, "invalid_message", f"{label}: alias needs previousId")
        if user_id is None:
            raise Rejected(400, "invalid_message", f"{label}: alias needs userId")
    for field in _OBJECT_FIELDS:
        value = message.get(field)
        if value is not None and not isinstance(value, dict):
            raise Rejected(400, "invalid_message", f"{label}.{field} must be an object")
    if "writeKey" in message:
        text = compact_json(_masked(message))
    return text, kind, message_id, name, user_id or anonymous_id


def _identifier(label: str, message: dict[str, Any], field: str) -> str | None:
    """A present id as a string: non-empty strings, and numbers (which SDKs stringify)."""
    value = message.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise Rejected(400, "invalid_message", f"{label}.{field} must be a string")


def _masked(message: dict[str, Any]) -> dict[str, Any]:
    key = message.get("writeKey")
    if key is None:
        return message
    return {**message, "writeKey": mask_key(key) if isinstance(key, str) else "****"}

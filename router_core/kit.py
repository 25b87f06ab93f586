"""The plugin kit: what every HTTP destination plugin does around its own wire format.

A plugin supplies how one event is encoded and how encoded events are wrapped in its request
body; ``post_events`` does the rest, the same way for every plugin: encode each event once,
check the destination's ``BatchLimits`` before any request (an error names the event and the
limit), gzip at ``GZIP_LEVEL`` when asked, POST through the router's pooled client with the
destination's timeout, and classify a non-2xx answer with ``raise_for_status``.

Timeouts and network errors are left to the router, which reports them as retryable failures;
the pooled client already sends ``USER_AGENT``.
"""

from __future__ import annotations

import gzip as _gzip
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from router_core.destination import Destination
from router_core.errors import DeliveryError
from router_core.events import Event
from router_core.http import raise_for_status
from router_core.limits import BatchLimits

__all__ = [
    "GZIP_LEVEL",
    "Oversize",
    "describe_oversize",
    "encode_json",
    "event_json",
    "json_array",
    "post_events",
]

GZIP_LEVEL = 6
"""One gzip level for every plugin: 6 costs far less CPU than 9 for a few percent in size."""

# One encoder for the process (json.dumps with options builds one per call): compact, UTF-8
# kept as is, and no NaN, which is not JSON and which a vendor would refuse the request for.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# Objects the standard library refuses are refused here too (orjson would write them).
_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

Output = Callable[[str | None], dict[str, object]]
"""Builds a delivery's ``output`` from its error message (``None`` on success)."""


def encode_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; ``ValueError``/``TypeError`` when it is not JSON.

    orjson does the work (about 12 times faster than the standard library's encoder here, and
    every event is encoded once per destination); what it takes that JSON has no rule for, or
    writes differently, goes by the standard library's rules: keys that are not strings, and
    non-finite floats, which orjson writes as ``null`` and which are refused here.
    """
    try:
        data = orjson.dumps(value, option=_ORJSON_STRICT)
    except TypeError:  # keys that are not strings, integers past 64 bits, other objects
        return _ENCODER.encode(value).encode()
    if b"null" in data:  # perhaps a NaN or an infinity that orjson turned into null
        _ENCODER.encode(value)  # raises ValueError for those; a real null passes
    return data


def event_json(event: Event) -> bytes:
    """``event`` as the router's own JSON (snake_case, ``model_dump_json``)."""
    return event.model_dump_json().encode()


def json_array(encoded: Sequence[bytes]) -> bytes:
    """Encoded events as one JSON array, without re-encoding them."""
    return b"[" + b",".join(encoded) + b"]"


@dataclass(frozen=True, slots=True)
class Oversize:
    """A ``BatchLimits`` limit a request would break, found before it is sent.

    ``limit`` names the ``BatchLimits`` field; ``size`` is the number of events or bytes and
    ``maximum`` the limit. For ``max_event_bytes``, ``event`` is the event at fault and
    ``index`` its position among the ``count`` events of the request.
    """

    vendor: str
    limit: Literal["max_events", "max_event_bytes", "max_request_bytes"]
    size: int
    maximum: int
    count: int
    event: Event | None = None
    index: int | None = None


def _kb(size: int) -> str:
    return f"{size // 1000:,} KB" if size % 1000 == 0 else f"{size:,}-byte"


def describe_oversize(oversize: Oversize) -> str:
    """The default message: ``"Segment API error: event 'm-1' is 40,123 bytes, over ..."``."""
    vendor, size, maximum = oversize.vendor, oversize.size, oversize.maximum
    prefix = f"{vendor} API error"
    if oversize.limit == "max_events":
        return (
            f"{prefix}: batch has {size:,} events, "
            f"over {vendor}'s {maximum:,}-event per-request limit"
        )
    if oversize.limit == "max_request_bytes":
        return (
            f"{prefix}: batch request is {size:,} bytes, "
            f"over {vendor}'s {_kb(maximum)} per-request limit"
        )
    event = oversize.event
    which = "event" if oversize.count == 1 or event is None else f"event {event.message_id!r}"
    return f"{prefix}: {which} is {size:,} bytes, over {vendor}'s {_kb(maximum)} per-event limit"


async def post_events(
    destination: Destination[Any],
    events: Sequence[Event],
    *,
    url: str,
    encode: Callable[[Event], bytes],
    envelope: Callable[[Sequence[bytes]], bytes] = json_array,
    vendor: str,
    error: type[DeliveryError] = DeliveryError,
    limits: BatchLimits | None = None,
    headers: Mapping[str, str] | None = None,
    gzip: bool = False,
    output: Output | None = None,
    describe: Callable[[Oversize], str] = describe_oversize,
) -> httpx.Response:
    """POST ``events`` in one request to ``url``; raise ``error`` unless the answer is 2xx.

    ``encode`` turns one event into bytes (a ``TypeError``/``ValueError`` from it is reported
    as the event that cannot be sent); ``envelope`` wraps the encoded events in the request
    body. ``limits`` (default: none checked) are checked per event and per request before
    anything is sent, as permanent errors worded by ``describe``. ``vendor`` names the
    destination in messages (``"Segment API error: HTTP 503"``); ``output`` gives every
    error raised here its ``output``. The response is returned for the plugin's ``Delivery``.
    """

    def fail(message: str, **details: Any) -> DeliveryError:
        return error(message, output=None if output is None else output(message), **details)

    if limits is not None and len(events) > limits.max_events:
        too_many = Oversize(vendor, "max_events", len(events), limits.max_events, len(events))
        raise fail(describe(too_many))
    encoded: list[bytes] = []
    for index, event in enumerate(events):
        try:
            item = encode(event)
        except (TypeError, ValueError) as exc:
            message = f"{vendor} API error: event {event.message_id!r} cannot be sent as JSON"
            raise fail(f"{message}: {exc}") from exc
        if limits is not None and len(item) > limits.max_event_bytes:
            big = Oversize(
                vendor,
                "max_event_bytes",
                len(item),
                limits.max_event_bytes,
                len(events),
                event=event,
                index=index,
            )
            raise fail(describe(big))
        encoded.append(item)
    body = envelope(encoded)
    if limits is not None and len(body) > limits.max_request_bytes:
        large = Oversize(
            vendor, "max_request_bytes", len(body), limits.max_request_bytes, len(events)
        )
        raise fail(describe(large))
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    if gzip:
        body = _gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        sent_headers["Content-Encoding"] = "gzip"
    response = await destination.client.post(
        url, content=body, headers=sent_headers, timeout=destination.timeout
    )
    if not response.is_success:
        message = f"{vendor} API error: HTTP {response.status_code}"
        raise_for_status(
            response, error, message=message, output=None if output is None else output(message)
        )
    return response

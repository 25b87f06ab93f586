"""The hooks: deliver events to PostHog's ``/batch/`` endpoint through the router's client."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial

import httpx

from event_router_posthog.errors import PostHogAPIError
from event_router_posthog.settings import PostHogSettings
from event_router_posthog.wire import CaptureEvent, batch_body, compress, encode_event
from router_core import BatchLimits, Delivery, Destination, Event, hookimpl, raise_for_status
from router_core.http import USER_AGENT

__all__ = ["LIMITS", "batch_limits", "destination_settings", "send_batch", "send_event"]

LIMITS = BatchLimits(max_events=1000, max_request_bytes=20_000_000, max_event_bytes=1_000_000)
"""PostHog's documented limits: about 1 MB per event, 20 MB per request."""

_Output = Callable[[str | None], dict[str, object]]


@hookimpl
def destination_settings() -> type[PostHogSettings]:
    """PostHog destinations are configured with ``PostHogSettings``."""
    return PostHogSettings


@hookimpl
def batch_limits() -> BatchLimits:
    """PostHog's per-event and per-request limits."""
    return LIMITS


@hookimpl
async def send_event(destination: Destination[PostHogSettings], event: Event) -> Delivery:
    """Capture one event; the output has the PostHog capture job's shape."""
    capture = encode_event(event, destination.settings.group_type)
    output = partial(_event_output, capture)
    response = await _post(destination, [capture.json], output)
    return Delivery(status_code=response.status_code, output=output(None))


@hookimpl
async def send_batch(
    destination: Destination[PostHogSettings], events: Sequence[Event]
) -> Delivery:
    """Capture ``events`` in one request; the output counts them."""
    output = partial(_batch_output, len(events))
    if not events:
        return Delivery(output=output(None))
    group_type = destination.settings.group_type
    encoded = [encode_event(event, group_type).json for event in events]
    response = await _post(destination, encoded, output)
    return Delivery(status_code=response.status_code, output=output(None))


def _event_output(capture: CaptureEvent, error: str | None) -> dict[str, object]:
    return {
        "success": error is None,
        "event": capture.name,
        "distinct_id": capture.distinct_id,
        "error": error,
    }


def _batch_output(count: int, error: str | None) -> dict[str, object]:
    return {"success": error is None, "events": count, "error": error}


def _error(message: str, output: _Output, *, retryable: bool = False) -> PostHogAPIError:
    return PostHogAPIError(message, retryable=retryable, output=output(message))


def _check_sizes(encoded: Sequence[bytes], output: _Output) -> None:
    limit = LIMITS.max_event_bytes
    for index, item in enumerate(encoded):
        if len(item) > limit:
            which = "the event" if len(encoded) == 1 else f"event {index + 1} of {len(encoded)}"
            raise _error(
                f"PostHog API error: {which} is {len(item):,} bytes, over PostHog's limit of "
                f"{limit:,} bytes per event; nothing was sent",
                output,
            )


async def _post(
    destination: Destination[PostHogSettings], encoded: Sequence[bytes], output: _Output
) -> httpx.Response:
    """POST ``encoded`` events in one ``/batch/`` request; raise ``PostHogAPIError`` on failure."""
    settings = destination.settings
    _check_sizes(encoded, output)
    body = batch_body(settings.api_key.get_secret_value(), encoded, datetime.now(UTC).isoformat())
    if len(body) > LIMITS.max_request_bytes:
        raise _error(
            f"PostHog API error: the request is {len(body):,} bytes, over PostHog's limit of "
            f"{LIMITS.max_request_bytes:,} bytes per request; nothing was sent",
            output,
        )
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if settings.gzip:
        body = compress(body)
        headers["Content-Encoding"] = "gzip"
    try:
        response = await destination.client.post(
            settings.batch_url, content=body, headers=headers, timeout=destination.timeout
        )
    except httpx.TimeoutException as exc:
        raise _error("PostHog API error: request timed out", output, retryable=True) from exc
    except httpx.TransportError as exc:
        message = f"PostHog API error: network error: {type(exc).__name__}"
        raise _error(message, output, retryable=True) from exc
    if not response.is_success:
        message = f"PostHog API error: HTTP {response.status_code}"
        raise_for_status(response, PostHogAPIError, message=message, output=output(message))
    return response

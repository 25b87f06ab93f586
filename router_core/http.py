"""Helpers for plugins that speak HTTP: turning a response into success or a ``DeliveryError``."""

from __future__ import annotations

import httpx

from router_core._version import __version__
from router_core.errors import DeliveryError
from router_core.retry import parse_retry_after
from router_core.secrets import truncate

__all__ = [
    "LIBRARY_NAME",
    "LIBRARY_VERSION",
    "PERMANENT_STATUS_CODES",
    "USER_AGENT",
    "is_retryable_status",
    "raise_for_status",
]

LIBRARY_NAME = "event-router"
LIBRARY_VERSION = __version__
USER_AGENT = f"{LIBRARY_NAME}/{LIBRARY_VERSION}"

PERMANENT_STATUS_CODES = frozenset({400, 401, 403, 413})
_MAX_BODY_IN_ERROR = 500


def is_retryable_status(status_code: int) -> bool:
    """408, 429 and 5xx are transient; every other non-2xx answer is permanent."""
    return status_code in (408, 429) or 500 <= status_code <= 599


def raise_for_status(
    response: httpx.Response,
    error: type[DeliveryError] = DeliveryError,
    message: str | None = None,
    output: dict[str, object] | None = None,
) -> None:
    """Raise ``error`` for a non-2xx ``response``, classified as retryable or not.

    The body (secrets masked, then cut to 500 characters) and ``Retry-After`` are carried on
    the error.
    """
    if response.is_success:
        return
    status = response.status_code
    body = truncate(response.text, _MAX_BODY_IN_ERROR)
    raise error(
        message or f"HTTP {status}",
        status_code=status,
        body=body,
        retryable=is_retryable_status(status),
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        output=output,
    )

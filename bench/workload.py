"""What every benchmark sends, and where: the same track call for event-router and the SDKs.

Nothing here imports an SDK, so a process measuring event-router's memory loads none.
"""

from __future__ import annotations

import logging
from typing import Any

from router_core.logs import configure_logging

__all__ = [
    "API_KEY",
    "EVENT_NAME",
    "WRITE_KEY",
    "destinations",
    "event",
    "properties",
    "quiet_logs",
    "user_id",
]

WRITE_KEY = "wk_bench_0123456789abcdef"
API_KEY = "phc_bench_0123456789abcdef"
EVENT_NAME = "Order Completed"
_USERS = 1000


def user_id(i: int) -> str:
    """The user of event ``i`` (a thousand distinct users, as in real traffic)."""
    return f"user_{i % _USERS}"


def properties(i: int) -> dict[str, Any]:
    """A fresh properties dict for event ``i`` (SDKs add keys to the dict they are given)."""
    return {"order_id": f"o-{i}", "total": 99.99, "currency": "USD", "items": 3}


def event(i: int) -> dict[str, Any]:
    """Event ``i`` as an app hands it to ``router.send()``: a plain dict, validated there."""
    return {
        "type": "track",
        "event": EVENT_NAME,
        "user_id": user_id(i),
        "properties": properties(i),
    }


def quiet_logs() -> None:
    """Warnings and errors only, for the router and both SDKs alike (no line per request)."""
    configure_logging(level="warning")
    for name in ("segment", "posthog", "urllib3", "backoff"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def destinations(count: int, segment_url: str, posthog_url: str) -> dict[str, dict[str, Any]]:
    """``count`` destinations, alternately Segment and PostHog, named ``segment``, ``posthog``,
    ``segment_2``, ``posthog_2``, ..."""
    tables: dict[str, dict[str, Any]] = {}
    for n in range(count):
        copy = "" if n < 2 else f"_{n // 2 + 1}"
        if n % 2 == 0:
            tables[f"segment{copy}"] = {
                "plugin": "segment",
                "write_key": WRITE_KEY,
                "host": segment_url,
            }
        else:
            tables[f"posthog{copy}"] = {
                "plugin": "posthog",
                "api_key": API_KEY,
                "host": posthog_url,
            }
    return tables

"""Backoff arithmetic for retries: exponential with full jitter, ``Retry-After`` honoured."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from router_core.settings import RetrySettings

__all__ = ["backoff_delay", "parse_retry_after"]


def backoff_delay(
    policy: RetrySettings,
    attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    A server's ``Retry-After`` wins (capped at ``retry_after_max``); otherwise full jitter:
    uniform in ``[0, min(backoff_max, backoff_base * 2**(attempt-1))]``.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.retry_after_max)
    ceiling = min(policy.backoff_max, policy.backoff_base * (2 ** (attempt - 1)))
    return (rng or random).uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)

"""Backoff arithmetic for retries: full jitter above a floor, ``Retry-After`` as a minimum.

Every input here may come from a hostile server (a ``Retry-After`` header) or a careless
plugin (``DeliveryError(retry_after=...)``), and the attempt count grows without limit through
a long outage: whatever comes in, the result is a finite number of seconds, never negative,
and nothing raises.
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from router_core.settings import RetrySettings

__all__ = ["RETRY_AFTER_LIMIT_S", "backoff_delay", "parse_retry_after", "retry_after_seconds"]

RETRY_AFTER_LIMIT_S = float(2**31)
"""The longest ``Retry-After`` taken as given; longer (or overflowing) values become this,
as RFC 9111 tells caches to do with delta-seconds. ``retry_after_max`` caps it much lower."""

# 2.0 ** 1023 is the largest power of two a float holds: past it ``2 ** n`` overflows (and
# ``backoff_max`` was reached dozens of doublings earlier anyway).
_MAX_EXPONENT = 1023

# Delta-seconds, leniently: a sign, a fraction or an exponent are accepted too. ASCII digits
# only (``float()`` would also take "nan", "infinity", "1_000" and non-ASCII digits).
_SECONDS = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def retry_after_seconds(value: object) -> float | None:
    """``value`` as a safe ``Retry-After`` in seconds, or ``None`` when it is not a number.

    NaN (and anything not an ``int`` or ``float``) gives ``None``; negative values give 0;
    values above ``RETRY_AFTER_LIMIT_S`` (infinity and integers too large for a float
    included) give ``RETRY_AFTER_LIMIT_S``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond a float's range
        return RETRY_AFTER_LIMIT_S if value > 0 else 0.0
    if math.isnan(seconds):
        return None
    if seconds <= 0:
        return 0.0
    return min(seconds, RETRY_AFTER_LIMIT_S)


def backoff_delay(
    policy: RetrySettings,
    attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Full jitter above a floor: uniform in ``[backoff_min, ceiling]`` with ``ceiling =
    min(backoff_max, backoff_base * 2**(attempt-1))`` (never below the floor, and the floor
    never above ``backoff_max``). A server's ``Retry-After`` is a minimum: the wait is at
    least ``min(retry_after, retry_after_max)``. Any ``attempt`` and any ``retry_after`` give a
    finite delay.
    """
    floor = min(policy.backoff_min, policy.backoff_max)
    exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
    # A float product: it may reach infinity (a large base), but it never raises.
    ceiling = max(floor, min(policy.backoff_max, policy.backoff_base * 2.0**exponent))
    delay = (rng or random).uniform(floor, ceiling)
    asked = retry_after_seconds(retry_after)
    if asked is not None:
        delay = max(delay, min(asked, policy.retry_after_max))
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` when absent or bad.

    The result is finite and never negative (see ``retry_after_seconds``): a date in the
    past, or negative seconds, give 0; "nan", "inf" and other garbage give ``None``.
    """
    if not value:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return retry_after_seconds(float(text))  # too many digits give inf, never an error
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return retry_after_seconds(seconds)

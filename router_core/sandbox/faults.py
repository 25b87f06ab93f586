"""Deterministic fault injection: status sequences, latency and dropped connections."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["FaultAction", "Faults"]

RETRY_AFTER_STATUSES = frozenset({429, 503})
_MIN_STATUS = 200  # 1xx answers would break the HTTP exchange
_MAX_STATUS = 599


@dataclass(frozen=True, slots=True)
class FaultAction:
    """What to do with one ingestion request (taken atomically from ``Faults``)."""

    latency: float = 0.0
    drop: bool = False
    status: int | None = None
    retry_after: str | None = None

    @property
    def description(self) -> str | None:
        """A short label for the request log, or ``None`` when nothing is injected."""
        if self.drop:
            return "dropped connection"
        if self.status is not None:
            return f"injected status {self.status}"
        return None


class Faults:
    """The faults an emulator injects into its ingestion requests.

    Each ingestion request takes, in one atomic step: the latency (slept before answering),
    then one pending dropped connection if any are left, else the next pending status if any
    are left, else nothing (normal handling). An injected answer never records events.
    ``retry_after`` is sent as a ``Retry-After`` header with injected 429 and 503 answers.
    Viewer requests (``GET /_events`` and the like) never consume faults.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: deque[int] = deque()
        self._latency = 0.0
        self._retry_after: str | None = None
        self._drops = 0

    def set(
        self,
        statuses: Iterable[int] = (),
        latency: float = 0.0,
        retry_after: float | str | None = None,
        drop_connections: int = 0,
    ) -> None:
        """Replace every fault setting at once (unspecified ones return to their defaults).

        ``statuses`` are consumed one per ingestion request, in order, then normal handling
        resumes. ``latency`` is in seconds. ``retry_after`` is seconds (a number) or any
        header value (e.g. an HTTP date). ``drop_connections`` is how many of the next
        ingestion requests get their connection closed with no answer.
        """
        codes = [_check_status(s) for s in statuses]
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise TypeError(f"latency must be a number of seconds, got {type(latency).__name__}")
        if not math.isfinite(latency) or latency < 0:
            raise ValueError(f"latency must be a finite number >= 0, got {latency!r}")
        if isinstance(drop_connections, bool) or not isinstance(drop_connections, int):
            raise TypeError("drop_connections must be an int")
        if drop_connections < 0:
            raise ValueError(f"drop_connections must be >= 0, got {drop_connections}")
        header = _retry_after_header(retry_after)
        with self._lock:
            self._statuses = deque(codes)
            self._latency = float(latency)
            self._retry_after = header
            self._drops = drop_connections

    def clear(self) -> None:
        """Remove every fault: requests are handled normally from now on."""
        self.set()

    def take(self) -> FaultAction:
        """Consume the fault for one ingestion request (thread-safe, in arrival order)."""
        with self._lock:
            latency = self._latency
            if self._drops:
                self._drops -= 1
                return FaultAction(latency=latency, drop=True)
            if self._statuses:
                status = self._statuses.popleft()
                retry_after = self._retry_after if status in RETRY_AFTER_STATUSES else None
                return FaultAction(latency=latency, status=status, retry_after=retry_after)
            return FaultAction(latency=latency)

    @property
    def pending_statuses(self) -> tuple[int, ...]:
        """Statuses still to be answered, next first."""
        with self._lock:
            return tuple(self._statuses)

    @property
    def pending_drops(self) -> int:
        """How many of the next ingestion requests will have their connection dropped."""
        with self._lock:
            return self._drops

    @property
    def latency(self) -> float:
        """Seconds slept before answering each ingestion request."""
        with self._lock:
            return self._latency

    @property
    def retry_after(self) -> str | None:
        """The ``Retry-After`` header value sent with injected 429/503 answers."""
        with self._lock:
            return self._retry_after

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"Faults(statuses={list(self._statuses)}, latency={self._latency}, "
                f"retry_after={self._retry_after!r}, drop_connections={self._drops})"
            )


def _check_status(status: object) -> int:
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"statuses must be ints, got {status!r}")
    if not _MIN_STATUS <= status <= _MAX_STATUS:
        raise ValueError(f"status {status} is not an HTTP status between 200 and 599")
    return status


def _retry_after_header(value: float | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text or any(c in text for c in "\r\n"):
            raise ValueError("retry_after must be a non-empty single-line header value")
        return text
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("retry_after must be a number of seconds, a string or None")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"retry_after must be a finite number >= 0, got {value!r}")
    # Whole seconds print without a decimal point: the form most clients parse.
    return str(int(value)) if float(value).is_integer() else str(value)

"""What is measured: event-router, and the two vendor SDKs used side by side.

Each contender splits a send in two: ``prepare(i)`` builds the arguments (not timed, the app
has them already) and ``send(item)`` makes the calls an app makes for one event (timed).
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import posthog
from segment.analytics import Client as SegmentClient  # type: ignore[import-untyped]

from bench import workload
from bench.workload import quiet_logs
from router_core import Router

__all__ = ["BenchError", "Contender", "RouterQueued", "SdkPair"]

_FLUSH_TIMEOUT_S = 600.0


class BenchError(RuntimeError):
    """A benchmark run went wrong (an event was lost, a flush timed out, ...)."""


class Contender(ABC):
    """One way for an app to send each event to its destinations."""

    label: str

    @abstractmethod
    def prepare(self, i: int) -> Any:
        """The arguments of event ``i``, built before the clock starts."""

    @abstractmethod
    def send(self, item: Any) -> bool:
        """Send one event; False when a client dropped it."""

    @abstractmethod
    def flush(self) -> None:
        """Block until every event sent so far is acknowledged by its destinations."""

    @abstractmethod
    def close(self) -> None:
        """Release everything (threads, connections, files)."""

    def helper_pids(self) -> list[int]:
        """Processes of its own that do part of the work (their CPU time is counted too)."""
        return []


class RouterQueued(Contender):
    """event-router in queued mode with the durable SQLite outbox (``synchronous=normal``)."""

    label = "event-router"

    def __init__(self, tables: dict[str, dict[str, Any]], **queue: Any) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="event-router-bench-")
        settings = {"path": str(Path(self._dir.name) / "outbox.db"), **queue}
        self.router = Router(tables, queue=settings)

    def prepare(self, i: int) -> Any:
        return workload.event(i)

    def send(self, item: Any) -> bool:
        self.router.send(item)
        return True

    def flush(self) -> None:
        result = self.router.flush(_FLUSH_TIMEOUT_S)
        if not result.complete or any(result.dead.values()):
            raise BenchError(f"event-router flush left events behind: {result.to_dict()}")

    def close(self) -> None:
        self.router.close(timeout=0)
        self._dir.cleanup()


class SdkPair(Contender):
    """segment-analytics-python's ``Client.track()`` plus posthog's ``Posthog.capture()``.

    Both with their defaults (a background thread each, batches of 100, an in-memory queue of
    10,000 events) unless ``max_queue_size`` or ``batch_size`` (Segment's ``upload_size``,
    PostHog's ``flush_at``: events per request) is given.
    """

    label = "Segment + PostHog SDKs"

    def __init__(
        self,
        segment_url: str,
        posthog_url: str,
        max_queue_size: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        segment: dict[str, Any] = {}
        ph: dict[str, Any] = {}
        if max_queue_size is not None:
            segment["max_queue_size"] = ph["max_queue_size"] = max_queue_size
        if batch_size is not None:
            segment["upload_size"] = ph["flush_at"] = batch_size
        self.segment = SegmentClient(workload.WRITE_KEY, host=segment_url, **segment)
        self.posthog = posthog.Posthog(workload.API_KEY, host=posthog_url, **ph)
        quiet_logs()  # the clients set their own log levels when built
        self.dropped = {"segment": 0, "posthog": 0}

    def prepare(self, i: int) -> Any:
        return workload.user_id(i), workload.properties(i), workload.properties(i)

    def send(self, item: Any) -> bool:
        uid, segment_properties, posthog_properties = item
        queued, _ = self.segment.track(
            user_id=uid, event=workload.EVENT_NAME, properties=segment_properties
        )
        captured = self.posthog.capture(
            workload.EVENT_NAME, distinct_id=uid, properties=posthog_properties
        )
        if not queued:
            self.dropped["segment"] += 1
        if captured is None:
            self.dropped["posthog"] += 1
        return bool(queued) and captured is not None

    def flush(self) -> None:
        self.segment.flush()
        self.posthog.flush(timeout_seconds=_FLUSH_TIMEOUT_S)

    def close(self) -> None:
        self.segment.shutdown()
        self.posthog.shutdown()

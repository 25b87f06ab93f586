"""Latency from ``send()`` to the vendor's receipt, at a steady 1,000 events/s.

event-router runs in queued mode with its default settings (the same ``RouterQueued`` as
elsewhere) and sends to both emulators at a steady rate: event ``i`` is due at
``start + i / rate`` on ``time.perf_counter``, so a late wake-up never pushes the events after
it back (no drift). ``time.time()`` is noted just before each ``send()``; each emulator child
notes when the request carrying the event arrived, on the same wall clock (one machine).
Latency is receipt minus send, for every event at each destination.

The target is p99 ≤ ``flush_interval`` + 100 ms: a worker holds a part-filled batch for at
most ``flush_interval`` before sending it.
"""

from __future__ import annotations

import time
from typing import Any

from bench import workload
from bench.contenders import BenchError, RouterQueued
from bench.servers import EmulatorProcess
from bench.workload import destinations
from router_core import Router

__all__ = ["RATE", "TARGET_MARGIN_S", "run"]

RATE = 1000.0
"""Events per second sent."""
TARGET_MARGIN_S = 0.1
"""What the p99 may take beyond ``flush_interval``."""


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``ordered`` (nearest rank), NaN when it is empty."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _figures(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": _quantile(ordered, 0.50) * 1000,
        "p99_ms": _quantile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] if ordered else float("nan")) * 1000,
    }


def _paced_sends(router: Router, events: int, rate: float) -> tuple[dict[str, float], float, float]:
    """Send ``events`` at ``rate``; return {message id: time.time() at send}, the seconds the
    sending took and how late (seconds) the latest send was against its schedule."""
    sent: dict[str, float] = {}
    latest = 0.0
    began = time.perf_counter()
    for i in range(events):
        event = workload.event(i)  # built before its turn, as an app has it
        due = began + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        latest = max(latest, time.perf_counter() - due)
        at = time.time()
        sent[router.send(event).message_id] = at
    return sent, time.perf_counter() - began, latest


def run(seconds: float, rate: float = RATE) -> dict[str, Any]:
    """Send for ``seconds`` at ``rate`` events/s; percentiles of send-to-receipt latency."""
    events = max(1, round(seconds * rate))
    with EmulatorProcess("segment") as segment, EmulatorProcess("posthog") as posthog:
        contender = RouterQueued(destinations(2, segment.url, posthog.url))
        try:
            settings = contender.router.queue_settings
            if settings is None:
                raise BenchError("the latency router is not in queued mode")
            flush_interval = settings.flush_interval
            sent, elapsed, latest = _paced_sends(contender.router, events, rate)
            contender.flush()
        finally:
            contender.close()
        all_latencies: list[float] = []
        by_destination: dict[str, dict[str, Any]] = {}
        for emulator in (segment, posthog):
            emulator.wait_for(events, timeout=30)
            receipts = emulator.receipts()
            latencies = [receipts[m] - at for m, at in sent.items() if m in receipts]
            all_latencies += latencies
            by_destination[emulator.vendor] = {
                "received": len(latencies),
                "missing": events - len(latencies),
                **_figures(latencies),
            }
    figures = _figures(all_latencies)
    target_ms = (flush_interval + TARGET_MARGIN_S) * 1000
    print(
        f"  sent {events:,} events in {elapsed:.1f} s ({events / elapsed:,.0f}/s, "
        f"latest send {latest * 1000:.1f} ms behind schedule); flush_interval "
        f"{flush_interval:g} s",
        flush=True,
    )
    for vendor, got in by_destination.items():
        print(
            f"  {vendor:8} p50 {got['p50_ms']:6.1f} ms   p99 {got['p99_ms']:6.1f} ms   "
            f"max {got['max_ms']:6.1f} ms   received {got['received']:,}, "
            f"missing {got['missing']:,}",
            flush=True,
        )
    return {
        "rate": rate,
        "events": events,
        "seconds": elapsed,
        "sent_per_s": events / elapsed,
        "latest_behind_ms": latest * 1000,
        "flush_interval_s": flush_interval,
        "target_p99_ms": target_ms,
        **figures,
        "missing": sum(d["missing"] for d in by_destination.values()),
        "by_destination": by_destination,
    }

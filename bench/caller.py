"""Caller cost: how long one ``send()`` keeps the app waiting, for one event to both vendors.

event-router runs in queued mode with the durable SQLite outbox: ``send()`` returns once the
event is committed to disk. The SDKs' ``track()`` and ``capture()`` return once the event is
in their in-memory queues. Every call is timed on its own; the figure is the median.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bench.contenders import Contender, RouterQueued, SdkPair
from bench.measure import SendTimes, median, time_sends
from bench.servers import EmulatorProcess
from bench.workload import destinations

__all__ = ["run"]


def _one(contender: Contender, events: int, warmup: int) -> SendTimes:
    try:
        times = time_sends(contender, events, warmup)
        contender.flush()
    finally:
        contender.close()
    return times


def run(events: int, repeat: int, warmup: int = 1000) -> dict[str, Any]:
    """``repeat`` runs of ``events`` timed sends per contender; medians of the run medians."""
    router_runs: list[SendTimes] = []
    sdk_runs: list[SendTimes] = []
    with EmulatorProcess("segment") as segment, EmulatorProcess("posthog") as posthog:
        for n in range(repeat):
            # Alternate who goes first, so neither always meets a warmer machine.
            order = ("router", "sdk") if n % 2 == 0 else ("sdk", "router")
            for who in order:
                segment.reset()
                posthog.reset()
                if who == "router":
                    contender: Contender = RouterQueued(destinations(2, segment.url, posthog.url))
                    router_runs.append(_one(contender, events, warmup))
                else:
                    contender = SdkPair(segment.url, posthog.url)
                    sdk_runs.append(_one(contender, events, warmup))
            r, s = router_runs[-1], sdk_runs[-1]
            print(
                f"  run {n + 1}/{repeat}: event-router {r.median_us:7.1f} µs   "
                f"SDKs {s.median_us:7.1f} µs   (SDK drops: {s.dropped:,})",
                flush=True,
            )
    router_us = median([r.median_us for r in router_runs])
    sdk_us = median([s.median_us for s in sdk_runs])
    return {
        "events": events,
        "router_us": router_us,
        "sdk_us": sdk_us,
        "ratio": router_us / sdk_us,
        "runs": {
            "router": [asdict(r) for r in router_runs],
            "sdk": [asdict(s) for s in sdk_runs],
        },
    }

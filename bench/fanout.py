"""Direct-mode fan-out: ``send()`` waits for every destination, each answering in 100 ms.

Destinations alternate between the Segment and the PostHog emulator, both set to answer every
request after ``latency`` seconds. Delivering to N such destinations one after the other would
take N x 100 ms; delivering concurrently takes one round trip.
"""

from __future__ import annotations

import time
from typing import Any

from bench import workload
from bench.contenders import BenchError
from bench.measure import median
from bench.servers import EmulatorProcess
from bench.workload import destinations
from router_core import Router

__all__ = ["run"]


def run(counts: list[int], sends: int, latency: float = 0.1, warmup: int = 2) -> dict[str, Any]:
    """Median milliseconds per ``send()`` for each number of destinations in ``counts``."""
    by_count: dict[int, float] = {}
    with EmulatorProcess("segment") as segment, EmulatorProcess("posthog") as posthog:
        segment.set_latency(latency)
        posthog.set_latency(latency)
        for count in counts:
            router = Router(destinations(count, segment.url, posthog.url))
            samples: list[float] = []
            try:
                for i in range(warmup + sends):
                    began = time.perf_counter()
                    report = router.send(workload.event(i))
                    elapsed = time.perf_counter() - began
                    if not report.ok:
                        raise BenchError(f"fan-out to {count} destinations failed: {report}")
                    if i >= warmup:
                        samples.append(elapsed * 1000)
            finally:
                router.close()
            by_count[count] = median(samples)
            print(f"  {count} destination(s): {by_count[count]:7.1f} ms", flush=True)
    return {"latency_ms": latency * 1000, "sends": sends, "by_destinations": by_count}

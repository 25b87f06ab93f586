"""End-to-end throughput: send every event, then wait until every destination has it.

The clock runs from the first send until the last event is acknowledged (event-router:
``flush()``; the SDKs: ``flush()`` of both clients), and the emulators are then checked to hold
every event. The SDKs get queues large enough to hold the whole run, so they drop nothing, and
run twice: with their default batches (100 events a request) and with batches of 500 (as
event-router's default ``batch_size``), so that the ratio does not rest on their batch size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from bench.contenders import BenchError, Contender, RouterQueued, SdkPair
from bench.measure import cpu_seconds, median
from bench.servers import EmulatorProcess
from bench.workers import RouterWithWorkers
from bench.workload import destinations

__all__ = ["SDK_BATCH", "run", "run_scaling"]

SDK_BATCH = 500
"""Events per request for the SDKs' second configuration (``upload_size``, ``flush_at``)."""


@dataclass(frozen=True, slots=True)
class Run:
    """One run: events per second, and the CPU time each event cost (µs) in the client's
    processes and in the two emulators' processes."""

    rate: float
    client_cpu_us: float
    emulators_cpu_us: float


def _rate(contender: Contender, events: int, emulators: tuple[EmulatorProcess, ...]) -> Run:
    """Events per second, and CPU per event, for one run of ``events``."""
    try:
        helpers = contender.helper_pids()
        cpu = [cpu_seconds(), *map(cpu_seconds, helpers), *(e.cpu_seconds() for e in emulators)]
        began = time.perf_counter()
        for i in range(events):
            contender.send(contender.prepare(i))
        contender.flush()
        elapsed = time.perf_counter() - began
        used = [
            now - before
            for now, before in zip(
                [cpu_seconds(), *map(cpu_seconds, helpers), *(e.cpu_seconds() for e in emulators)],
                cpu,
                strict=True,
            )
        ]
    finally:
        contender.close()
    split = len(used) - len(emulators)
    per_event = 1e6 / events
    return Run(events / elapsed, sum(used[:split]) * per_event, sum(used[split:]) * per_event)


def _check(emulator: EmulatorProcess, events: int, copies: int) -> int:
    """The emulator holds every event, ``copies`` times (one per destination it serves).

    Returns how many distinct events it holds."""
    if not emulator.wait_for(events * copies, timeout=30):
        raise BenchError(
            f"{emulator.vendor} received {emulator.count():,} events, expected {events * copies:,}"
        )
    unique = emulator.unique()
    if unique != events:
        raise BenchError(f"{emulator.vendor} received {unique:,} distinct events, not {events:,}")
    return unique


def _router_rate(
    segment: EmulatorProcess,
    posthog: EmulatorProcess,
    events: int,
    count: int = 2,
    **queue: Any,
) -> tuple[Run, dict[str, int]]:
    """Events/s of event-router, and the distinct events each emulator received."""
    segment.reset()
    posthog.reset()
    run = _rate(
        RouterQueued(destinations(count, segment.url, posthog.url), **queue),
        events,
        (segment, posthog),
    )
    received = {"segment": _check(segment, events, math.ceil(count / 2))}
    if count > 1:
        received["posthog"] = _check(posthog, events, count // 2)
    return run, received


def _sdk_rate(
    segment: EmulatorProcess, posthog: EmulatorProcess, events: int, batch_size: int | None
) -> tuple[Run, dict[str, int]]:
    segment.reset()
    posthog.reset()
    pair = SdkPair(segment.url, posthog.url, max_queue_size=events + 1000, batch_size=batch_size)
    run = _rate(pair, events, (segment, posthog))
    return run, {"segment": _check(segment, events, 1), "posthog": _check(posthog, events, 1)}


def _router_worker_rate(
    segment: EmulatorProcess, posthog: EmulatorProcess, events: int
) -> tuple[Run, dict[str, int]]:
    """The app enqueues, one ``event-router worker`` process delivers (past one core)."""
    segment.reset()
    posthog.reset()
    run = _rate(
        RouterWithWorkers(destinations(2, segment.url, posthog.url)), events, (segment, posthog)
    )
    return run, {"segment": _check(segment, events, 1), "posthog": _check(posthog, events, 1)}


_CONTENDERS = ("router", "sdk", "sdk_batch500", "router_worker")


def run(events: int, repeat: int) -> dict[str, Any]:
    """``repeat`` runs of ``events`` events to both vendors, per contender."""
    runs: dict[str, list[Run]] = {who: [] for who in _CONTENDERS}
    received: dict[str, list[dict[str, int]]] = {who: [] for who in _CONTENDERS}
    with EmulatorProcess("segment") as segment, EmulatorProcess("posthog") as posthog:
        for n in range(repeat):
            # Alternate the order, so no contender always meets a warmer machine.
            for who in _CONTENDERS if n % 2 == 0 else tuple(reversed(_CONTENDERS)):
                if who == "router":
                    one, got = _router_rate(segment, posthog, events)
                elif who == "router_worker":
                    one, got = _router_worker_rate(segment, posthog, events)
                else:
                    batch = SDK_BATCH if who == "sdk_batch500" else None
                    one, got = _sdk_rate(segment, posthog, events, batch)
                runs[who].append(one)
                received[who].append(got)
            print(
                f"  run {n + 1}/{repeat}: event-router {runs['router'][-1].rate:9,.0f} events/s   "
                f"SDKs {runs['sdk'][-1].rate:9,.0f} events/s   "
                f"SDKs, batches of {SDK_BATCH} {runs['sdk_batch500'][-1].rate:9,.0f} events/s   "
                f"event-router + 1 worker process {runs['router_worker'][-1].rate:9,.0f} events/s",
                flush=True,
            )
    rates = {who: [r.rate for r in runs[who]] for who in _CONTENDERS}
    router_rate, sdk_rate, sdk500_rate, worker_rate = (median(rates[w]) for w in _CONTENDERS)
    # Where the CPU goes: what one event costs the client's processes and the emulators'.
    cpu = {
        who: {
            "client_us": median([r.client_cpu_us for r in runs[who]]),
            "emulators_us": median([r.emulators_cpu_us for r in runs[who]]),
        }
        for who in _CONTENDERS
    }
    print("  CPU per event (µs, medians): " + "   ".join(
        f"{who} {c['client_us']:.1f} + emulators {c['emulators_us']:.1f}" for who, c in cpu.items()
    ), flush=True)  # fmt: skip
    return {
        "events": events,
        "router_eps": router_rate,
        "sdk_eps": sdk_rate,
        "ratio": router_rate / sdk_rate,
        "sdk_batch500_eps": sdk500_rate,
        "ratio_batch500": router_rate / sdk500_rate,
        "router_worker_eps": worker_rate,
        "ratio_worker": worker_rate / sdk_rate,
        "ratio_worker_batch500": worker_rate / sdk500_rate,
        "cpu_us_per_event": cpu,
        "runs": rates,
        "received": received,
    }


def run_scaling(
    events: int, batch_sizes: list[int], destination_counts: list[int], repeat: int
) -> dict[str, Any]:
    """Router throughput by batch size (2 destinations) and by number of destinations."""
    by_batch: dict[int, float] = {}
    by_destinations: dict[int, float] = {}
    with EmulatorProcess("segment") as segment, EmulatorProcess("posthog") as posthog:
        for size in batch_sizes:
            by_batch[size] = median(
                [
                    _router_rate(segment, posthog, events, batch_size=size)[0].rate
                    for _ in range(repeat)
                ]
            )
            print(f"  batch_size {size:>5}: {by_batch[size]:9,.0f} events/s", flush=True)
        for count in destination_counts:
            by_destinations[count] = median(
                [_router_rate(segment, posthog, events, count)[0].rate for _ in range(repeat)]
            )
            print(
                f"  {count} destination(s): {by_destinations[count]:9,.0f} events/s "
                f"= {by_destinations[count] * count:9,.0f} deliveries/s",
                flush=True,
            )
    return {
        "events": events,
        "by_batch_size": by_batch,
        "by_destinations": by_destinations,
    }

"""A backlog while the destinations are down: peak memory, what each client drops, the drain.

Each contender runs in a fresh process (``python -m bench.backlog router|segment|posthog
--events N``) so its peak resident memory (VmHWM) is its own. The destinations point at
loopback ports where nothing listens, so every delivery attempt is refused and every event sent
becomes backlog. The process prints one JSON line with what it measured.

event-router keeps the backlog in its SQLite outbox on disk; each SDK keeps it in an in-memory
queue with a maximum size, and drops what does not fit. Once every event is accepted, the
router's process starts both emulators on the very ports its destinations name (reserved when
it began), flushes until the whole backlog is delivered, and checks that both emulators hold
every event: the drain's seconds and rate, and the peak memory through it, are reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import workload
from bench.measure import peak_rss_mb, rss_mb
from bench.servers import EmulatorProcess, Vendor, down_url, free_port
from bench.workload import destinations, quiet_logs
from router_core import Router
from router_core.logs import configure_logging

__all__ = ["run"]

_CHILD_TIMEOUT_S = 1800.0


# The router's retry settings for this section. With the default backoff_max (300 s) a
# destination down for the whole accept would be paused for up to five minutes when its
# emulator comes up; capped at 1 s, the drain begins within a second of it listening. The
# first batch of each destination is retried about twice a second all through the outage, so
# the attempt budget is raised too (the default 100 would dead-letter it in a long accept).
_RETRY = {"backoff_max": 1.0, "max_attempts": 10_000}
_VENDORS: tuple[Vendor, ...] = ("segment", "posthog")


def _drain(router: Router, events: int, ports: dict[Vendor, int]) -> dict[str, Any]:
    """Start the emulators on ``ports``, flush the backlog, check that both hold all of it."""
    with (
        EmulatorProcess("segment", port=ports["segment"]) as segment,
        EmulatorProcess("posthog", port=ports["posthog"]) as posthog,
    ):
        began = time.perf_counter()  # both listen: the drain's clock starts
        result = router.flush(_CHILD_TIMEOUT_S)
        seconds = time.perf_counter() - began
        delivered: dict[str, int] = {}
        for emulator in (segment, posthog):
            emulator.wait_for(events, timeout=60)
            delivered[emulator.vendor] = emulator.unique()
    return {
        "complete": result.complete and not any(result.dead.values()),
        "flush": result.to_dict(),
        "delivered": delivered,
        "drain_seconds": seconds,
        "drain_per_s": events / seconds,
    }


def _router(events: int) -> dict[str, Any]:
    quiet_logs()
    configure_logging(level="error")  # a warning per refused attempt says nothing new here
    # Ports for emulators that start only once the backlog is in: until then nothing listens.
    ports = {vendor: free_port() for vendor in _VENDORS}
    urls = {vendor: f"http://127.0.0.1:{port}" for vendor, port in ports.items()}
    with tempfile.TemporaryDirectory(prefix="event-router-backlog-") as tmp:
        path = Path(tmp) / "outbox.db"
        router = Router(
            destinations(2, urls["segment"], urls["posthog"]),
            queue={"path": str(path), "retry": _RETRY},
        )
        start_mb = rss_mb()
        began = time.perf_counter()
        for i in range(events):
            router.send(workload.event(i))
        seconds = time.perf_counter() - began
        stats = router.outbox.stats(time.time()) if router.outbox is not None else None
        peak = peak_rss_mb()
        disk = sum(f.stat().st_size for f in Path(tmp).iterdir())
        drain = _drain(router, events, ports)
        drain_peak = peak_rss_mb()  # VmHWM: the accept's peak, or higher if the drain went so
        router.close(timeout=0)
    # Every destination must still hold every event: count the rows of the emptiest one.
    counts = stats.counts if stats is not None else {}
    kept = min((sum(states.values()) for states in counts.values()), default=0)
    return {
        "accepted": events,
        "kept": kept,
        "dropped": events - kept,
        "stored_events": stats.events if stats is not None else 0,
        "start_rss_mb": start_mb,
        "peak_rss_mb": peak,
        "drain_peak_rss_mb": drain_peak,
        "seconds": seconds,
        "disk_mb": disk / 1024 / 1024,
        **drain,
    }


def _sdk(vendor: str, events: int) -> dict[str, Any]:
    if vendor == "segment":
        # Each SDK child imports its own client only.
        from segment.analytics import Client  # type: ignore[import-untyped]  # noqa: PLC0415

        segment = Client(workload.WRITE_KEY, host=down_url())
        quiet_logs()
        start_mb = rss_mb()
        began = time.perf_counter()
        accepted = 0
        for i in range(events):
            queued, _ = segment.track(
                user_id=workload.user_id(i),
                event=workload.EVENT_NAME,
                properties=workload.properties(i),
            )
            accepted += bool(queued)
    else:
        import posthog  # noqa: PLC0415

        client = posthog.Posthog(workload.API_KEY, host=down_url())
        quiet_logs()
        start_mb = rss_mb()
        began = time.perf_counter()
        accepted = 0
        for i in range(events):
            captured = client.capture(
                workload.EVENT_NAME,
                distinct_id=workload.user_id(i),
                properties=workload.properties(i),
            )
            accepted += captured is not None
    return {
        "accepted": accepted,
        "kept": accepted,
        "dropped": events - accepted,
        "start_rss_mb": start_mb,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - began,
    }


def _spawn(who: str, events: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.backlog", who, "--events", str(events)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _collect(who: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=_CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"the {who} backlog process failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run(events: int) -> dict[str, Any]:
    """The router alone first, then both SDKs at once (one process each; there are 2 cores)."""
    results = {"router": _collect("router", _spawn("router", events))}
    children = {who: _spawn(who, events) for who in ("segment", "posthog")}
    for who, proc in children.items():
        results[who] = _collect(who, proc)
    for who, r in results.items():
        print(
            f"  {who:8} peak RSS {r['peak_rss_mb']:6.1f} MB (at start {r['start_rss_mb']:5.1f})"
            f"   kept {r['kept']:>9,}"
            f"   dropped {r['dropped']:>9,}   {r['seconds']:5.1f} s",
            flush=True,
        )
    r = results["router"]
    got = ", ".join(f"{vendor} {n:,}" for vendor, n in r["delivered"].items())
    print(
        f"  router   drained in {r['drain_seconds']:5.1f} s ({r['drain_per_s']:,.0f} events/s, "
        f"each to both) once the emulators listened: {got} distinct events; "
        f"peak RSS through the drain {r['drain_peak_rss_mb']:.1f} MB",
        flush=True,
    )
    return {"events": events, **results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one backlog run (used by python -m bench)")
    parser.add_argument("who", choices=["router", "segment", "posthog"])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    result = _router(args.events) if args.who == "router" else _sdk(args.who, args.events)
    print(json.dumps(result), flush=True)
    if args.who != "router":
        # The SDKs would retry the unreachable host for minutes at exit; the figures are in.
        os._exit(0)


if __name__ == "__main__":
    main()

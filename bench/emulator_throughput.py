"""How many events per second the sandbox emulators accept.

Posts batches of valid events to each emulator over keep-alive connections from several
client threads for a few seconds, then prints the accepted events per second.

    .venv/bin/python -m bench.emulator_throughput [--seconds 3] [--threads 2] [--batch 100]

Client and emulator share one process (and so the GIL), as in the end-to-end tests; the
clients send pre-built bodies through ``http.client`` so that they cost as little as possible.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from router_core.sandbox import Emulator, PostHogEmulator, SegmentEmulator

_BODIES_PER_THREAD = 20  # distinct bodies, so message ids vary as in real traffic
_WRITE_KEY = "bench-write-key-0123456789"
_API_KEY = "phc_bench0123456789abcdef"


def segment_body(size: int) -> bytes:
    """A /v1/batch body shaped like analytics-python's, with ``size`` track messages."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    batch = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": f"user_{i}",
            "properties": {"order_id": f"o-{i}", "total": 99.99, "currency": "USD"},
            "context": {"library": {"name": "event-router", "version": "0.1.0"}},
            "integrations": {},
            "timestamp": now,
            "messageId": str(uuid.uuid4()),
        }
        for i in range(size)
    ]
    return json.dumps({"batch": batch, "sentAt": now}).encode()


def posthog_body(size: int) -> bytes:
    """A /batch/ body shaped like posthog-python's, with ``size`` events."""
    now = datetime.now(UTC).isoformat()
    batch = [
        {
            "event": "Order Completed",
            "distinct_id": f"user_{i}",
            "uuid": str(uuid.uuid4()),
            "timestamp": now,
            "properties": {
                "order_id": f"o-{i}",
                "total": 99.99,
                "$lib": "event-router",
                "$lib_version": "0.1.0",
            },
        }
        for i in range(size)
    ]
    return json.dumps({"api_key": _API_KEY, "batch": batch, "sent_at": now}).encode()


@dataclass(frozen=True)
class Target:
    """One emulator to load and how to build its requests."""

    name: str
    factory: Callable[[], Emulator]
    path: str
    body: Callable[[int], bytes]
    headers: dict[str, str]


TARGETS = (
    Target(
        "segment",
        SegmentEmulator,
        "/v1/batch",
        segment_body,
        {"Authorization": "Basic " + base64.b64encode(f"{_WRITE_KEY}:".encode()).decode()},
    ),
    Target("posthog", PostHogEmulator, "/batch/", posthog_body, {}),
)


def _client(
    port: int, target: Target, bodies: list[bytes], deadline: float, errors: list[str]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json", **target.headers}
    try:
        i = 0
        while time.perf_counter() < deadline:
            conn.request("POST", target.path, bodies[i % len(bodies)], headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
                return
            i += 1
    except OSError as exc:
        errors.append(repr(exc))
    finally:
        conn.close()


def measure(target: Target, seconds: float, threads: int, batch: int) -> float:
    """Accepted events per second for one emulator under ``threads`` keep-alive clients."""
    bodies = [[target.body(batch) for _ in range(_BODIES_PER_THREAD)] for _ in range(threads)]
    errors: list[str] = []
    with target.factory() as emulator:
        start = time.perf_counter()
        deadline = start + seconds
        workers = [
            threading.Thread(target=_client, args=(emulator.port, target, mine, deadline, errors))
            for mine in bodies
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(seconds + 30)
        elapsed = time.perf_counter() - start
        accepted = len(emulator.events)
    if errors:
        raise SystemExit(f"{target.name}: client failed: {errors[0]}")
    return accepted / elapsed


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print events/s per emulator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="load time per emulator")
    parser.add_argument("--threads", type=int, default=2, help="client threads per emulator")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    args = parser.parse_args(argv)
    print(
        f"{args.threads} keep-alive client threads, batches of {args.batch}, "
        f"{args.seconds:g} s per emulator"
    )
    for target in TARGETS:
        rate = measure(target, args.seconds, args.threads, args.batch)
        print(f"{target.name:8} {rate:>10,.0f} events/s")


if __name__ == "__main__":
    main()

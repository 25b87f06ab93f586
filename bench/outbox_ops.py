"""The SQLite outbox's own costs, without the router around it (µs per event).

    .venv/bin/python -m bench.outbox_ops                # 20,000 events, 2 destinations
    .venv/bin/python -m bench.outbox_ops --events 50000 --batch 500

``enqueue``: one ``enqueue()`` per event with both size limits set (as ``send()`` does);
``claim+ack``: per destination, claim batches of ``--batch``, acknowledge each whole, release
(as the worker does), divided by the events (both destinations together);
``enqueue_many``: the same events stored 5,000 per call, then drained again.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from router_core.limits import BatchLimits
from router_core.outbox.sqlite import SQLiteOutbox
from router_core.outbox.store import AcceptedEvent

__all__ = ["main"]

LIMITS = BatchLimits(max_events=1000, max_request_bytes=50_000_000, max_event_bytes=32_000)
DESTINATIONS = ("segment", "posthog")


def _payload(i: int) -> str:
    return json.dumps(
        {"type": "track", "event": "Order Completed", "user_id": f"u{i}", "message_id": f"m{i}",
         "properties": {"total": 10.5, "currency": "EUR", "items": 3}}
    )  # fmt: skip


def _drain(outbox: SQLiteOutbox, batch: int) -> int:
    taken = 0
    for destination in DESTINATIONS:
        n = 0
        while True:
            now = time.time()
            token = f"t{destination}{n}"
            n += 1
            rows = outbox.claim(
                destination, limits=LIMITS, batch_size=batch, token=token, now=now,
                lease_until=now + 30, max_in_flight=4,
            )  # fmt: skip
            if not rows:
                break
            outbox.ack(destination, token, [r.event_id for r in rows])
            outbox.release(destination, token)
            taken += len(rows)
    return taken


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    n = args.events
    payloads = [(f"m{i}", _payload(i)) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        outbox = SQLiteOutbox(Path(tmp) / "a.db")
        start = time.perf_counter()
        for message_id, payload in payloads:
            outbox.enqueue(
                message_id, payload, DESTINATIONS, now=time.time(), max_events=10_000_000,
                max_bytes=10**12,
            )  # fmt: skip
        enqueue = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        taken = _drain(outbox, args.batch)
        drain = (time.perf_counter() - start) / n * 1e6
        assert taken == n * len(DESTINATIONS), taken
        left = outbox.stats(time.time())
        assert left.events == 0, left
        print(f"enqueue()            {enqueue:7.2f} µs/event")
        print(f"claim+ack ({args.batch}, x{len(DESTINATIONS)}) {drain:7.2f} µs/event")
        bulk = getattr(outbox, "enqueue_many", None)
        if bulk is not None:
            accepted = [AcceptedEvent(m, p, DESTINATIONS, time.time()) for m, p in payloads]
            start = time.perf_counter()
            for i in range(0, n, 5000):
                bulk(accepted[i : i + 5000])
            many = (time.perf_counter() - start) / n * 1e6
            print(f"enqueue_many (5000)  {many:7.2f} µs/event")
            start = time.perf_counter()
            taken = _drain(outbox, args.batch)
            drain = (time.perf_counter() - start) / n * 1e6
            assert taken == n * len(DESTINATIONS), taken
            print(f"claim+ack after many {drain:7.2f} µs/event")
        outbox.close()


if __name__ == "__main__":
    main()

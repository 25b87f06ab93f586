"""``claim(max_in_flight=N)``: no more than N live batches of a destination, in every backend."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from router_core.limits import BatchLimits
from router_core.outbox import MemoryOutbox, Outbox, SQLiteOutbox

LIMITS = BatchLimits(max_events=1000, max_request_bytes=5_000_000, max_event_bytes=32_000)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    outbox: Outbox
    if request.param == "memory":
        outbox = MemoryOutbox()
    elif request.param == "sqlite":
        outbox = SQLiteOutbox(tmp_path / "outbox.db")
    else:
        outbox = request.getfixturevalue("pg_outbox")
    for _ in range(10):
        message_id = uuid.uuid4().hex
        payload = json.dumps({"type": "track", "event": "E", "message_id": message_id})
        outbox.enqueue(message_id, payload, ["a"], now=time.time(), max_events=None, max_bytes=None)
    yield outbox
    outbox.close()


def claim(store: Outbox, token: str, lease: float = 30.0) -> int:
    now = time.time()
    rows = store.claim(
        "a", limits=LIMITS, batch_size=2, token=token, now=now, lease_until=now + lease,
        max_in_flight=2,
    )  # fmt: skip
    return len(rows)


def test_a_third_batch_waits_until_one_of_two_is_released(store: Outbox) -> None:
    assert claim(store, "t1") == 2
    assert claim(store, "t2") == 2
    assert claim(store, "t3") == 0  # two batches in flight: the cap
    store.ack("a", "t1", [])  # acknowledging nothing frees nothing
    assert claim(store, "t3") == 0
    store.release("a", "t1")
    assert claim(store, "t3") == 2


def test_an_expired_claim_no_longer_counts(store: Outbox) -> None:
    assert claim(store, "t1", lease=0.2) == 2
    assert claim(store, "t2", lease=0.2) == 2
    assert claim(store, "t3") == 0
    time.sleep(0.3)  # both leases ran out (a worker killed mid-batch)
    assert claim(store, "t3") == 2

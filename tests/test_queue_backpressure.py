"""Backpressure: a full outbox blocks (up to a timeout) or refuses; nothing is ever dropped."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from router_core import Delivery, Destination, Event, Router, RouterError, hookimpl
from router_core.outbox import OutboxFullError
from router_core.plugins import PluginRegistry

WAIT = 30.0


class Gated:
    """A batch plugin that holds every request until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.delivered: list[str] = []
        self.waiting = threading.Event()

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        return await self.send_batch(destination, [event])

    @hookimpl
    async def send_batch(self, destination: Destination[Any], events: Sequence[Event]) -> Delivery:
        self.waiting.set()
        for _ in range(int(WAIT / 0.005)):  # bounded: never outlives a test
            if self.gate.is_set():
                break
            await asyncio.sleep(0.005)
        self.delivered.extend(e.message_id for e in events)
        return Delivery(status_code=200)


@pytest.fixture
def plugin() -> Iterator[Gated]:
    gated = Gated()
    yield gated
    gated.gate.set()


def gated_router(tmp_path: Path, plugin: Gated, **queue: Any) -> Router:
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "gated")
    settings = {
        "path": str(tmp_path / "outbox.db"),
        "flush_interval": 0.01,
        "close_timeout": 5.0,
        **queue,
    }
    return Router({"dest": {"plugin": "gated", "timeout": WAIT}}, plugins=registry, queue=settings)


def send(router: Router, i: int) -> str:
    return router.send(Event.track("E", user_id=f"u{i}")).message_id


def test_refuse_raises_at_once_and_loses_nothing(tmp_path: Path, plugin: Gated) -> None:
    router = gated_router(tmp_path, plugin, max_events=5, when_full="refuse")
    try:
        accepted = [send(router, i) for i in range(5)]
        with pytest.raises(OutboxFullError) as caught:
            send(router, 99)
        assert isinstance(caught.value, RouterError)
        assert caught.value.limit == "max_events"
        assert caught.value.value == 5
        assert "max_events = 5" in str(caught.value)
        assert "refuse" in str(caught.value)
        plugin.gate.set()
        assert router.flush(timeout=WAIT).complete
    finally:
        plugin.gate.set()
        router.close()
    assert sorted(plugin.delivered) == sorted(accepted)


def test_block_gives_up_after_the_timeout_naming_the_limit(tmp_path: Path, plugin: Gated) -> None:
    router = gated_router(tmp_path, plugin, max_events=3, when_full="block", block_timeout=0.2)
    try:
        accepted = [send(router, i) for i in range(3)]
        with pytest.raises(OutboxFullError, match=r"max_events = 3.*waited 0\.2s") as caught:
            send(router, 99)
        assert caught.value.stored == 3
        plugin.gate.set()
        assert router.flush(timeout=WAIT).complete
    finally:
        plugin.gate.set()
        router.close()
    assert sorted(plugin.delivered) == sorted(accepted)


def test_block_waits_for_room_and_then_accepts(tmp_path: Path, plugin: Gated) -> None:
    router = gated_router(
        tmp_path, plugin, max_events=4, when_full="block", block_timeout=WAIT, batch_size=2
    )
    accepted: list[str] = []
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            accepted.extend(send(router, i) for i in range(12))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=producer)
    try:
        thread.start()
        assert plugin.waiting.wait(WAIT)
        # The outbox fills up while the destination holds the first batch...
        assert router.outbox is not None
        for _ in range(int(WAIT / 0.01)):
            if router.outbox.stats(0).events == 4:
                break
            thread.join(0.01)
        assert router.outbox.stats(0).events == 4
        assert thread.is_alive()  # ... and the producer is blocked, not dropping events
        plugin.gate.set()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert router.flush(timeout=WAIT).complete
    finally:
        plugin.gate.set()
        router.close()
    assert errors == []
    assert len(accepted) == 12
    assert sorted(plugin.delivered) == sorted(accepted)


def test_max_bytes_is_a_limit_too(tmp_path: Path, plugin: Gated) -> None:
    router = gated_router(tmp_path, plugin, max_bytes=2_000, when_full="refuse")
    try:
        accepted = []
        with pytest.raises(OutboxFullError) as caught:  # noqa: PT012 - fill, then overflow
            for i in range(100):
                accepted.append(send(router, i))
        assert caught.value.limit == "max_bytes"
        assert 0 < len(accepted) < 100
        with pytest.raises(OutboxFullError, match="more than the whole outbox"):
            router.send(Event.track("Huge", user_id="u", properties={"x": "y" * 5_000}))
        plugin.gate.set()
        assert router.flush(timeout=WAIT).complete
    finally:
        plugin.gate.set()
        router.close()
    assert sorted(plugin.delivered) == sorted(accepted)


def test_memory_backend_has_the_same_backpressure(plugin: Gated) -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "gated")
    queue = {"backend": "memory", "max_events": 2, "when_full": "refuse", "flush_interval": 0.01}
    router = Router({"dest": {"plugin": "gated", "timeout": WAIT}}, plugins=registry, queue=queue)
    try:
        accepted = [send(router, i) for i in range(2)]
        with pytest.raises(OutboxFullError, match=":memory: is full"):
            send(router, 3)
        plugin.gate.set()
        assert router.flush(timeout=WAIT).complete
    finally:
        plugin.gate.set()
        router.close()
    assert sorted(plugin.delivered) == sorted(accepted)


async def test_asend_blocking_for_room_does_not_block_the_event_loop(
    tmp_path: Path, plugin: Gated
) -> None:
    router = gated_router(tmp_path, plugin, max_events=1, when_full="block", block_timeout=WAIT)
    try:
        first = await router.asend(Event.track("E", user_id="u0"))
        second = asyncio.create_task(router.asend(Event.track("E", user_id="u1")))
        ticks = 0
        while not second.done() and ticks < 20:
            await asyncio.sleep(0.01)  # the loop keeps running while asend waits for room
            ticks += 1
        assert ticks == 20
        assert not second.done()
        plugin.gate.set()
        report = await asyncio.wait_for(second, WAIT)
        assert (await router.aflush(timeout=WAIT)).complete
    finally:
        plugin.gate.set()
        router.close()
    assert sorted(plugin.delivered) == sorted([first.message_id, report.message_id])

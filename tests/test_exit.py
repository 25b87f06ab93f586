"""Exit is bounded: ``[queue] exit_timeout`` holds even when a plugin blocks forever, and every
``close()`` returns, losing nothing the outbox accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from router_core import (
    Delivery,
    DeliveryError,
    Destination,
    Event,
    PluginRegistry,
    Router,
    RouterClosedError,
    hookimpl,
)
from router_core.outbox.sqlite import SQLiteOutbox

# The subprocess's own bound: a process held open by its plugin (60 s) would pass it.
SUBPROCESS_TIMEOUT = 20.0
WAIT = 20.0

# A router whose one destination's plugin blocks: a plain ``def`` sleeping 60 s, or an
# ``async def`` calling time.sleep (it blocks the router's loop itself). The script exits
# without close() once the plugin is blocked, and prints the accepted event's id.
BLOCKED_AT_EXIT = textwrap.dedent(
    """
    import asyncio, sys, threading, time
    from router_core import Delivery, Event, PluginRegistry, Router, hookimpl

    outbox, kind, mode = sys.argv[1:4]
    entered = threading.Event()

    class Sleepy:
        @hookimpl
        def send_event(self, destination, event):
            entered.set()
            time.sleep(60)
            return Delivery(200)

    class LoopBlocker:
        @hookimpl
        async def send_event(self, destination, event):
            entered.set()
            time.sleep(60)  # blocks the router's event loop, not a worker thread
            return Delivery(200)

    registry = PluginRegistry(entry_points=False)
    registry.register(Sleepy() if kind == "sync" else LoopBlocker(), "blocking")
    table = {"plugin": "blocking", "timeout": 30, "retry": {"max_attempts": 1}}
    if mode == "queued":
        queue = {"path": outbox, "flush_interval": 0.01, "exit_timeout": 1}
        router = Router({"slow": table}, plugins=registry, queue=queue)
        print(router.send(Event.track("E", user_id="u1")).message_id, flush=True)
    else:
        router = Router({"slow": table}, plugins=registry)
        sender = threading.Thread(
            target=router.send, args=(Event.track("E", user_id="u1"),), daemon=True
        )
        sender.start()
    if not entered.wait(10):
        sys.exit("the plugin was never called")
    # No close(): interpreter exit must not wait for the plugin.
    """
)


def run_blocked(tmp_path: Path, kind: str, mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_AT_EXIT, encoding="utf-8")
    env = {**os.environ, "EVENT_ROUTER_LOG_LEVEL": "error"}
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "outbox.db"), kind, mode],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,  # raises, failing the test, if the child hangs on
        env=env,
        check=False,
    )


class Recorder:
    """Delivers by remembering the message ids."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    @hookimpl
    def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.delivered.append(event.message_id)
        return Delivery(200)


def test_exit_timeout_bounds_exit_while_a_sync_plugin_sleeps(tmp_path: Path) -> None:
    done = run_blocked(tmp_path, "sync", "queued")
    assert done.returncode == 0, done.stderr
    [accepted] = done.stdout.split()
    # The attempt was cut off at exit: the event is still in the outbox, not claimed...
    outbox = SQLiteOutbox(tmp_path / "outbox.db")
    try:
        assert outbox.pending(["slow"]) == {"slow": 1}
        assert outbox.stats(time.time()).total("in_flight") == 0
    finally:
        outbox.close()
    # ... and the next process that opens it delivers it.
    recorder = Recorder()
    registry = PluginRegistry(entry_points=False)
    registry.register(recorder, "blocking")
    queue = {"path": str(tmp_path / "outbox.db"), "flush_interval": 0.01}
    with Router({"slow": {"plugin": "blocking"}}, plugins=registry, queue=queue) as router:
        result = router.flush(timeout=WAIT)
    assert result.complete, result
    assert recorder.delivered == [accepted]


def test_exit_is_bounded_while_an_async_plugin_blocks_the_loop(tmp_path: Path) -> None:
    done = run_blocked(tmp_path, "async", "queued")
    assert done.returncode == 0, done.stderr
    [accepted] = done.stdout.split()
    # The stuck worker could not release its claim: the event waits in the outbox for the
    # lease to run out, as after a crash.
    outbox = SQLiteOutbox(tmp_path / "outbox.db")
    try:
        assert outbox.pending(["slow"]) == {"slow": 1}
        assert json.loads(outbox_payload(tmp_path / "outbox.db"))["message_id"] == accepted
    finally:
        outbox.close()


def outbox_payload(path: Path) -> str:
    import sqlite3

    with sqlite3.connect(path) as db:
        [(payload,)] = db.execute("SELECT payload FROM events").fetchall()
    return str(payload)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_blocked_direct_send_does_not_hold_the_interpreter(tmp_path: Path, kind: str) -> None:
    done = run_blocked(tmp_path, kind, "direct")
    assert done.returncode == 0, done.stderr


class Stuck:
    """A plain ``def`` or an ``async def`` (blocking the loop) that waits until released."""

    def __init__(self, blocking_loop: bool) -> None:
        self.blocking_loop = blocking_loop
        self.entered = threading.Event()
        self.release = threading.Event()

    @hookimpl
    def send_event(self, destination: Destination[Any], event: Event) -> Any:
        if self.blocking_loop:
            return self._blocks_the_loop()
        self.entered.set()
        self.release.wait(60)
        return Delivery(200)

    async def _blocks_the_loop(self) -> Delivery:
        self.entered.set()
        self.release.wait(60)
        return Delivery(200)


@pytest.mark.parametrize("blocking_loop", [False, True], ids=["sync", "loop-blocking"])
@pytest.mark.parametrize("queued", [True, False], ids=["queued", "direct"])
def test_close_returns_while_a_plugin_blocks(
    tmp_path: Path, blocking_loop: bool, queued: bool
) -> None:
    plugin = Stuck(blocking_loop)
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "stuck")
    queue = {"path": str(tmp_path / "outbox.db"), "flush_interval": 0.01} if queued else None
    table = {"plugin": "stuck", "timeout": 30, "retry": {"max_attempts": 1}}
    before = set(threading.enumerate())
    router = Router({"stuck": table}, plugins=registry, queue=queue)
    raised: list[BaseException] = []

    def send() -> None:
        try:
            router.send(Event.track("E", user_id="u1"))
        except BaseException as exc:
            raised.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    try:
        sender.start()
        assert plugin.entered.wait(WAIT)
        loops = [t for t in threading.enumerate() if t.name == "event-router" and t not in before]
        closer = threading.Thread(target=router.close, kwargs={"timeout": 0.5}, daemon=True)
        closer.start()
        closer.join(WAIT)  # the plugin holds on for 60 s: only a bounded close() returns
        assert not closer.is_alive()
    finally:
        plugin.release.set()
    sender.join(WAIT)
    assert not sender.is_alive()
    # Once the plugin returns, a loop that close() had to leave behind winds down by itself.
    for loop in loops:
        loop.join(WAIT)
    assert len(loops) == 1
    assert not loops[0].is_alive()
    if queued or blocking_loop:
        # Accepted by the outbox; or the loop was stuck in the call until it returned.
        assert raised == []
    else:
        # The send in flight was cut off by close(), and says so.
        [error] = raised
        assert isinstance(error, RouterClosedError), repr(error)
    if queued:
        outbox = SQLiteOutbox(tmp_path / "outbox.db")
        try:
            assert outbox.pending(["stuck"]) == {"stuck": 1}  # nothing accepted is lost
        finally:
            outbox.close()


class Sync:
    """A plain ``def`` plugin noting the thread each call ran on."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    @hookimpl
    def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.threads.append(threading.current_thread())
        return Delivery(200)


def test_blocking_plugins_run_on_daemon_threads_that_close_ends() -> None:
    plugin = Sync()
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "sync")
    with Router({"sync": {"plugin": "sync"}}, plugins=registry) as router:
        for n in range(20):
            assert router.send(Event.track("E", user_id=f"u{n}")).ok
    assert len(plugin.threads) == 20
    assert all(thread.daemon for thread in plugin.threads)  # nothing for exit to join
    assert len(set(plugin.threads)) == 1  # one after another: the idle thread is reused
    assert not plugin.threads[0].is_alive()  # close() let it go


def test_a_plugin_exception_reaches_the_result_from_the_thread() -> None:
    class Raising:
        @hookimpl
        def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
            raise DeliveryError("HTTP 503", status_code=503, retryable=True)

    registry = PluginRegistry(entry_points=False)
    registry.register(Raising(), "raising")
    table = {"plugin": "raising", "retry": {"max_attempts": 2, "backoff_max": 0.01}}
    with Router({"r": table}, plugins=registry) as router:
        result = router.send(Event.track("E", user_id="u1")).results["r"]
    assert not result.success
    assert result.attempts == 2
    assert result.status_code == 503

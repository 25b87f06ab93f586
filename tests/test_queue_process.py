"""Queued delivery across processes: SIGKILL mid-delivery, fork(), and exit without close()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router_core import Event, Router
from router_core.sandbox import SegmentEmulator
from router_core.sandbox.emulator import IncomingRequest
from router_core.sandbox.records import ReceivedEvent

WRITE_KEY = "wk_process_test_0123456789"
WAIT = 60.0


@pytest.fixture
def segment() -> Iterator[SegmentEmulator]:
    with SegmentEmulator() as em:
        yield em


def destinations(url: str, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
    return {
        "segment": {"plugin": "segment", "write_key": WRITE_KEY, "host": url, "timeout": timeout}
    }


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["EVENT_ROUTER_LOG_LEVEL"] = "error"
    return env


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, or "" when it exits or ``timeout`` passes."""
    assert proc.stdout is not None
    stdout = proc.stdout
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0].strip() if line else ""


SENDER = textwrap.dedent(
    """
    import json, os, sys, time
    from router_core import Event, Router

    url, key, outbox, ids_file = sys.argv[1:5]
    count = int(sys.argv[5])
    router = Router(
        {"segment": {"plugin": "segment", "write_key": key, "host": url, "timeout": 1.0}},
        queue={"path": outbox, "batch_size": 25, "flush_interval": 0.01, "lease": 2.0},
    )
    accepted = []
    for i in range(count):
        event = Event.track("Order Completed", user_id=f"user_{i}", properties={"i": i})
        accepted.append(router.send(event).message_id)
    with open(ids_file, "w") as f:
        json.dump(accepted, f)
        f.flush()
        os.fsync(f.fileno())
    print("ACCEPTED", flush=True)
    time.sleep(120)  # delivering in the background until killed
    """
)


class GatedSegment(SegmentEmulator):
    """Handles ``open_requests`` requests, then holds each next one until ``gate`` is set."""

    def __init__(self, open_requests: int) -> None:
        super().__init__()
        self.open_requests = open_requests
        self.gate = threading.Event()
        self.handled = 0
        self.held = threading.Event()

    def ingest(self, request: IncomingRequest) -> list[ReceivedEvent]:
        if self.handled >= self.open_requests:
            self.held.set()
            self.gate.wait(WAIT)
        self.handled += 1
        return super().ingest(request)


def test_sigkill_mid_delivery_then_restart_delivers_every_accepted_event(
    tmp_path: Path,
) -> None:
    with GatedSegment(open_requests=40) as segment:
        try:
            _kill_and_restart(tmp_path, segment)
        finally:
            segment.gate.set()


def _kill_and_restart(tmp_path: Path, segment: GatedSegment) -> None:
    count = 10_000
    outbox = tmp_path / "outbox.db"
    ids_file = tmp_path / "accepted.json"
    script = tmp_path / "sender.py"
    script.write_text(SENDER, encoding="utf-8")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            segment.url,
            WRITE_KEY,
            str(outbox),
            str(ids_file),
            str(count),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    try:
        assert read_line(proc, WAIT) == "ACCEPTED"
        # Delivery is under way: 40 batches went through and the next one is in flight.
        assert segment.held.wait(WAIT)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    accepted = json.loads(ids_file.read_text(encoding="utf-8"))
    assert len(accepted) == count
    before_restart = len(segment.message_ids())
    segment.gate.set()
    # Restart: a new router on the same outbox delivers the rest, including rows the killed
    # process had claimed (once their lease runs out).
    queue = {"path": str(outbox), "batch_size": 500, "flush_interval": 0.01, "lease": 2.0}
    with Router(destinations(segment.url, timeout=1.0), queue=queue) as router:
        result = router.flush(timeout=WAIT)
    assert result.complete, result
    assert result.dead == {"segment": 0}
    received = segment.message_ids()
    assert set(received) == set(accepted)
    assert 40 <= before_restart <= 40 * 25  # the killed process delivered some, not all


def test_fork_child_and_parent_each_deliver_their_own_events_once(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    queue = {"path": str(tmp_path / "outbox.db"), "batch_size": 10, "flush_interval": 0.01}
    child_ids_file = tmp_path / "child.json"
    router = Router(destinations(segment.url), queue=queue)
    try:
        before = [
            router.send(Event.track("Before Fork", user_id=f"u{i}")).message_id for i in range(20)
        ]
        pid = os.fork()
        if pid == 0:  # the child: its own worker, its own connection
            code = 3
            try:
                ids = [
                    router.send(Event.track("In Child", user_id=f"c{i}")).message_id
                    for i in range(100)
                ]
                flushed = router.flush(timeout=30)
                child_ids_file.write_text(json.dumps(ids), encoding="utf-8")
                router.close()
                code = 0 if flushed.complete else 1
            finally:
                os._exit(code)
        parent_ids = [
            router.send(Event.track("In Parent", user_id=f"p{i}")).message_id for i in range(100)
        ]
        assert router.flush(timeout=WAIT).complete
        deadline = time.monotonic() + WAIT
        status = None
        while status is None and time.monotonic() < deadline:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
            else:
                time.sleep(0.02)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish")
        assert os.waitstatus_to_exitcode(status) == 0
        assert router.flush(timeout=WAIT).complete
    finally:
        router.close()
    child_ids = json.loads(child_ids_file.read_text(encoding="utf-8"))
    counts = Counter(segment.message_ids())
    # Each event was sent by exactly one of the two processes, exactly once.
    assert set(counts) == set(before) | set(parent_ids) | set(child_ids)
    assert set(counts.values()) == {1}


EXITER = textwrap.dedent(
    """
    import sys
    from router_core import Event, Router

    url, key, outbox = sys.argv[1:4]
    router = Router(
        {"segment": {"plugin": "segment", "write_key": key, "host": url}},
        # Nothing would go out before exit on its own: a big batch, a long interval.
        queue={"path": outbox, "batch_size": 1000, "flush_interval": 60, "exit_timeout": 20},
    )
    for i in range(50):
        print(router.send(Event.track("E", user_id=f"u{i}")).message_id)
    # No close(): the bounded flush at interpreter exit delivers them.
    """
)


def test_interpreter_exit_flushes_a_router_never_closed(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    script = tmp_path / "exiter.py"
    script.write_text(EXITER, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), segment.url, WRITE_KEY, str(tmp_path / "outbox.db")],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=child_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    accepted = done.stdout.split()
    assert len(accepted) == 50
    assert sorted(segment.message_ids()) == sorted(accepted)


BLOCKING_EXITER = textwrap.dedent(
    """
    import sys
    from router_core import Delivery, Event, Router, hookimpl
    from router_core.plugins import PluginRegistry

    out_path, outbox = sys.argv[1], sys.argv[2]


    class Blocking:
        # A plain-function plugin: it runs in a thread, even during interpreter exit,
        # when concurrent.futures takes no more work.
        @hookimpl
        def send_event(self, destination, event):
            return self.send_batch(destination, [event])

        @hookimpl
        def send_batch(self, destination, events):
            with open(out_path, "a") as f:
                f.writelines(e.message_id + "\\n" for e in events)
            return Delivery(status_code=200)


    registry = PluginRegistry(entry_points=False)
    registry.register(Blocking(), "blocking")
    router = Router(
        {"file": {"plugin": "blocking"}},
        plugins=registry,
        queue={"path": outbox, "batch_size": 1000, "flush_interval": 60, "exit_timeout": 20},
    )
    for i in range(20):
        print(router.send(Event.track("E", user_id=f"u{i}")).message_id)
    """
)


def test_exit_flush_reaches_blocking_plugins(tmp_path: Path) -> None:
    script = tmp_path / "blocking_exiter.py"
    script.write_text(BLOCKING_EXITER, encoding="utf-8")
    delivered = tmp_path / "delivered.txt"
    done = subprocess.run(
        [sys.executable, str(script), str(delivered), str(tmp_path / "outbox.db")],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=child_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    accepted = done.stdout.split()
    assert len(accepted) == 20
    assert sorted(delivered.read_text(encoding="utf-8").split()) == sorted(accepted)

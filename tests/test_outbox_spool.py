"""The spool in front of the SQLite outbox: one append per send(), moved in bulk, recovered
from processes that died (router_core.outbox.spool)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from router_core import Event, Router
from router_core.outbox import spool as spool_module
from router_core.outbox.spool import SpooledOutbox, spool_directory
from router_core.outbox.sqlite import SQLiteOutbox
from router_core.sandbox import SegmentEmulator
from tests.test_queue_process import WAIT, WRITE_KEY, child_env, destinations, read_line


@pytest.fixture
def segment() -> Iterator[SegmentEmulator]:
    with SegmentEmulator() as em:
        yield em


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, and close its pipe."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def spooled(path: Path, move_interval: float | None = None) -> SpooledOutbox:
    return SpooledOutbox(SQLiteOutbox(path), spool_directory(path), move_interval=move_interval)


def put(outbox: SpooledOutbox, n: int, destinations: tuple[str, ...] = ("a", "b")) -> str:
    event = Event.track("E", user_id=f"u{n}", properties={"n": n})
    accepted = outbox.enqueue(
        event.message_id,
        event.model_dump_json(),
        destinations,
        now=time.time(),
        max_events=None,
        max_bytes=None,
    )
    assert accepted is None
    return event.message_id


def spool_files(path: Path) -> list[Path]:
    return sorted(spool_directory(path).glob("*.spool"))


def test_an_event_is_one_line_in_a_spool_file_until_it_is_moved(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = spooled(path, move_interval=3600)  # the mover waits: nothing moves by itself
    try:
        put(outbox, 1)
        put(outbox, 2)
        (file,) = spool_files(path)
        assert file.read_bytes().count(b"\n") == 2
        assert outbox.inner.stats(time.time()).events == 0  # not in SQLite yet
        assert outbox.spooled == 2
        # A read moves the spool first: whoever reads sees every accepted event.
        assert outbox.pending(["a", "b"]) == {"a": 2, "b": 2}
        assert outbox.inner.stats(time.time()).events == 2
        assert outbox.spooled == 0
        assert spool_files(path) == []  # the file went with the move
    finally:
        outbox.close()


def test_the_mover_moves_by_itself_within_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = spooled(path)
    try:
        put(outbox, 1)
        deadline = time.monotonic() + WAIT
        while outbox.inner.stats(time.time()).events == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert outbox.inner.stats(time.time()).events == 1
        assert spool_files(path) == []
    finally:
        outbox.close()


def test_close_moves_what_is_spooled(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = spooled(path, move_interval=3600)
    put(outbox, 1)
    outbox.close()
    reopened = SQLiteOutbox(path)
    try:
        assert reopened.pending(["a", "b"]) == {"a": 1, "b": 1}
        assert spool_files(path) == []
    finally:
        reopened.close()


def test_limits_count_spooled_events_and_refuse_as_the_outbox_does(tmp_path: Path) -> None:
    outbox = spooled(tmp_path / "outbox.db", move_interval=3600)
    try:
        for n in range(3):
            assert outbox.enqueue(
                f"m{n}", f'{{"n":{n}}}', ("a",), now=time.time(), max_events=3, max_bytes=None
            ) is None  # fmt: skip
        full = outbox.enqueue("m3", "{}", ("a",), now=time.time(), max_events=3, max_bytes=None)
        assert full == ("max_events", 3, 3)
        assert outbox.pending(["a"]) == {"a": 3}
    finally:
        outbox.close()


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from router_core import Event, Router
    from router_core.outbox import spool

    spool.MOVE_INTERVAL_S = 3600.0  # nothing is moved before the kill
    url, key, outbox, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    router = Router(
        {"segment": {"plugin": "segment", "write_key": key, "host": url}},
        queue={"path": outbox, "deliver": False},
    )
    ids = [router.send(Event.track("Spooled", user_id=f"u{i}")).message_id for i in range(count)]
    print(json.dumps(ids), flush=True)
    time.sleep(120)
    """
)


def test_a_killed_process_leaves_its_spool_to_the_next_router(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    path = tmp_path / "outbox.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script), segment.url, WRITE_KEY, str(path), "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    try:
        line = read_line(proc, WAIT)
        assert line.startswith("["), line
        accepted = set(json.loads(line))
        assert len(accepted) == 200
        (file,) = spool_files(path)
        # The child is alive and holds its file's lock: nobody else takes its events.
        other = spooled(path, move_interval=3600)
        try:
            assert other.recover() == 0
            assert other.pending(["segment"]) == {"segment": 0}
        finally:
            other.close()
        assert file.exists()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        reap(proc)
    with structlog.testing.capture_logs() as logs:
        router = Router(destinations(segment.url), queue={"path": str(path)})
    with router:
        assert router.flush(timeout=WAIT).complete
    assert set(segment.message_ids()) == accepted
    assert len(segment.message_ids()) == 200  # once each
    assert spool_files(path) == []
    recovered = [e for e in logs if e["event"] == "outbox_spool_recovered"]
    assert [(e["events"], e["damaged_lines"]) for e in recovered] == [(200, 0)]


def test_damaged_and_unfinished_lines_of_a_dead_spool_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    writer = spooled(path, move_interval=3600)
    kept = [put(writer, n) for n in range(3)]
    (file,) = spool_files(path)
    lines = file.read_bytes().split(b"\n")[:-1]
    copy = spool_directory(path) / "99999-dead-00000001.spool"
    # Line 2 damaged in place (its checksum no longer matches), and a last line cut short:
    # a write the kernel never finished was never accepted either.
    damaged = lines[1].replace(b'"E"', b'"X"')
    copy.write_bytes(lines[0] + b"\n" + damaged + b"\n" + lines[2] + b"\n" + lines[2][:40])
    writer.pending(["a"])  # the writer's own events move; its file goes
    writer.close()
    SQLiteOutbox(path).purge(dead_only=False, destination=None)
    with structlog.testing.capture_logs() as logs:
        reader = spooled(path, move_interval=3600)
    try:
        assert reader.pending(["a", "b"]) == {"a": 2, "b": 2}
        stored = {event.message_id for event in reader.export(0, 10)}
        assert stored == {kept[0], kept[2]}
    finally:
        reader.close()
    assert not copy.exists()
    (entry,) = [e for e in logs if e["event"] == "outbox_spool_recovered"]
    assert (entry["events"], entry["damaged_lines"]) == (2, 1)


def test_a_forked_child_spools_into_files_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "MOVE_INTERVAL_S", 3600.0)  # only reads move
    path = tmp_path / "outbox.db"
    settings = {"path": str(path), "deliver": False}
    router = Router(destinations("http://127.0.0.1:9"), queue=settings)
    try:
        parent_id = router.send(Event.track("Parent", user_id="p")).message_id
        (parent_file,) = spool_files(path)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                router.send(Event.track("Child", user_id="c"))
                assert router.outbox is not None
                router.outbox.pending(["segment"])  # moves the child's spool, not the parent's
                code = 0 if parent_file.exists() else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert router.outbox is not None
        assert router.outbox.pending(["segment"]) == {"segment": 2}  # the child's, and ours
        assert parent_id in {e.message_id for e in router.outbox.export(0, 10)}
        assert spool_files(path) == []
    finally:
        router.close(timeout=0)


def test_spool_false_writes_straight_to_sqlite(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"path": str(tmp_path / "outbox.db"), "spool": False}
    router = Router(destinations("http://127.0.0.1:9"), queue=settings)
    try:
        assert isinstance(router.outbox, SQLiteOutbox)
        router.send(Event.track("E", user_id="u1"))
        assert not spool_directory(tmp_path / "outbox.db").exists()
    finally:
        router.close(timeout=0)


def test_a_file_left_half_made_by_a_dead_process_is_cleared_away(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    spool_directory(path).mkdir()
    # A process killed between creating its next spool file and locking it leaves this.
    abandoned = spool_directory(path) / "99999-dead-00000001.spool.new"
    abandoned.write_bytes(b"")
    outbox = spooled(path, move_interval=3600)
    try:
        assert not abandoned.exists()
        put(outbox, 1)  # a live process's file being made is never taken for a dead one's
        assert outbox.recover() == 0
        assert outbox.pending(["a"]) == {"a": 1}
    finally:
        outbox.close()

"""A destination (or a proxy) must not be able to hurt the app: endless and inflating bodies,
hostile ``Retry-After`` values, outages long enough to overflow the backoff, and a wall clock
that steps back while events wait for a retry."""

from __future__ import annotations

import gzip
import socket
import socketserver
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from router_core import (
    MAX_BODY_EXTENSION,
    RESPONSE_BODY_LIMIT,
    Delivery,
    DeliveryError,
    Destination,
    DestinationSettings,
    Event,
    PluginRegistry,
    Router,
    body_truncated,
    hookimpl,
    raise_for_status,
)
from router_core.limits import BatchLimits
from router_core.outbox import worker
from router_core.outbox.sqlite import SQLiteOutbox

WAIT = 20.0  # generous bound on every flush; the tests finish far sooner
CHUNK = 64 * 1024
SERVER_SEND_LIMIT = 256 * 1024**2  # the server gives up here: a client that never stops
LIMITS = BatchLimits(max_events=100, max_request_bytes=1_000_000, max_event_bytes=100_000)


# -- a hostile HTTP server on loopback ------------------------------------------------------


@dataclass
class Hostile:
    """What the server answers: ``mode`` is "endless" (a chunked body that never ends),
    "fixed" (``body`` with ``Content-Length``) or "fail-then-ok" (``status`` with
    ``headers`` ``failures`` times, then 200)."""

    url: str = ""
    mode: str = "fixed"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    failures: int = 0
    sent: list[int] = field(default_factory=list)  # body bytes written, per endless answer
    cut_off: list[bool] = field(default_factory=list)  # did the client hang up on it?
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _read_request(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return False
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        more = conn.recv(65536)
        if not more:
            return False
        rest += more
    return True


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    state = Hostile()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn: socket.socket = self.request
            while _read_request(conn):
                with state.lock:
                    state.requests += 1
                    failing = state.mode == "fail-then-ok" and state.failures > 0
                    if failing:
                        state.failures -= 1
                if state.mode == "endless":
                    self._endless(conn)
                    return
                status = state.status if failing or state.mode == "fixed" else 200
                headers = dict(state.headers) if failing or state.mode == "fixed" else {}
                body = state.body if state.mode == "fixed" else b"{}"
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                conn.sendall(head.encode() + b"\r\n" + body)

        def _endless(self, conn: socket.socket) -> None:
            head = f"HTTP/1.1 {state.status} X\r\nTransfer-Encoding: chunked\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in state.headers.items())
            chunk = f"{CHUNK:x}\r\n".encode() + b"a" * CHUNK + b"\r\n"
            sent = 0
            cut_off = False
            try:
                conn.sendall(head.encode() + b"\r\n")
                while sent < SERVER_SEND_LIMIT:
                    conn.sendall(chunk)
                    sent += CHUNK
            except OSError:  # the client closed the connection: what we want
                cut_off = True
            with state.lock:
                state.sent.append(sent)
                state.cut_off.append(cut_off)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/in"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- a plugin that reports what it read with destination.client ----------------------------


class FetchSettings(DestinationSettings):
    url: str
    max_body: int | None = None
    stream: bool = False


class Fetch:
    """POSTs to ``url`` with the router's client, like any third-party plugin would."""

    @hookimpl
    def destination_settings(self) -> type[FetchSettings]:
        return FetchSettings

    @hookimpl
    async def send_event(self, destination: Destination[FetchSettings], event: Event) -> Delivery:
        settings = destination.settings
        extensions = {} if settings.max_body is None else {MAX_BODY_EXTENSION: settings.max_body}
        client = destination.client
        if settings.stream:
            async with client.stream(
                "POST", settings.url, content=b"{}", extensions=extensions
            ) as streamed:
                read = 0
                async for part in streamed.aiter_bytes():
                    read += len(part)
                return Delivery(streamed.status_code, {"bytes": read})
        response = await client.post(
            settings.url, content=b"{}", timeout=destination.timeout, extensions=extensions
        )
        raise_for_status(response)
        return Delivery(
            response.status_code,
            {
                "bytes": len(response.content),
                "truncated": body_truncated(response),
                "body": response.content[:32],
                "encoding": response.headers.get("content-encoding"),
            },
        )


def cut_off(hostile: Hostile, timeout: float = 10.0) -> list[bool]:
    """What the server saw of each response it streamed, once it has noticed the hang-up
    (its thread may still be writing when the client has already moved on)."""
    deadline = time.monotonic() + timeout
    while not hostile.cut_off and time.monotonic() < deadline:
        time.sleep(0.01)
    return hostile.cut_off


def fetch_router(url: str, **settings: Any) -> Router:
    registry = PluginRegistry(entry_points=False)
    registry.register(Fetch(), "fetch")
    table = {"plugin": "fetch", "url": url, "timeout": 10.0, "retry": {"max_attempts": 1}}
    return Router({"fetch": {**table, **settings}}, plugins=registry)


def fetch(router: Router) -> dict[str, Any]:
    result = router.send(Event.track("Probe", user_id="u1")).results["fetch"]
    assert result.success, result.error
    return dict(result.output)


# -- response bodies are read up to a cap ---------------------------------------------------


def test_an_endless_body_is_read_up_to_the_cap_and_the_connection_dropped(
    hostile: Hostile,
) -> None:
    hostile.mode = "endless"
    with fetch_router(hostile.url) as router:
        output = fetch(router)
        assert output == {
            "bytes": RESPONSE_BODY_LIMIT,
            "truncated": True,
            "body": b"a" * 32,
            "encoding": None,
        }
        # The next request opens a new connection: the cut one is not put back in the pool.
        hostile.mode = "fixed"
        hostile.body = b'{"ok": true}'
        assert fetch(router)["bytes"] == len(hostile.body)
    assert cut_off(hostile) == [True]
    # What the server got out before the client hung up: the cap plus what the kernel's
    # socket buffers hold (a few MB), nowhere near the 940 MB an uncapped client buffered.
    assert RESPONSE_BODY_LIMIT <= hostile.sent[0] < 64 * 1024**2


def test_an_endless_body_read_as_a_stream_ends_at_the_cap(hostile: Hostile) -> None:
    hostile.mode = "endless"
    with fetch_router(hostile.url, stream=True) as router:
        assert fetch(router) == {"bytes": RESPONSE_BODY_LIMIT}
    assert cut_off(hostile) == [True]


def test_an_endless_error_body_still_gives_the_status(hostile: Hostile) -> None:
    hostile.mode = "endless"
    hostile.status = 503
    with fetch_router(hostile.url) as router:
        result = router.send(Event.track("Probe", user_id="u1")).results["fetch"]
    assert not result.success
    assert result.status_code == 503
    assert cut_off(hostile) == [True]


def test_a_request_can_ask_for_its_own_cap(hostile: Hostile) -> None:
    hostile.body = b"x" * 1000
    with fetch_router(hostile.url, max_body=999) as router:
        assert fetch(router)["bytes"] == 999
    with fetch_router(hostile.url, max_body=1000) as router:
        assert fetch(router)["truncated"] is False


@pytest.mark.parametrize(
    ("size", "truncated"),
    [(0, False), (RESPONSE_BODY_LIMIT, False), (RESPONSE_BODY_LIMIT + 1, True)],
)
def test_the_cap_is_exact(hostile: Hostile, size: int, truncated: bool) -> None:
    hostile.body = b"y" * size
    with fetch_router(hostile.url) as router:
        output = fetch(router)
    assert output["bytes"] == min(size, RESPONSE_BODY_LIMIT)
    assert output["truncated"] is truncated


def test_a_gzip_bomb_inflates_no_further_than_the_cap(hostile: Hostile) -> None:
    hostile.body = gzip.compress(b"\0" * (256 * 1024**2), compresslevel=9)  # 256 MiB inflated
    hostile.headers = {"Content-Encoding": "gzip"}
    assert len(hostile.body) < 1024**2
    with fetch_router(hostile.url) as router:
        output = fetch(router)
    assert output["bytes"] == RESPONSE_BODY_LIMIT
    assert output["truncated"] is True


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
    ],
)
def test_compressed_bodies_within_the_cap_are_decoded(
    hostile: Hostile, coding: str, encode: Any
) -> None:
    plain = b'{"ok": true, "padding": "' + b"z" * 5000 + b'"}'
    hostile.body = encode(plain)
    hostile.headers = {"Content-Encoding": coding}
    with fetch_router(hostile.url) as router:
        output = fetch(router)
    assert output["bytes"] == len(plain)
    assert output["body"] == plain[:32]
    assert output["truncated"] is False
    assert output["encoding"] is None  # decoded: the header no longer describes the body


def test_a_body_that_is_not_the_gzip_it_claims_fails_the_attempt(hostile: Hostile) -> None:
    hostile.body = b"this is not gzip"
    hostile.headers = {"Content-Encoding": "gzip"}
    with fetch_router(hostile.url) as router:
        result = router.send(Event.track("Probe", user_id="u1")).results["fetch"]
    assert not result.success
    assert "DecodingError" in (result.error or "")


def test_other_encodings_are_passed_on_undecoded(hostile: Hostile) -> None:
    hostile.body = b"\x1b\x00\x00 brotli bytes, say"
    hostile.headers = {"Content-Encoding": "br"}
    with fetch_router(hostile.url) as router:
        output = fetch(router)
    assert output["body"] == hostile.body


def test_the_built_in_plugins_get_the_cap_too(hostile: Hostile) -> None:
    hostile.mode = "endless"
    router = Router(
        {
            "segment": {
                "plugin": "segment",
                "write_key": "wk_hostile_0123456789",
                "host": hostile.url.removesuffix("/in"),
                "retry": {"max_attempts": 1},
            }
        }
    )
    with router:
        result = router.send(Event.track("Probe", user_id="u1")).results["segment"]
    assert result.success  # a 200 is a 200, however long its body
    assert cut_off(hostile) == [True]


# -- Retry-After from a hostile server -------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-3", "1e308", "9" * 400, "soon", "1_0"])
def test_hostile_retry_after_is_recorded_and_retried(
    tmp_path: Path, hostile: Hostile, retry_after: str
) -> None:
    # "nan" used to reach the outbox as NULL: NOT NULL constraint failed, every round.
    hostile.mode = "fail-then-ok"
    hostile.status = 503
    hostile.headers = {"Retry-After": retry_after}
    hostile.failures = 1
    registry = PluginRegistry(entry_points=False)
    registry.register(Fetch(), "fetch")
    queue = {
        "path": str(tmp_path / "outbox.db"),
        "flush_interval": 0.02,
        "retry": {"backoff_base": 0.01, "backoff_max": 0.05, "retry_after_max": 0.3},
    }
    with (
        structlog.testing.capture_logs() as logs,
        Router(
            {"fetch": {"plugin": "fetch", "url": hostile.url}}, plugins=registry, queue=queue
        ) as router,
    ):
        router.send(Event.track("Probe", user_id="u1"))
        result = router.flush(timeout=WAIT)
    assert result.complete, result
    assert result.dead == {"fetch": 0}
    assert hostile.requests == 2
    assert not [e for e in logs if e["event"] == "outbox_worker_error"]
    [scheduled] = [e for e in logs if e["event"] == "outbox_retry_scheduled"]
    assert 0.0 < scheduled["delay_s"] <= 0.3


class Throttled:
    """A plugin that passes on whatever Retry-After it was given, once."""

    def __init__(self, retry_after: Any) -> None:
        self.retry_after = retry_after
        self.calls = 0

    @hookimpl
    def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.calls += 1
        if self.calls == 1:
            raise DeliveryError(
                "HTTP 429", status_code=429, retryable=True, retry_after=self.retry_after
            )
        return Delivery(200)


@pytest.mark.parametrize("retry_after", [float("nan"), float("inf"), -1.0, 10**400, "5"])
@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_a_plugins_bad_retry_after_is_made_safe(
    tmp_path: Path, retry_after: Any, backend: str
) -> None:
    plugin = Throttled(retry_after)
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "throttled")
    queue = {
        "backend": backend,
        "path": str(tmp_path / "outbox.db"),
        "flush_interval": 0.02,
        "retry": {"backoff_base": 0.01, "backoff_max": 0.05, "retry_after_max": 0.3},
    }
    with Router({"t": {"plugin": "throttled"}}, plugins=registry, queue=queue) as router:
        router.send(Event.track("Probe", user_id="u1"))
        result = router.flush(timeout=WAIT)
    assert result.complete, result
    assert result.dead == {"t": 0}
    assert plugin.calls == 2


# -- outages long enough to overflow 2**attempt ----------------------------------------------


class Down:
    """A destination that is always unavailable."""

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        raise DeliveryError("HTTP 503", status_code=503, retryable=True)


def test_a_row_past_1024_attempts_is_still_rescheduled_and_dead_lettered(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    seed = SQLiteOutbox(path)
    for n in range(2):
        seed.enqueue(
            f"m{n}",
            Event.track("E", user_id="u1").model_dump_json(),
            ["down"],
            now=time.time(),
            max_events=None,
            max_bytes=None,
        )
    seed.claim(
        "down", limits=LIMITS, batch_size=10, token="seed", now=time.time(), lease_until=time.time()
    )
    seed.release("down", "seed")  # a released batch leaves a row per event, as a retry would
    seed.close()
    with sqlite3.connect(path) as db:
        # One row on its last attempt, one with many left: 2 ** 1999 overflows a float.
        db.execute("UPDATE deliveries SET attempts = 1999 WHERE event_id = 1")
        db.execute("UPDATE deliveries SET attempts = 1500 WHERE event_id = 2")
    registry = PluginRegistry(entry_points=False)
    registry.register(Down(), "down")
    retry = {"max_attempts": 2000, "backoff_min": 30.0, "backoff_max": 60.0}
    queue = {"path": str(path), "retry": retry}
    with (
        structlog.testing.capture_logs() as logs,
        Router({"down": {"plugin": "down"}}, plugins=registry, queue=queue) as router,
    ):
        deadline = time.monotonic() + WAIT
        while router.flush(timeout=0.05).dead["down"] == 0 and time.monotonic() < deadline:
            pass
        result = router.flush(timeout=0)
        router.close(timeout=0)
    assert not [e for e in logs if e["event"] == "outbox_worker_error"]
    assert result.dead == {"down": 1}
    assert result.pending == {"down": 1}
    [scheduled] = [e for e in logs if e["event"] == "outbox_retry_scheduled"]
    assert scheduled["attempt"] == 2000
    assert 30.0 <= scheduled["delay_s"] <= 60.0


# -- the wall clock stepping back --------------------------------------------------------------


class SteppedClock:
    """The real wall clock, shifted by ``offset`` seconds (set it to step the clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def wall(self) -> float:
        return time.time() + self.offset


class FlakyOnce:
    """Fails the first attempt, asking for a retry in a second."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.calls += 1
        if self.calls == 1:
            raise DeliveryError("HTTP 503", status_code=503, retryable=True, retry_after=1.0)
        return Delivery(200)


def wait_for_the_retry(router: Router) -> None:
    """Until the outbox holds the failed attempt (the retry is scheduled)."""
    assert router.outbox is not None
    deadline = time.monotonic() + WAIT
    while router.outbox.stats(time.time()).total("retrying") == 0:
        assert time.monotonic() < deadline, "the first attempt never failed"
        time.sleep(0.005)


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_the_wall_clock_stepping_back_during_a_backoff_does_not_stall_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(worker, "system_clock", worker.Clock(wall=clock.wall))
    plugin = FlakyOnce()
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "flaky")
    queue = {"backend": backend, "path": str(tmp_path / "outbox.db"), "flush_interval": 0.02}
    with Router({"f": {"plugin": "flaky"}}, plugins=registry, queue=queue) as router:
        router.send(Event.track("Probe", user_id="u1"))
        wait_for_the_retry(router)
        clock.offset = -3600.0  # during the backoff, the wall clock goes back an hour
        # Stalled, the retry would be due in an hour.
        result = router.flush(timeout=WAIT)
    assert result.complete, result
    assert plugin.calls == 2


def test_a_backoff_scheduled_before_the_clock_stepped_back_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "outbox.db")
    plugin = FlakyOnce()
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "flaky")
    queue = {"path": path, "flush_interval": 0.02}
    with Router({"f": {"plugin": "flaky"}}, plugins=registry, queue=queue) as router:
        router.send(Event.track("Probe", user_id="u1"))
        wait_for_the_retry(router)
        router.close(timeout=0)
    # The next process starts after the wall clock went back an hour.
    clock = SteppedClock()
    clock.offset = -3600.0
    monkeypatch.setattr(worker, "system_clock", worker.Clock(wall=clock.wall))
    with Router({"f": {"plugin": "flaky"}}, plugins=registry, queue=queue) as router:
        result = router.flush(timeout=WAIT)
    assert result.complete, result
    assert plugin.calls == 2

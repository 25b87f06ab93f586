"""The PostHog SDK compliance harness's two sides, for the router and the PostHog plugin.

PostHog's posthog-sdk-test-harness drives an "SDK adapter" over HTTP (``/health``, ``/init``,
``/capture``, ``/flush``, ``/state``, ``/reset``) and checks what a mock capture server
received. This module holds both halves, on loopback:

- ``MockCaptureServer``: records every capture request (path, headers, body, the events in
  it, when it arrived) and answers from a queue of configured responses, 200 by default, as
  the harness's mock server does;
- ``RouterAdapter``: the adapter contract on top of a ``Router`` with one ``plugin =
  "posthog"`` destination pointed at the mock server, in queued mode (``[queue]`` with the
  memory or SQLite backend) or direct mode.

The harness's ``init`` parameters map onto the router's config: ``flush_at`` is ``[queue]
batch_size``, ``flush_interval_ms`` is ``[queue] flush_interval``, ``max_retries`` is one
less than ``max_attempts`` (of ``[queue.retry]`` and of the destination's ``retry``), and
``enable_compression`` is the plugin's ``gzip``.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from router_core import Event, Router, __version__

__all__ = [
    "CAPTURE_PATHS",
    "DEFAULT_FLUSH_INTERVAL_MS",
    "MockCaptureServer",
    "MockResponse",
    "Mode",
    "RecordedRequest",
    "RouterAdapter",
    "serve",
]

DEFAULT_FLUSH_INTERVAL_MS = 10_000
"""``[queue] flush_interval`` when ``init`` gives no ``flush_interval_ms``."""

Mode = Literal["queued-memory", "queued-sqlite", "direct"]

CAPTURE_PATHS = frozenset({"/batch", "/batch/", "/i/v0/e", "/i/v0/e/", "/e", "/e/", "/capture"})
"""The legacy capture paths the harness's mock server answers on."""


@dataclass(frozen=True)
class MockResponse:
    """One configured answer of the mock capture server."""

    status_code: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the mock capture server received, and how it answered."""

    monotonic_ms: float
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body_raw: bytes
    body: str | None  # decompressed (Content-Encoding: gzip) and decoded
    events: list[dict[str, Any]]
    response_status: int

    def json(self) -> Any:
        """The body as JSON (``None`` when it is not JSON)."""
        if self.body is None:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def _events_in(body: str | None) -> list[dict[str, Any]]:
    """The events of a capture body: ``{"batch": [...]}``, a list, or one event."""
    if not body:
        return []
    try:
        data = json.loads(body)
    except ValueError:
        return []
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        batch = data.get("batch")
        return batch if isinstance(batch, list) else [data]
    return []


class MockCaptureServer:
    """A PostHog capture endpoint on 127.0.0.1 that records requests and fails on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._responses: deque[MockResponse] = deque()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget recorded requests and configured responses."""
        with self._lock:
            self._requests.clear()
            self._responses.clear()

    def respond_with(self, *responses: MockResponse) -> None:
        """Answer the next requests with ``responses`` in order, then 200 again."""
        with self._lock:
            self._responses = deque(responses)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def _record(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> MockResponse:
        body: str | None
        try:
            decoded = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
            body = decoded.decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError):
            body = None
        with self._lock:
            answer = self._responses.popleft() if self._responses else MockResponse()
            self._requests.append(
                RecordedRequest(
                    monotonic_ms=time.monotonic() * 1000,
                    method=method,
                    path=path,
                    headers=headers,
                    body_raw=raw,
                    body=body,
                    events=_events_in(body),
                    response_status=answer.status_code,
                )
            )
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = self.path.split("?", 1)[0]
                if path not in CAPTURE_PATHS:
                    self._answer(MockResponse(404, body='{"error": "not found"}'))
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._answer(mock._record("POST", path, headers, raw))

            def _answer(self, answer: MockResponse) -> None:
                payload = (answer.body if answer.body is not None else '{"status": 1}').encode()
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class RouterAdapter:
    """The harness's SDK adapter contract, implemented with a ``Router``.

    ``retry`` overrides keys of the retry policy (both ``[queue.retry]`` and the destination's
    ``retry``) for every ``init``; tests use it to shorten the backoff ceiling, never the
    floor.
    """

    def __init__(self, mode: Mode, *, retry: Mapping[str, Any] | None = None) -> None:
        self.mode = mode
        self._retry = dict(retry or {})
        self._lock = threading.Lock()
        self._router: Router | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._flush_at = 1
        self._buffer: list[Event] = []
        self._captured = 0
        self._sent = 0
        self._last_error: str | None = None

    # -- the contract -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            "sdk_name": "event-router",
            "sdk_version": __version__,
            "adapter_version": "1.0.0",
            "capabilities": ["capture_v0", "encoding_gzip"],
        }

    def init(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self.reset()
        flush_at = int(params.get("flush_at") or 100)
        # Every harness case ends with an explicit flush; a long default interval keeps the
        # worker from sending a batch between two capture calls on a slow machine.
        flush_interval = float(params.get("flush_interval_ms") or DEFAULT_FLUSH_INTERVAL_MS) / 1000
        max_attempts = int(params.get("max_retries", 3)) + 1
        retry = {"max_attempts": max_attempts, **self._retry}
        destination = {
            "plugin": "posthog",
            "api_key": params["api_key"],
            "host": params["host"],
            "gzip": bool(params.get("enable_compression", False)),
            "retry": retry,
        }
        queue: dict[str, Any] | None = None
        if self.mode.startswith("queued"):
            queue = {
                "batch_size": flush_at,
                "flush_interval": flush_interval,
                "retry": retry,
                "close_timeout": 0,
            }
            if self.mode == "queued-sqlite":
                self._tmp = tempfile.TemporaryDirectory(prefix="posthog-adapter-")
                queue.update(backend="sqlite", path=str(Path(self._tmp.name) / "outbox.db"))
            else:
                queue["backend"] = "memory"
        with self._lock:
            self._flush_at = flush_at
            self._router = Router({"posthog": destination}, queue=queue)
        return {"success": True}

    def capture(self, params: Mapping[str, Any]) -> dict[str, Any]:
        router = self._require_router()
        fields: dict[str, Any] = {"properties": params.get("properties") or {}}
        if params.get("timestamp"):
            fields["timestamp"] = params["timestamp"]
        event = Event.track(params["event"], user_id=params["distinct_id"], **fields)
        with self._lock:
            self._captured += 1
        if self.mode == "direct" and self._batches_directly():
            with self._lock:
                self._buffer.append(event)
                full = len(self._buffer) >= self._flush_at
            if full:
                self._send_buffered(router)
        else:
            self._record(router.send(event).results.values(), 1)
        return {"success": True, "uuid": event.message_id}

    def flush(self) -> dict[str, Any]:
        router = self._require_router()
        if self.mode == "direct":
            self._send_buffered(router)
        else:
            left = router.flush(timeout=60)
            if not left.complete:
                self._set_error(f"events left after flushing: {dict(left.pending)}")
            elif any(left.dead.values()):
                self._set_error(f"events dead-lettered: {dict(left.dead)}")
        return {"success": True, "events_flushed": self._sent}

    def state(self) -> dict[str, Any]:
        with self._lock:
            pending = len(self._buffer)
            router = self._router
        if router is not None and router.outbox is not None:
            pending += sum(router.outbox.pending(router.destinations).values())
        with self._lock:
            return {
                "pending_events": pending,
                "total_events_captured": self._captured,
                "total_events_sent": self._sent,
                "total_retries": 0,
                "last_error": self._last_error,
                "requests_made": [],
            }

    def reset(self) -> dict[str, Any]:
        with self._lock:
            router, self._router = self._router, None
            tmp, self._tmp = self._tmp, None
            self._buffer = []
            self._captured = self._sent = 0
            self._last_error = None
        if router is not None:
            router.close(timeout=0)
        if tmp is not None:
            tmp.cleanup()
        return {"success": True}

    # -- helpers ------------------------------------------------------------------------------

    def _require_router(self) -> Router:
        with self._lock:
            if self._router is None:
                raise LookupError("SDK not initialized: call /init first")
            return self._router

    def _batches_directly(self) -> bool:
        """Direct mode batches only through ``Router.send_many`` (one request per chunk)."""
        return self._flush_at > 1

    def _send_buffered(self, router: Router) -> None:
        with self._lock:
            events, self._buffer = self._buffer, []
        if events:
            for report in router.send_many(events).reports:
                self._record(report.results.values(), 1)

    def _record(self, results: Any, count: int) -> None:
        for result in results:
            if result.success:
                with self._lock:
                    self._sent += count
            else:
                self._set_error(f"HTTP {result.status_code}: {result.error}")

    def _set_error(self, error: str) -> None:
        with self._lock:
            self._last_error = error


@contextmanager
def serve(adapter: RouterAdapter) -> Iterator[str]:
    """Serve ``adapter``'s contract on 127.0.0.1; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            routes = {"/health": adapter.health, "/state": adapter.state}
            self._dispatch(routes.get(self.path.split("?", 1)[0]), None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            params = json.loads(self.rfile.read(length) or b"{}") if length else {}
            path = self.path.split("?", 1)[0]
            if path in ("/flush", "/reset"):
                call = adapter.flush if path == "/flush" else adapter.reset
                self._dispatch(call, None)
            elif path in ("/init", "/capture"):
                self._dispatch(adapter.init if path == "/init" else adapter.capture, params)
            else:
                self._dispatch(None, None)

        def _dispatch(self, call: Any, params: Mapping[str, Any] | None) -> None:
            status, payload = 200, {}
            if call is None:
                status, payload = 404, {"error": f"no such endpoint: {self.path}"}
            else:
                try:
                    payload = call() if params is None else call(params)
                except Exception as exc:  # the harness reads the error from the answer
                    status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        adapter.reset()

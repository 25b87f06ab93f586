"""A destination (or a proxy in front of it) answering with a redirect is not followed.

Following a redirect would send the event, and the write key in its body and headers, to
whatever host the answer names. A 3xx is neither success nor transient: the delivery fails
at once, for that destination only, and the redirect target never hears from the router.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from router_core import Event, Router

WRITE_KEY = "seg-write-key-redirect-0001"


class _Server:
    """A loopback server that answers every POST with ``status`` and ``Location``."""

    def __init__(self, status: int, location: str | None = None) -> None:
        self.hits = 0
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                state.hits += 1
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def target() -> Iterator[_Server]:
    with _Server(200) as server:
        yield server


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("queued", [False, True], ids=["direct", "queued"])
def test_redirects_are_refused_and_never_followed(
    target: _Server, status: int, queued: bool, tmp_path: Any
) -> None:
    with _Server(status, location=f"{target.url}/v1/batch") as redirecting:
        destinations = {
            "segment": {
                "plugin": "segment",
                "write_key": WRITE_KEY,
                "host": redirecting.url,
                "retry": {"max_attempts": 3},
            }
        }
        queue = {"path": str(tmp_path / "outbox.db"), "flush_interval": 0.01} if queued else None
        with Router(destinations, queue=queue) as router:
            report = router.send(Event.track("Redirected", user_id="u1"))
            if queued:
                flushed = router.flush(timeout=10)
                assert flushed.dead == {"segment": 1}
            else:
                result = report.results["segment"]
                assert not result.success
                assert result.status_code == status
                assert result.attempts == 1  # a redirect is permanent: never retried
        assert redirecting.hits == 1
    assert target.hits == 0

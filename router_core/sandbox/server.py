"""A small threaded HTTP/1.1 server on loopback that starts and stops cleanly.

The emulators and the viewer run on it. Each connection gets a daemon thread (keep-alive
connections stay on their thread); ``stop`` closes the listening socket, shuts down every
open connection and joins every thread, so nothing outlives it.
"""

from __future__ import annotations

import contextlib
import io
import json
import selectors
import socket
import socketserver
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from router_core.logs import stdlib_logger
from router_core.sandbox.bodies import Rejected

__all__ = ["BackgroundServer", "HttpApp", "RequestHandler", "read_body"]

logger = stdlib_logger("event_router.sandbox")

_JOIN_TIMEOUT = 5.0
_IDLE_TIMEOUT = 120.0  # an idle keep-alive connection is closed after this many seconds
_MAX_CHUNK_LINE = 1024


class HttpApp(Protocol):
    """What a ``BackgroundServer`` serves: one method per HTTP verb it supports."""

    def handle_get(self, handler: RequestHandler) -> None:
        """Answer a GET request."""

    def handle_post(self, handler: RequestHandler) -> None:
        """Answer a POST request."""


class RequestHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler that delegates to the server's ``HttpApp``."""

    protocol_version = "HTTP/1.1"
    server_version = "event-router-sandbox"
    sys_version = ""
    disable_nagle_algorithm = (
        True  # header and body are separate writes: don't let Nagle stall them
    )
    timeout = _IDLE_TIMEOUT
    server: _Server

    def do_GET(self) -> None:
        self.server.app.handle_get(self)

    def do_POST(self) -> None:
        self.server.app.handle_post(self)

    def do_PUT(self) -> None:
        self._method_not_allowed()

    def do_PATCH(self) -> None:
        self._method_not_allowed()

    def do_DELETE(self) -> None:
        self._method_not_allowed()

    def _method_not_allowed(self) -> None:
        self.close_connection = True  # the body, if any, is left unread
        self.respond_json(405, {"error": f"method {self.command} not allowed"})

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send one complete answer (``Connection: close`` if the connection will close)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def respond_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send ``payload`` as a JSON answer."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.respond(status, body, "application/json", headers)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: per-request lines to stderr would cost throughput and clutter tests."""


def read_body(handler: RequestHandler, cap: int, too_large_status: int) -> bytes:
    """Read the request body (Content-Length or chunked), refusing more than ``cap`` bytes.

    On refusal the connection is marked to close, since part of the body is left unread.
    """
    try:
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(handler.rfile, cap, too_large_status)
        declared = handler.headers.get("Content-Length")
        if declared is None:
            return b""
        try:
            length = int(declared)
        except ValueError:
            raise Rejected(400, "bad_request", "Content-Length is not a number") from None
        if length < 0:
            raise Rejected(400, "bad_request", "Content-Length is negative")
        if length > cap:
            raise Rejected(
                too_large_status, "request_too_large", f"body is over the {cap:,}-byte limit"
            )
        data = handler.rfile.read(length)
        if len(data) < length:
            raise Rejected(400, "bad_request", "body is shorter than its Content-Length")
        return data
    except Rejected:
        handler.close_connection = True
        raise


def _read_chunked(rfile: io.BufferedIOBase, cap: int, too_large_status: int) -> bytes:
    out = bytearray()
    while True:
        line = rfile.readline(_MAX_CHUNK_LINE)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise Rejected(400, "bad_request", "malformed chunked body") from None
        if size == 0:
            while rfile.readline(_MAX_CHUNK_LINE) not in (b"\r\n", b"\n", b""):
                pass  # trailers carry nothing the emulators use
            return bytes(out)
        if len(out) + size > cap:
            raise Rejected(
                too_large_status, "request_too_large", f"body is over the {cap:,}-byte limit"
            )
        chunk = rfile.read(size)
        if len(chunk) < size:
            raise Rejected(400, "bad_request", "chunked body is truncated")
        out += chunk
        rfile.readline(_MAX_CHUNK_LINE)  # the CRLF closing the chunk


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so ``stop`` can close them all."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: HttpApp) -> None:
        self.app = app
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        # Every connection thread not yet seen finished: one that has just closed its socket
        # may still be running, and stop() must join it too.
        self._conn_threads: set[threading.Thread] = set()
        self._wake_reader, self._wake_writer = socket.socketpair()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, RequestHandler)  # closes everything itself if bind fails

    def serve(self) -> None:
        """Accept connections until ``wake`` is called (no polling: stop is immediate)."""
        self.socket.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                for key, _events in selector.select():
                    if key.fileobj is self._wake_reader:
                        return
                    try:
                        request, client_address = self.socket.accept()
                    except OSError:  # the client gave up before we accepted it
                        continue
                    self.process_request(request, client_address)

    def wake(self) -> None:
        """Make ``serve`` return."""
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN: a DNS lookup nobody here needs.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"sandbox-conn-{self.server_address[1]}",
            daemon=True,
        )
        with self._conn_lock:
            self._connections[request] = thread
            self._conn_threads = {t for t in self._conn_threads if t.is_alive()}
            self._conn_threads.add(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client going away mid-answer is routine here (dropped-connection faults, stop()).
        logger.debug("connection error from %s", client_address, exc_info=True)

    def close_connections(self) -> list[threading.Thread]:
        """Shut down every open connection; return the threads serving them, to join."""
        with self._conn_lock:
            sockets = list(self._connections)
            threads = list(self._conn_threads)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by its thread
                sock.shutdown(socket.SHUT_RDWR)
        return threads


class BackgroundServer:
    """Runs an ``HttpApp`` on ``host:port`` in a background thread.

    The socket is bound and listening when the constructor returns; ``start`` begins
    accepting. Port 0 picks a free port (see ``port``).
    """

    def __init__(self, app: HttpApp, host: str, port: int, name: str) -> None:
        self._server = _Server((host, port), app)
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when 0 was asked for)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start accepting connections in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve,
            name=f"sandbox-{self._name}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close the listening socket and every connection, join every thread."""
        if self._thread is not None:
            self._server.wake()
            self._thread.join(_JOIN_TIMEOUT)
        self._server.server_close()
        for thread in self._server.close_connections():
            thread.join(_JOIN_TIMEOUT)

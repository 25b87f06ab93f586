"""The part every vendor emulator shares: lifecycle, recording, faults, and the viewer."""

from __future__ import annotations

import secrets
import threading
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import Any, ClassVar
from urllib.parse import parse_qs

from router_core.sandbox.bodies import Rejected
from router_core.sandbox.faults import FaultAction, Faults
from router_core.sandbox.feed import Activity, Mark
from router_core.sandbox.records import ReceivedEvent, RequestRecord, Vendor, mask_key
from router_core.sandbox.server import BackgroundServer, RequestHandler, read_body
from router_core.sandbox.service import Service
from router_core.sandbox.viewer import CLEAR_PATH, ViewerApp

__all__ = ["Emulator", "IncomingRequest"]

_MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """One ingestion request as the vendor-specific validation sees it."""

    request_id: int
    path: str
    endpoint: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class _Where:
    """Which request an answer belongs to (for the request log)."""

    request_id: int
    path: str
    received_at: datetime


class Emulator(Service):
    """A local stand-in for one vendor's ingestion API, serving real HTTP on loopback.

    Use ``start``/``stop`` or a ``with`` block. Events from requests that pass the vendor's
    rules are recorded (all of a request's events, or none of them). Viewer endpoints:
    ``GET /_events`` (JSON), ``GET /_requests`` (JSON request log), ``GET /_feed`` (what changed
    since a cursor), ``POST /_clear``, and ``GET /`` (the live page).
    """

    vendor: ClassVar[Vendor]
    too_large_status: ClassVar[int]
    """Status answered for a request or event over the vendor's size limits."""
    max_body_bytes: ClassVar[int]
    """Raw body size read at most; larger bodies are refused without being read."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, keys: Iterable[str] | None = None
    ) -> None:
        if not isinstance(host, str) or not host:
            raise TypeError("host must be a non-empty string such as '127.0.0.1'")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT:
            raise ValueError(f"port must be an int from 0 to {_MAX_PORT}, got {port!r}")
        self._host = host
        self._port = port
        self._keys = _check_keys(keys)
        self.faults = Faults()
        """Fault injection for this emulator's ingestion requests."""
        self._cond = threading.Condition()
        self._events: list[ReceivedEvent] = []
        self._log: list[RequestRecord] = []
        self._requests = 0
        self._refused = 0
        self._generation = secrets.token_hex(4)  # new on every clear: tells a viewer to start over
        self._views = ViewerApp({self.vendor: self}, title=f"{self.vendor} emulator")
        self._stopping = threading.Event()
        self._server: BackgroundServer | None = None
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Bind, listen and start answering; returns once connections are accepted."""
        if self._stopped:
            raise RuntimeError(f"{type(self).__name__} was stopped; create a new one")
        if self._server is not None:
            return
        server = BackgroundServer(self, self._host, self._port, self.vendor)
        server.start()
        self._server = server

    def stop(self) -> None:
        """Stop answering, close every connection and free the port (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopped = True
        self._stopping.set()  # wakes requests sleeping on injected latency
        server.stop()

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked for)."""
        return self._require_server().port

    @property
    def url(self) -> str:
        """Base URL to give an SDK or a plugin as its host, e.g. ``http://127.0.0.1:50123``."""
        server = self._require_server()
        host = server.host
        return f"http://[{host}]:{server.port}" if ":" in host else f"http://{host}:{server.port}"

    def _require_server(self) -> BackgroundServer:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return self._server

    # -- what was received ---------------------------------------------------------------

    @property
    def events(self) -> list[ReceivedEvent]:
        """Events accepted so far, in arrival order (a snapshot copy)."""
        with self._cond:
            return list(self._events)

    def message_ids(self) -> list[str]:
        """Accepted message ids in arrival order, duplicates kept (retries show up twice)."""
        with self._cond:
            return [event.message_id for event in self._events]

    @property
    def requests(self) -> int:
        """How many ingestion (POST) requests arrived, whatever they were answered."""
        with self._cond:
            return self._requests

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every ingestion request and its answer, in arrival order (a snapshot copy)."""
        with self._cond:
            return list(self._log)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` events were accepted; False if ``timeout`` passed."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._events) >= count, timeout)

    def clear(self) -> int:
        """Forget events, the request log and counters (faults stay); return how many events."""
        with self._cond:
            forgotten = len(self._events)
            self._events.clear()
            self._log.clear()
            self._requests = 0
            self._refused = 0
            self._generation = secrets.token_hex(4)
        return forgotten

    def reset(self) -> None:
        """Forget events, the request log and counters, and clear faults."""
        self.clear()
        self.faults.clear()

    def activity(self, since: Mark | None, limit: int) -> Activity:
        """What was recorded after ``since``: at most ``limit`` of the newest events and requests.

        ``since`` is the ``mark`` of an earlier call; ``None``, or a mark from before a
        ``clear``, starts from the beginning (``reset`` is then true).
        """
        with self._cond:
            n_events, n_log = len(self._events), len(self._log)
            reset = (
                since is None
                or since.generation != self._generation
                or since.events > n_events
                or since.requests > n_log
            )
            events_from = 0 if reset or since is None else since.events
            log_from = 0 if reset or since is None else since.requests
            first_event = max(events_from, n_events - limit)
            first_request = max(log_from, n_log - limit)
            return Activity(
                vendor=self.vendor,
                mark=Mark(self._generation, n_events, n_log),
                reset=reset,
                first_event=first_event,
                events=self._events[first_event:],
                first_request=first_request,
                requests=self._log[first_request:],
                skipped=(first_event - events_from) + (first_request - log_from),
                refused=self._refused,
            )

    def __repr__(self) -> str:
        where = self.url if self.running else "not running"
        return f"{type(self).__name__}({where}, events={len(self._events)})"

    # -- vendor-specific hooks -------------------------------------------------------------

    @abstractmethod
    def endpoint(self, path: str) -> str | None:
        """The ingestion endpoint ``path`` names (e.g. "batch"), or None if it is not one."""

    @abstractmethod
    def ingest(self, request: IncomingRequest) -> list[ReceivedEvent]:
        """Validate a request by the vendor's rules and return its events, or raise Rejected."""

    @abstractmethod
    def accepted_body(self) -> dict[str, Any]:
        """The vendor's JSON answer to an accepted request."""

    @abstractmethod
    def error_body(self, rejected: Rejected) -> dict[str, Any]:
        """The vendor's JSON answer to a refused request (shaped as its SDK reads it)."""

    def check_key(self, key: str | None, field: str) -> str:
        """Authenticate ``key`` (named ``field`` in errors); return its masked form."""
        if not key:
            raise Rejected(401, "missing_key", f"no {field} was sent")
        if self._keys is not None and key not in self._keys:
            raise Rejected(
                401, "invalid_key", f"{field} is not one this emulator accepts", mask_key(key)
            )
        return mask_key(key)

    # -- HTTP ----------------------------------------------------------------------------

    def handle_get(self, handler: RequestHandler) -> None:
        """Viewer reads: never counted as requests, never consume faults."""
        if handler.path.partition("?")[0] == "/_requests":
            # One emulator's log is a plain list (the combined viewer's is keyed by vendor).
            handler.respond_json(200, [record.to_dict() for record in self.request_log])
        else:
            self._views.handle_get(handler)

    def handle_post(self, handler: RequestHandler) -> None:
        """Ingestion: read the body, apply faults, validate, record, answer."""
        received_at = datetime.now(UTC)
        path, _, query = handler.path.partition("?")
        if path == CLEAR_PATH:  # the viewer's, not an ingestion request
            self._views.handle_post(handler)
            return
        with self._cond:
            self._requests += 1
            request_id = self._requests
        where = _Where(request_id, path, received_at)
        endpoint = self.endpoint(path)
        if endpoint is None:
            handler.close_connection = True  # its body is left unread
            missing = Rejected(404, "not_found", f"no ingestion endpoint at {path}")
            self._refuse(handler, where, missing)
            return
        try:
            body = read_body(handler, self.max_body_bytes, self.too_large_status)
        except Rejected as rejected:
            self._refuse(handler, where, rejected)
            return
        action = self.faults.take()
        if action.latency and self._stopping.wait(action.latency):
            handler.close_connection = True  # stopping: leave without answering
            self._note(where, None, error="emulator stopped")
            return
        if action.drop or action.status is not None:
            self._inject(handler, where, action)
            return
        request = IncomingRequest(
            request_id=request_id,
            path=path,
            endpoint=endpoint,
            query=parse_qs(query),
            headers=handler.headers,
            body=body,
            received_at=received_at,
        )
        try:
            events = self.ingest(request)
        except Rejected as rejected:
            self._refuse(handler, where, rejected, action)
            return
        record = RequestRecord(request_id, "POST", path, 200, len(events), received_at)
        with self._cond:
            self._events.extend(events)
            self._log.append(record)
            self._cond.notify_all()
        handler.respond_json(200, self.accepted_body(), _latency_header(action))

    def _inject(self, handler: RequestHandler, where: _Where, action: FaultAction) -> None:
        if action.drop or action.status is None:
            handler.close_connection = True  # closed with no answer at all
            self._note(where, None, fault=action.description)
            return
        headers = {"X-Sandbox-Fault": "status", **_latency_header(action)}
        if action.retry_after is not None:
            headers["Retry-After"] = action.retry_after
        if 200 <= action.status < 300:  # an injected success still records nothing
            body = self.accepted_body()
        else:
            body = self.error_body(
                Rejected(action.status, "injected_fault", f"injected status {action.status}")
            )
        self._note(where, action.status, fault=action.description)
        handler.respond_json(action.status, body, headers)

    def _refuse(
        self,
        handler: RequestHandler,
        where: _Where,
        rejected: Rejected,
        action: FaultAction | None = None,
    ) -> None:
        self._note(
            where, rejected.status, error=rejected.message, code=rejected.code, key=rejected.key
        )
        headers = _latency_header(action) if action is not None else {}
        handler.respond_json(rejected.status, self.error_body(rejected), headers)

    def _note(
        self,
        where: _Where,
        status: int | None,
        *,
        error: str | None = None,
        fault: str | None = None,
        code: str | None = None,
        key: str | None = None,
    ) -> None:
        record = RequestRecord(
            where.request_id,
            "POST",
            where.path,
            status,
            0,
            where.received_at,
            error=error,
            fault=fault,
            code=code,
            key=key,
        )
        with self._cond:
            self._log.append(record)
            self._refused += 1

    def new_event(
        self,
        request: IncomingRequest,
        *,
        message_id: str,
        type: str,
        event: str | None,
        distinct_id: str | None,
        payload_json: str,
        key: str,
    ) -> ReceivedEvent:
        """Build a ``ReceivedEvent`` for ``request`` (used by ``ingest``)."""
        return ReceivedEvent(
            vendor=self.vendor,
            message_id=message_id,
            type=type,
            event=event,
            distinct_id=distinct_id,
            payload_json=payload_json,
            received_at=request.received_at,
            key=key,
            request_id=request.request_id,
            path=request.path,
        )


def _latency_header(action: FaultAction) -> dict[str, str]:
    # Lets a test see that latency was applied without timing anything.
    return {"X-Sandbox-Latency": f"{action.latency:g}"} if action.latency else {}


def _check_keys(keys: Iterable[str] | None) -> frozenset[str] | None:
    if keys is None:
        return None
    if isinstance(keys, str | bytes):
        raise TypeError("keys must be a set of strings, not one string")
    checked = frozenset(keys)
    for key in checked:
        if not isinstance(key, str) or not key:
            raise TypeError("every key must be a non-empty string")
    return checked

"""The router: one ``send()`` fans an event out to every enabled destination concurrently."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from router_core.batch import Progress, deliver_many, parse_many
from router_core.config import CONSENT_MISSING, RouterConfig
from router_core.destination import Destination
from router_core.errors import ConfigError, RouterClosedError, TransactionalSendError
from router_core.events import Event
from router_core.http import USER_AGENT
from router_core.logs import configure_from_settings, get_logger
from router_core.observers import ErrorCallback, Observers
from router_core.outbox import Outbox, QueuedDelivery, QueueSettings
from router_core.plugins import PluginRegistry, default_registry
from router_core.preview import Preview, preview_event
from router_core.response_cap import cap_response_body
from router_core.results import BatchReport, DeliveryResult, FlushResult, SendReport
from router_core.routing import Routing
from router_core.runtime import LoopThread
from router_core.secrets import register_secret
from router_core.shortcuts import EventShortcuts
from router_core.targets import Target

__all__ = ["DISABLED_ENV_VAR", "Router"]

DISABLED_ENV_VAR = "EVENT_ROUTER_DISABLED"
"""Set to 1 (true, yes, on) to switch every router off, as ``Router(disabled=True)``."""

# Only what cap_response_body can inflate within its cap (httpx would add br and zstd when
# their libraries are installed).
_ACCEPT_ENCODING = "gzip, deflate"
# After the drain, close() gives the pool and the loop this long each: a loop stuck in a
# plugin's blocking call is left on its daemon thread rather than waited for.
_CLIENT_CLOSE_S = 1.0
_LOOP_STOP_S = 1.0


class Router(EventShortcuts):
    """Routes events to destinations.

    Build it from a TOML file with ``Router.from_config(path)``, or in code with a mapping of
    destination name to settings table::

        Router({"segment": {"plugin": "segment", "write_key": "..."}})

    ``plugins`` defaults to the installed plugins (entry points); pass a ``PluginRegistry`` to
    add in-process plugins. ``env`` replaces ``os.environ`` for ``${VAR}`` interpolation.

    ``queue`` turns on queued delivery (``QueueSettings`` or a mapping of the ``[queue]`` keys;
    by default the config's ``[queue]`` table): ``send()`` then returns once the event is
    recorded in the outbox, and a background worker delivers it (see docs/delivery.md).

    ``disabled=True`` (or ``EVENT_ROUTER_DISABLED=1``) switches the router off, as the SDKs'
    ``send=False``: events are validated and routed, nothing is sent or stored (no outbox is
    opened), and every report has ``disabled=True``.

    ``http_client`` is the app's own ``httpx.AsyncClient`` (proxies, certificates, transports
    of its choosing); the router uses it on its own loop thread, so give it a client no other
    event loop uses, and the router does not close it. The router adds its response-body cap
    to the client's response hooks. Without it the client is built from the ``[http]`` table.

    ``consent_missing`` (``"deliver"`` or ``"skip"``; by default the config's
    ``[consent] missing``, else ``"deliver"``) says what an event with no consent object does
    at a destination that lists ``consent`` categories. ``on_error(message_id, result)`` is
    called for every failed delivery: each failed result of a direct send, and each event
    queued delivery dead-letters (an exception it raises is logged and ignored).
    """

    def __init__(
        self,
        destinations: Mapping[str, Mapping[str, Any]] | RouterConfig | None = None,
        *,
        plugins: PluginRegistry | None = None,
        env: Mapping[str, str] | None = None,
        queue: QueueSettings | Mapping[str, Any] | None = None,
        disabled: bool | None = None,
        http_client: httpx.AsyncClient | None = None,
        consent_missing: str | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                f"http_client must be an httpx.AsyncClient, not {type(http_client).__name__} "
                "(the router delivers from asyncio)"
            )
        if isinstance(destinations, RouterConfig):
            config = destinations
        else:
            config = RouterConfig.from_dict({"destinations": dict(destinations or {})})
        self._config = config
        self._registry = plugins if plugins is not None else default_registry()
        self._resolved = config.resolve(self._registry, env)
        self._http = config.http_settings(env)
        if (password := self._http.proxy_password()) is not None:
            register_secret(password)
        self._given_client = http_client
        self._disabled = _disabled(disabled, env)
        missing = consent_missing if consent_missing is not None else config.consent_missing
        if missing not in CONSENT_MISSING:
            raise ConfigError([f"consent_missing: must be 'deliver' or 'skip', not {missing!r}"])
        self._routing = Routing(self._resolved, missing)
        self._observers = Observers(self._registry.plugin_manager, on_error)
        configure_from_settings(config.logging)  # only when [logging] or EVENT_ROUTER_LOG_* ask
        self._runtime = LoopThread()
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._client: httpx.AsyncClient | None = None
        self._targets: list[Target] = []
        self._queue: QueuedDelivery | None = None
        self._exit_hook: functools.partial[None] | None = None
        queue_settings = config.queue_settings(env, queue)
        if queue_settings is not None and not self._disabled:
            self._queue = QueuedDelivery(
                queue_settings,
                runtime=self._runtime,
                targets=self._ensure_targets,
                destinations=self.destinations,
            )
            # A bounded flush at interpreter exit; the weak reference lets the router go.
            self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
            atexit.register(self._exit_hook)
            try:
                self._queue.start()  # deliver what an earlier run left in the outbox
            except BaseException:
                self.close(timeout=0)
                raise

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | RouterConfig = "config/router.toml",
        *,
        plugins: PluginRegistry | None = None,
        env: Mapping[str, str] | None = None,
        queue: QueueSettings | Mapping[str, Any] | None = None,
        disabled: bool | None = None,
        http_client: httpx.AsyncClient | None = None,
        consent_missing: str | None = None,
        on_error: ErrorCallback | None = None,
    ) -> Router:
        """Build a router from a TOML config file (see the README's config reference)."""
        if not isinstance(path, RouterConfig):  # one ConfigError: the file's and its plugins'
            registry = plugins if plugins is not None else default_registry()
            path = RouterConfig.load(path, plugins=registry, env=env)
        return cls(
            path,
            plugins=plugins,
            env=env,
            queue=queue,
            disabled=disabled,
            http_client=http_client,
            consent_missing=consent_missing,
            on_error=on_error,
        )

    # -- introspection ------------------------------------------------------------------------

    @property
    def destinations(self) -> list[str]:
        """Names of the enabled destinations, in config order."""
        return [d.name for d in self._resolved]

    @property
    def plugins(self) -> PluginRegistry:
        return self._registry

    @property
    def config(self) -> RouterConfig:
        return self._config

    @property
    def queued(self) -> bool:
        """True in queued mode (``send()`` records events in an outbox)."""
        return self._queue is not None

    @property
    def disabled(self) -> bool:
        """True when the router is switched off: it validates events and sends nothing."""
        return self._disabled

    @property
    def queue_settings(self) -> QueueSettings | None:
        """The ``[queue]`` settings in queued mode, else ``None``."""
        return self._queue.settings if self._queue is not None else None

    @property
    def outbox(self) -> Outbox | None:
        """The outbox in queued mode (for status, replay and purge), else ``None``."""
        return self._queue.outbox if self._queue is not None else None

    def __repr__(self) -> str:
        return f"Router(destinations={self.destinations!r})"

    # -- sending ------------------------------------------------------------------------------

    def send(
        self, event: Event | Mapping[str, Any], *, connection: object | None = None
    ) -> SendReport:
        """Send ``event`` to every enabled destination routing selects; wait for results.

        Raises ``InvalidEventError`` (before any request) when the event is not valid.

        In queued mode it returns as soon as the event is recorded in the outbox, with
        ``queued=True``, empty ``results`` and ``ok`` true; it raises ``OutboxFullError`` when
        the outbox has no room (see ``[queue] when_full``).

        ``connection`` (a psycopg 3 connection, or a SQLAlchemy ``Connection``/``Session``, in
        an open transaction) writes the event inside that transaction: it is delivered only
        if the transaction commits, never before. Needs a PostgreSQL outbox in the same
        database (``TransactionalSendError`` otherwise); see docs/scaling.md.
        """
        parsed = self._accept(event)
        if self._disabled:
            return self._disabled_report(parsed)
        if connection is not None:
            return self._enqueue(self._transactional(), parsed, connection)
        if self._queue is not None:
            return self._enqueue(self._queue, parsed)
        try:
            return self._runtime.run(self._fan_out(parsed))
        except concurrent.futures.CancelledError:
            raise _closed_while_sending() from None

    async def asend(
        self, event: Event | Mapping[str, Any], *, connection: object | None = None
    ) -> SendReport:
        """``send()`` for asyncio code: awaits the results without blocking the caller's loop.

        With ``connection`` (see ``send()``) the write runs on the caller's thread: a
        connection is not to be used from two threads at once, and it is one short statement.
        """
        parsed = self._accept(event)
        if self._disabled:
            return self._disabled_report(parsed)
        if connection is not None:
            return self._enqueue(self._transactional(), parsed, connection)
        if self._queue is not None:
            # Writing to disk (and waiting for room) happens off the caller's loop.
            return await asyncio.to_thread(self._enqueue, self._queue, parsed)
        pending = self._runtime.submit(self._fan_out(parsed))
        try:
            return await asyncio.wrap_future(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if pending.cancelled() and not (task is not None and task.cancelling()):
                raise _closed_while_sending() from None
            raise  # the caller's own task was cancelled

    def send_many(
        self, events: Sequence[Event | Mapping[str, Any]], *, progress: Progress | None = None
    ) -> BatchReport:
        """Send many events, one request per vendor-limit chunk per destination; wait.

        Every event is validated first: an invalid one raises ``InvalidEventError`` naming
        its index, and nothing is sent. Chunks follow each plugin's ``BatchLimits``; a chunk
        refused permanently is split to find the events at fault (see docs/delivery.md).
        ``progress(n)`` is told, from the router's thread, each time ``n`` more
        (event, destination) deliveries end. In queued mode each event is enqueued.
        """
        parsed = self._accept_many(events)
        if self._disabled or self._queue is not None:
            return BatchReport([self._settle_now(event) for event in parsed])
        try:
            return BatchReport(self._runtime.run(self._fan_out_many(parsed, progress)))
        except concurrent.futures.CancelledError:
            raise _closed_while_sending() from None

    async def asend_many(
        self, events: Sequence[Event | Mapping[str, Any]], *, progress: Progress | None = None
    ) -> BatchReport:
        """``send_many()`` for asyncio code, without blocking the caller's loop."""
        parsed = self._accept_many(events)
        if self._disabled or self._queue is not None:
            return BatchReport(await asyncio.to_thread(lambda: list(map(self._settle_now, parsed))))
        pending = self._runtime.submit(self._fan_out_many(parsed, progress))
        try:
            reports = await asyncio.wrap_future(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if pending.cancelled() and not (task is not None and task.cancelling()):
                raise _closed_while_sending() from None
            raise
        return BatchReport(reports)

    def _accept_many(self, events: Sequence[Event | Mapping[str, Any]]) -> list[Event]:
        if self._closed:
            raise RouterClosedError("this router is closed; build a new one to send more")
        return parse_many(events)

    def _settle_now(self, event: Event) -> SendReport:
        """Disabled or queued: what ``send()`` returns without waiting for a destination."""
        if self._disabled:
            return self._disabled_report(event)
        assert self._queue is not None
        return self._enqueue(self._queue, event)

    def _disabled_report(self, event: Event) -> SendReport:
        chosen, skipped = self._routing.route(event)
        return SendReport(
            message_id=event.message_id,
            results={},
            skipped=tuple(skipped),
            skip_reasons=skipped,
            disabled=True,
            disabled_for=chosen,
        )

    async def _fan_out_many(
        self, events: list[Event], progress: Progress | None
    ) -> list[SendReport]:
        routes = [self._routing.route(event) for event in events]
        reports = await deliver_many(self._ensure_targets(), events, routes, progress)
        for report in reports:
            for result in report.failed.values():
                self._observers.failed(report.message_id, result)
        return reports

    def _transactional(self) -> QueuedDelivery:
        if self._queue is None:
            raise TransactionalSendError(
                "send(connection=...) needs queued delivery with a PostgreSQL outbox "
                '([queue] url = "postgresql://..."); this router delivers directly'
            )
        return self._queue

    def _enqueue(
        self, queue: QueuedDelivery, event: Event, connection: object | None = None
    ) -> SendReport:
        # Transforms run at delivery, in the worker: the outbox stores the event once.
        chosen, skipped = self._routing.route(event)
        queue.enqueue(event, chosen, connection)
        return SendReport(
            message_id=event.message_id,
            results={},
            skipped=tuple(skipped),
            queued=True,
            queued_for=chosen,
            skip_reasons=skipped,
        )

    def preview(self, event: Event | Mapping[str, Any]) -> list[Preview]:
        """What each enabled destination would receive for ``event``, without sending it.

        Routing, consent and transforms run as in ``send()``; each plugin's own code builds
        the request, which a mock transport records instead of sending (no network, no
        outbox). Bodies are decoded, with secrets masked. See ``router_core.preview``.
        """
        parsed = self._accept(event)
        return self._runtime.run(
            preview_event(parsed, self._resolved, self._registry, self._routing)
        )

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Block until every event accepted so far is delivered or dead-lettered.

        Returns early when ``timeout`` seconds pass; the result says what is left per
        destination. Direct mode has nothing queued, so it returns at once.
        """
        if self._closed:
            raise RouterClosedError("this router is closed")
        if self._queue is None:
            return FlushResult()
        return self._queue.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> FlushResult:
        """``flush()`` for asyncio code, without blocking the caller's loop."""
        return await asyncio.to_thread(self.flush, timeout)

    def _accept(self, event: Event | Mapping[str, Any]) -> Event:
        if self._closed:
            raise RouterClosedError("this router is closed; build a new one to send more")
        return Event.parse(event)

    async def _fan_out(self, event: Event) -> SendReport:
        names, skipped = self._routing.route(event)
        chosen = [t for t in self._ensure_targets() if t.name in names]
        answers: list[DeliveryResult | str]
        if len(chosen) == 1:
            answers = [await chosen[0].deliver(event)]
        else:
            answers = await asyncio.gather(*(t.deliver(event) for t in chosen))
        results: dict[str, DeliveryResult] = {}
        for target, answer in zip(chosen, answers, strict=True):
            if isinstance(answer, str):
                skipped[target.name] = answer  # a transform dropped it
                continue
            results[target.name] = answer
            if not answer.success:
                self._observers.failed(event.message_id, answer)
        ordered = {d.name: skipped[d.name] for d in self._resolved if d.name in skipped}
        return SendReport(
            message_id=event.message_id,
            results=results,
            skipped=tuple(ordered),
            skip_reasons=ordered,
        )

    def _ensure_targets(self) -> list[Target]:
        # Runs on the router's loop: the client must be created on the loop that uses it.
        if self._client is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._client = self._new_client()
            log = get_logger("event_router.delivery")
            self._targets = [
                Target(
                    self._registry.get(cfg.plugin),
                    Destination(
                        name=cfg.name,
                        plugin=cfg.plugin,
                        settings=cfg.settings,
                        routing=cfg.routing,
                        client=self._client,
                        log=log.bind(destination=cfg.name, plugin=cfg.plugin),
                    ),
                    cfg.transforms,
                    self._observers,
                )
                for cfg in self._resolved
            ]
        return self._targets

    def _new_client(self) -> httpx.AsyncClient:
        given = self._given_client
        if given is not None:
            # A hostile answer cannot make the client buffer more than a bounded body, the
            # app's client included (its own hooks run first, as it registered them first).
            hooks = given.event_hooks
            if cap_response_body not in hooks["response"]:
                given.event_hooks = {**hooks, "response": [*hooks["response"], cap_response_body]}
            return given
        return httpx.AsyncClient(
            **self._http.client_options(),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": _ACCEPT_ENCODING},
            # A hostile answer cannot make the client buffer more than a bounded body.
            event_hooks={"response": [cap_response_body]},
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Close connections and stop the router's thread. Further sends raise.

        In queued mode it first drains the outbox for up to ``timeout`` seconds
        (``[queue] close_timeout`` by default); what is left stays in a SQLite outbox for the
        next router that opens it. Past the drain, closing takes a few seconds at most, even
        when a plugin blocks forever.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        try:
            if self._queue is not None:
                self._queue.close(timeout)
        finally:
            client, self._client = self._client, None
            if client is self._given_client:
                client = None  # the app's: it closes it
            if client is not None and self._pid == os.getpid():
                # RuntimeError: the loop is already gone (interpreter exit), or this is the
                # loop's own thread; TimeoutError: the loop is stuck in a blocking call.
                with contextlib.suppress(RuntimeError, TimeoutError):
                    self._runtime.run(client.aclose(), timeout=_CLIENT_CLOSE_S)
            self._runtime.stop(timeout=_LOOP_STOP_S)

    def __enter__(self) -> Router:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _disabled(given: bool | None, env: Mapping[str, str] | None) -> bool:
    if given is not None:
        return given
    raw = (os.environ if env is None else env).get(DISABLED_ENV_VAR, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError([f"{DISABLED_ENV_VAR}={raw!r}: expected 1 or 0 (true/false, yes/no, on/off)"])


def _closed_while_sending() -> RouterClosedError:
    # close() stopped the router's loop: whatever was still being sent there was cut off.
    return RouterClosedError("the router was closed while this event was being sent")


def _close_at_exit(ref: weakref.ref[Router]) -> None:
    """At interpreter exit: drain a queued router still open, for ``exit_timeout`` at most."""
    router = ref()
    if router is None or router._closed:
        return
    settings = router.queue_settings
    try:
        router.close(timeout=settings.exit_timeout if settings is not None else 0.0)
    except Exception as exc:  # never turn interpreter exit into a traceback
        get_logger().error("close_at_exit_failed", error=f"{type(exc).__name__}: {exc}")

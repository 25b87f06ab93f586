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
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from router_core.config import RouterConfig
from router_core.delivery import deliver
from router_core.destination import Destination
from router_core.errors import RouterClosedError
from router_core.events import Event
from router_core.http import USER_AGENT
from router_core.logs import configure_from_settings, get_logger
from router_core.outbox import (
    FlushResult,
    Outbox,
    QueuedDelivery,
    QueueSettings,
    TransactionalSendError,
)
from router_core.plugins import PluginRegistry, default_registry
from router_core.response_cap import cap_response_body
from router_core.results import DeliveryResult, SendReport
from router_core.runtime import LoopThread
from router_core.targets import Target

__all__ = ["Router"]

_POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=32)
# Only what cap_response_body can inflate within its cap (httpx would add br and zstd when
# their libraries are installed).
_ACCEPT_ENCODING = "gzip, deflate"
# After the drain, close() gives the pool and the loop this long each: a loop stuck in a
# plugin's blocking call is left on its daemon thread rather than waited for.
_CLIENT_CLOSE_S = 1.0
_LOOP_STOP_S = 1.0


class Router:
    """Routes events to destinations.

    Build it from a TOML file with ``Router.from_config(path)``, or in code with a mapping of
    destination name to settings table::

        Router({"segment": {"plugin": "segment", "write_key": "..."}})

    ``plugins`` defaults to the installed plugins (entry points); pass a ``PluginRegistry`` to
    add in-process plugins. ``env`` replaces ``os.environ`` for ``${VAR}`` interpolation.

    ``queue`` turns on queued delivery (``QueueSettings`` or a mapping of the ``[queue]`` keys;
    by default the config's ``[queue]`` table): ``send()`` then returns once the event is
    recorded in the outbox, and a background worker delivers it (see docs/delivery.md).
    """

    def __init__(
        self,
        destinations: Mapping[str, Mapping[str, Any]] | RouterConfig | None = None,
        *,
        plugins: PluginRegistry | None = None,
        env: Mapping[str, str] | None = None,
        queue: QueueSettings | Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(destinations, RouterConfig):
            config = destinations
        else:
            config = RouterConfig.from_dict({"destinations": dict(destinations or {})})
        self._config = config
        self._registry = plugins if plugins is not None else default_registry()
        self._resolved = config.resolve(self._registry, env)
        # With no filters anywhere every event goes everywhere: _route() need not ask each one.
        self._unfiltered: tuple[str, ...] | None = None
        if all(d.routing.types is None and d.routing.events is None for d in self._resolved):
            self._unfiltered = tuple(d.name for d in self._resolved)
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
        if queue_settings is not None:
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
    ) -> Router:
        """Build a router from a TOML config file (see the README's config reference)."""
        config = path if isinstance(path, RouterConfig) else RouterConfig.load(path)
        return cls(config, plugins=plugins, env=env, queue=queue)

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
        """Send ``event`` to every enabled destination whose filters match; wait for results.

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

    def _route(self, event: Event) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Names of the destinations ``event`` goes to, and of those whose filters skip it."""
        if self._unfiltered is not None:
            return self._unfiltered, ()
        chosen: list[str] = []
        skipped: list[str] = []
        for d in self._resolved:
            (chosen if d.routing.accepts(event) else skipped).append(d.name)
        return tuple(chosen), tuple(skipped)

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
        chosen, skipped = self._route(event)
        queue.enqueue(event, chosen, connection)
        return SendReport(
            message_id=event.message_id,
            results={},
            skipped=skipped,
            queued=True,
            queued_for=chosen,
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
        names, skipped = self._route(event)
        chosen = [t for t in self._ensure_targets() if t.name in names]
        results: list[DeliveryResult]
        if len(chosen) == 1:
            results = [await deliver(*chosen[0], event)]
        else:
            results = await asyncio.gather(*(deliver(p, d, event) for p, d in chosen))
        return SendReport(
            message_id=event.message_id,
            results={r.destination: r for r in results},
            skipped=skipped,
        )

    def _ensure_targets(self) -> list[Target]:
        # Runs on the router's loop: the client must be created on the loop that uses it.
        if self._client is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._client = httpx.AsyncClient(
                limits=_POOL_LIMITS,
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": _ACCEPT_ENCODING},
                # A hostile answer cannot make the client buffer more than a bounded body.
                event_hooks={"response": [cap_response_body]},
            )
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
                )
                for cfg in self._resolved
            ]
        return self._targets

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

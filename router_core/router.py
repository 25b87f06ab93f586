"""The router: one ``send()`` fans an event out to every enabled destination concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx
import structlog

from router_core.config import RouterConfig
from router_core.delivery import deliver
from router_core.destination import Destination
from router_core.errors import RouterClosedError
from router_core.events import Event
from router_core.http import USER_AGENT
from router_core.logs import configure_logging, ensure_configured
from router_core.plugins import LoadedPlugin, PluginRegistry, default_registry
from router_core.results import DeliveryResult, SendReport
from router_core.runtime import LoopThread

__all__ = ["Router"]

_POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=32)


class Router:
    """Routes events to destinations.

    Build it from a TOML file with ``Router.from_config(path)``, or in code with a mapping of
    destination name to settings table::

        Router({"segment": {"plugin": "segment", "write_key": "..."}})

    ``plugins`` defaults to the installed plugins (entry points); pass a ``PluginRegistry`` to
    add in-process plugins. ``env`` replaces ``os.environ`` for ``${VAR}`` interpolation.
    """

    def __init__(
        self,
        destinations: Mapping[str, Mapping[str, Any]] | RouterConfig | None = None,
        *,
        plugins: PluginRegistry | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(destinations, RouterConfig):
            config = destinations
        else:
            config = RouterConfig.from_dict({"destinations": dict(destinations or {})})
        self._config = config
        self._registry = plugins if plugins is not None else default_registry()
        self._resolved = config.resolve(self._registry, env)
        if config.source is not None and not structlog.is_configured():
            configure_logging(config.logging.format, config.logging.level)
        ensure_configured()
        self._runtime = LoopThread()
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._client: httpx.AsyncClient | None = None
        self._targets: list[tuple[LoadedPlugin, Destination[Any]]] = []

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | RouterConfig = "config/router.toml",
        *,
        plugins: PluginRegistry | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Router:
        """Build a router from a TOML config file (see the README's config reference)."""
        config = path if isinstance(path, RouterConfig) else RouterConfig.load(path)
        return cls(config, plugins=plugins, env=env)

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

    def __repr__(self) -> str:
        return f"Router(destinations={self.destinations!r})"

    # -- sending ------------------------------------------------------------------------------

    def send(self, event: Event | Mapping[str, Any]) -> SendReport:
        """Send ``event`` to every enabled destination whose filters match; wait for results.

        Raises ``InvalidEventError`` (before any request) when the event is not valid.
        """
        parsed = self._accept(event)
        return self._runtime.run(self._fan_out(parsed))

    async def asend(self, event: Event | Mapping[str, Any]) -> SendReport:
        """``send()`` for asyncio code: awaits the results without blocking the caller's loop."""
        parsed = self._accept(event)
        return await asyncio.wrap_future(self._runtime.submit(self._fan_out(parsed)))

    def _accept(self, event: Event | Mapping[str, Any]) -> Event:
        if self._closed:
            raise RouterClosedError("this router is closed; build a new one to send more")
        return Event.parse(event)

    async def _fan_out(self, event: Event) -> SendReport:
        targets = self._ensure_targets()
        chosen = [t for t in targets if t[1].routing.accepts(event)]
        skipped = tuple(d.name for _, d in targets if not d.routing.accepts(event))
        results: list[DeliveryResult]
        if len(chosen) == 1:
            results = [await deliver(chosen[0][0], chosen[0][1], event)]
        else:
            results = await asyncio.gather(*(deliver(p, d, event) for p, d in chosen))
        return SendReport(
            message_id=event.message_id,
            results={r.destination: r for r in results},
            skipped=skipped,
        )

    def _ensure_targets(self) -> list[tuple[LoadedPlugin, Destination[Any]]]:
        # Runs on the router's loop: the client must be created on the loop that uses it.
        if self._client is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._client = httpx.AsyncClient(
                limits=_POOL_LIMITS, headers={"User-Agent": USER_AGENT}
            )
            log = structlog.get_logger("router_core")
            self._targets = [
                (
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

    def close(self) -> None:
        """Close connections and stop the router's thread. Further sends raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            with contextlib.suppress(RuntimeError):  # loop already gone at interpreter exit
                self._runtime.run(client.aclose())
        self._runtime.stop()

    def __enter__(self) -> Router:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""The destination object a plugin receives with each event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import structlog

from router_core.settings import DestinationSettings, RoutingSettings

__all__ = ["Destination"]

S = TypeVar("S", bound=DestinationSettings)


@dataclass(frozen=True, slots=True, eq=False)
class Destination(Generic[S]):
    """One configured destination: its name, its plugin's validated settings, and the tools to
    deliver with.

    ``client`` is the router's pooled ``httpx.AsyncClient``; use it from ``async def`` hooks.
    It reads at most ``RESPONSE_BODY_LIMIT`` of a response body (see ``body_truncated``).
    ``timeout`` is this destination's per-attempt timeout in seconds. ``log`` is a structlog
    logger already bound to the destination and plugin names.
    """

    name: str
    plugin: str
    settings: S
    routing: RoutingSettings
    client: httpx.AsyncClient = field(repr=False)
    log: Any = field(repr=False, default_factory=lambda: structlog.get_logger("router_core"))

    @property
    def timeout(self) -> float:
        return self.routing.timeout

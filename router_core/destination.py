"""The destination object a plugin receives with each event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import httpx
from structlog.typing import FilteringBoundLogger

from router_core.logs import get_logger
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
    logger bound to the destination and plugin names, writing to the stdlib logger
    ``event_router.delivery`` (the application decides what is shown).
    """

    name: str
    plugin: str
    settings: S
    routing: RoutingSettings
    client: httpx.AsyncClient = field(repr=False)
    log: FilteringBoundLogger = field(
        repr=False, default_factory=lambda: get_logger("event_router.delivery")
    )

    @property
    def timeout(self) -> float:
        return self.routing.timeout

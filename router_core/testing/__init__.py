"""Helpers for testing destination plugins without a router.

A plugin's hooks take a ``Destination``; ``destination()`` builds one around settings and an
``httpx.AsyncClient`` you control (mock it with respx), so a hook can be awaited directly::

    async with httpx.AsyncClient() as client:
        target = destination("webhook", WebhookSettings(url="https://hooks.example"), client)
        delivery = await send_event(target, Event.track("Signed Up", user_id="u1"))
"""

from __future__ import annotations

from typing import TypeVar

import httpx

from router_core.destination import Destination
from router_core.logs import get_logger
from router_core.settings import DestinationSettings, RoutingSettings

__all__ = ["destination"]

S = TypeVar("S", bound=DestinationSettings)


def destination(
    plugin: str,
    settings: S,
    client: httpx.AsyncClient,
    *,
    name: str | None = None,
    timeout: float = 10.0,
) -> Destination[S]:
    """A ``Destination`` named ``name`` (default: the plugin's name) for calling hooks in tests."""
    return Destination(
        name=name or plugin,
        plugin=plugin,
        settings=settings,
        routing=RoutingSettings(plugin=plugin, timeout=timeout),
        client=client,
        log=get_logger("event_router.delivery").bind(destination=name or plugin, plugin=plugin),
    )

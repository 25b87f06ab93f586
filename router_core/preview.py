"""See before you send: the request each destination would receive for an event, offline.

``preview_event`` routes the event as ``send()`` would (filters, event types,
``integrations``, consent), runs each destination's transforms, then calls the plugin's real
``send_event`` with a client whose transport records the request and answers 200: the very
code path of a real delivery, with no network. Bodies are shown decoded (gzip undone) with
every registered secret masked (PostHog's key travels in the body).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from router_core.config import DestinationConfig
from router_core.delivery import deliver_event
from router_core.destination import Destination
from router_core.events import Event
from router_core.logs import get_logger
from router_core.plugins import PluginRegistry
from router_core.routing import Routing
from router_core.secrets import redact

__all__ = ["Preview", "PreviewRequest", "preview_event"]


@dataclass(frozen=True, slots=True)
class PreviewRequest:
    """One request a plugin made: method, URL and body (decoded, secrets masked)."""

    method: str
    url: str
    body: str

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "body": self.body}


@dataclass(frozen=True, slots=True)
class Preview:
    """What one destination would get for one event.

    ``requests`` are the requests its plugin would make (one per event its transforms
    produced); ``skipped`` says why it gets nothing, ``error`` why it would fail (a transform
    failed, or the plugin raised).
    """

    destination: str
    plugin: str
    requests: tuple[PreviewRequest, ...] = ()
    skipped: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "plugin": self.plugin,
            "skipped": self.skipped,
            "error": self.error,
            "requests": [request.to_dict() for request in self.requests],
        }


class _Recorder:
    """An ``httpx.MockTransport`` handler: keeps each request, answers 200."""

    def __init__(self) -> None:
        self.requests: list[PreviewRequest] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests.append(
            PreviewRequest(
                request.method, redact(str(request.url)), redact(body.decode("utf-8", "replace"))
            )
        )
        return httpx.Response(200, json={"status": 1, "success": True}, request=request)


async def preview_event(
    event: Event,
    destinations: Sequence[DestinationConfig],
    registry: PluginRegistry,
    routing: Routing,
) -> list[Preview]:
    """What each of ``destinations`` would receive for ``event`` (see the module docstring)."""
    _, skipped = routing.route(event)
    previews: list[Preview] = []
    log = get_logger("event_router.preview")
    for cfg in destinations:
        if cfg.name in skipped:
            previews.append(Preview(cfg.name, cfg.plugin, skipped=skipped[cfg.name]))
            continue
        events: tuple[Event, ...] = (event,)
        if cfg.transforms is not None:
            outcome = cfg.transforms.apply(event)
            if outcome.error is not None:
                previews.append(Preview(cfg.name, cfg.plugin, error=str(outcome.error)))
                continue
            if not outcome.events:
                reason = outcome.dropped or "dropped by transform"
                previews.append(Preview(cfg.name, cfg.plugin, skipped=reason))
                continue
            events = outcome.events
        recorder = _Recorder()
        error: str | None = None
        async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
            destination = Destination(
                name=cfg.name,
                plugin=cfg.plugin,
                settings=cfg.settings,
                routing=cfg.routing,
                client=client,
                log=log.bind(destination=cfg.name, plugin=cfg.plugin),
            )
            plugin = registry.get(cfg.plugin)
            for each in events:
                result = await deliver_event(plugin, destination, each)
                if not result.success:
                    error = result.error
                    break
        previews.append(Preview(cfg.name, cfg.plugin, tuple(recorder.requests), error=error))
    return previews

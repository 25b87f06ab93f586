"""The viewer: a live page of what the emulators received and refused, and its JSON endpoints.

The page is static HTML, CSS and JavaScript shipped in ``static/`` (no build step, nothing
loaded from the network). It polls ``GET /_feed`` with the cursor of its previous answer, so it
updates without reloading; polling short requests suits this thread-per-connection server,
whose ``stop`` joins every connection (a held stream per open tab would have to be woken and
torn down), and a cursor keeps each poll as small as the news.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from router_core.sandbox.bodies import Rejected
from router_core.sandbox.feed import BadFeedQuery, build_feed
from router_core.sandbox.server import read_body

if TYPE_CHECKING:
    from router_core.sandbox.emulator import Emulator
    from router_core.sandbox.server import RequestHandler

__all__ = ["CLEAR_PATH", "PAGE_HEADERS", "ViewerApp"]

CLEAR_PATH = "/_clear"

_STATIC = {
    "/": ("viewer.html", "text/html; charset=utf-8"),
    "/_static/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/_static/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
}
_MAX_CLEAR_BODY = 64 * 1024  # /_clear takes no body; a small one is read and ignored
_CROSS_SITE = frozenset({"cross-site", "same-site"})

PAGE_HEADERS = {
    # Scripts and styles only from this server, fetches only back to it: an event value that
    # slipped into the page as markup could not run, and nothing is loaded from the network.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
}


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("router_core.sandbox").joinpath("static", name).read_bytes()


class ViewerApp:
    """Serves the page, ``/_events``, ``/_requests``, ``/_feed`` and ``POST /_clear``
    for one or more emulators (by vendor name)."""

    def __init__(self, emulators: Mapping[str, Emulator], title: str = "event-router sandbox"):
        self._emulators = dict(emulators)
        self._title = title

    def handle_get(self, handler: RequestHandler) -> None:
        """Answer the page, its assets and the JSON views."""
        path, _, query = handler.path.partition("?")
        if path in _STATIC:
            name, content_type = _STATIC[path]
            handler.respond(200, _asset(name), content_type, PAGE_HEADERS)
        elif path == "/_feed":
            try:
                feed = build_feed(self._title, self._emulators, parse_qs(query))
            except BadFeedQuery as exc:
                handler.respond_json(400, {"error": str(exc)})
                return
            handler.respond_json(200, feed, {"Cache-Control": "no-store"})
        elif path == "/_events":
            events = {
                name: [event.to_dict() for event in emulator.events]
                for name, emulator in self._emulators.items()
            }
            handler.respond_json(200, events)
        elif path == "/_requests":
            log = {
                name: [record.to_dict() for record in emulator.request_log]
                for name, emulator in self._emulators.items()
            }
            handler.respond_json(200, log)
        else:
            handler.respond_json(404, {"error": f"no such page {path}"})

    def handle_post(self, handler: RequestHandler) -> None:
        """``POST /_clear`` forgets what every emulator recorded; anything else is refused."""
        path = handler.path.partition("?")[0]
        if path != CLEAR_PATH:
            handler.close_connection = True  # its body is left unread
            handler.respond_json(405, {"error": f"POST {path}: the viewer only takes POST /_clear"})
            return
        try:
            read_body(handler, _MAX_CLEAR_BODY, 413)  # keeps a keep-alive connection in step
        except Rejected as rejected:
            handler.respond_json(rejected.status, {"error": rejected.message})
            return
        # Browsers say where a request comes from: another site's form must not wipe the
        # sandbox. curl and scripts send no such header.
        if handler.headers.get("Sec-Fetch-Site", "").lower() in _CROSS_SITE:
            handler.respond_json(403, {"error": "clear the sandbox from its own page"})
            return
        cleared = {name: emulator.clear() for name, emulator in self._emulators.items()}
        handler.respond_json(200, {"cleared": cleared})

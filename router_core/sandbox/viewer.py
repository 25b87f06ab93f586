"""Read-only views of what the emulators received: a JSON feed and a small HTML page."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING

from router_core.sandbox.records import ReceivedEvent

if TYPE_CHECKING:
    from router_core.sandbox.emulator import Emulator
    from router_core.sandbox.server import RequestHandler

__all__ = ["PAGE_LIMIT", "ViewerApp", "render_page"]

PAGE_LIMIT = 200
"""The HTML page shows this many of the newest events per vendor (the JSON feed has all)."""

_REFRESH_SECONDS = 2

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}pre{margin:0;white-space:pre-wrap;word-break:break-all;max-height:12rem;
overflow:auto}.muted{color:#777}
"""


def render_page(title: str, events: Mapping[str, Sequence[ReceivedEvent]]) -> bytes:
    """An HTML page listing ``events`` per vendor, newest first. Every value is escaped."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{_REFRESH_SECONDS}'>",
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<p class='muted'>Refreshes every few seconds. JSON: <code>GET /_events</code>.</p>",
    ]
    for vendor, received in events.items():
        parts.append(_vendor_section(vendor, received))
    parts.append("</body></html>")
    return "".join(parts).encode()


def _vendor_section(vendor: str, received: Sequence[ReceivedEvent]) -> str:
    shown = list(reversed(received[-PAGE_LIMIT:]))
    heading = f"<h2>{escape(vendor)}: {len(received)} event{'s' if len(received) != 1 else ''}"
    if len(received) > len(shown):
        heading += f" <span class='muted'>(newest {len(shown)} shown)</span>"
    heading += "</h2>"
    if not shown:
        return heading + "<p class='muted'>Nothing received yet.</p>"
    rows = "".join(_row(event) for event in shown)
    return (
        heading + "<table><tr><th>request</th><th>received</th><th>type</th><th>event</th>"
        "<th>distinct id</th><th>message id</th><th>key</th><th>payload</th></tr>"
        f"{rows}</table>"
    )


def _row(event: ReceivedEvent) -> str:
    payload = json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False)
    cells = (
        str(event.request_id),
        event.received_at.strftime("%H:%M:%S.%f")[:-3],
        event.type,
        event.event or "",
        event.distinct_id or "",
        event.message_id,
        event.key,
    )
    tds = "".join(f"<td>{escape(cell)}</td>" for cell in cells)
    return f"<tr>{tds}<td><pre>{escape(payload)}</pre></td></tr>"


class ViewerApp:
    """Serves the events of several emulators: ``GET /_events`` (JSON) and ``GET /`` (HTML)."""

    def __init__(self, emulators: Mapping[str, Emulator]) -> None:
        self._emulators = dict(emulators)

    def handle_get(self, handler: RequestHandler) -> None:
        """Answer the read-only views."""
        path = handler.path.partition("?")[0]
        if path == "/_events":
            feed = {
                name: [event.to_dict() for event in emulator.events]
                for name, emulator in self._emulators.items()
            }
            handler.respond_json(200, feed)
        elif path == "/_requests":
            log = {
                name: [record.to_dict() for record in emulator.request_log]
                for name, emulator in self._emulators.items()
            }
            handler.respond_json(200, log)
        elif path == "/":
            page = render_page(
                "event-router sandbox",
                {name: emulator.events for name, emulator in self._emulators.items()},
            )
            handler.respond(200, page, "text/html; charset=utf-8", PAGE_HEADERS)
        else:
            handler.respond_json(404, {"error": f"no such page {path}"})

    def handle_post(self, handler: RequestHandler) -> None:
        """The viewer is read-only."""
        handler.close_connection = True  # its body is left unread
        handler.respond_json(405, {"error": "the viewer is read-only"})


PAGE_HEADERS = {
    # The page runs no script and loads nothing: even an unescaped value could not execute.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
}

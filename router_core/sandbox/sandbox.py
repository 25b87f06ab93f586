"""Both emulators and the viewer together: what ``event-router sandbox`` and ``demo`` run."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from router_core.sandbox.emulator import Emulator
from router_core.sandbox.posthog import PostHogEmulator
from router_core.sandbox.segment import SegmentEmulator
from router_core.sandbox.server import BackgroundServer
from router_core.sandbox.service import Service
from router_core.sandbox.viewer import ViewerApp

__all__ = ["Sandbox"]

_WAIT_SLICE = 0.5  # serve_forever wakes this often so Ctrl-C is handled promptly


class Sandbox(Service):
    """A Segment emulator, a PostHog emulator and a viewer of both.

    >>> with Sandbox() as sb:                                     # doctest: +SKIP
    ...     router_config = {"segment": sb.segment.url, "posthog": sb.posthog.url}

    Ports 0 pick free ports. ``viewer_port=None`` runs no viewer. The viewer serves a live
    page (``GET /``) of the events both emulators accepted and the requests they refused,
    ``GET /_events`` (``{"segment": [...], "posthog": [...]}``), ``GET /_requests``,
    ``GET /_feed`` (what changed since a cursor) and ``POST /_clear``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        segment_port: int = 0,
        posthog_port: int = 0,
        viewer_port: int | None = 0,
        *,
        write_keys: Iterable[str] | None = None,
        api_keys: Iterable[str] | None = None,
    ) -> None:
        self.segment = SegmentEmulator(host, segment_port, write_keys=write_keys)
        """The Segment emulator."""
        self.posthog = PostHogEmulator(host, posthog_port, api_keys=api_keys)
        """The PostHog emulator."""
        self._host = host
        self._viewer_port = viewer_port
        self._viewer: BackgroundServer | None = None
        self._stop_requested = threading.Event()

    @property
    def emulators(self) -> dict[str, Emulator]:
        """The emulators by vendor name."""
        return {"segment": self.segment, "posthog": self.posthog}

    def start(self) -> None:
        """Start both emulators and the viewer; returns once all are listening."""
        try:
            self.segment.start()
            self.posthog.start()
            if self._viewer_port is not None and self._viewer is None:
                viewer = BackgroundServer(
                    ViewerApp(self.emulators), self._host, self._viewer_port, "viewer"
                )
                viewer.start()
                self._viewer = viewer
        except BaseException:
            self.stop()  # a port already in use must not leave the others running
            raise

    def stop(self) -> None:
        """Stop everything and free every port (idempotent)."""
        self._stop_requested.set()
        viewer, self._viewer = self._viewer, None
        if viewer is not None:
            viewer.stop()
        self.posthog.stop()
        self.segment.stop()

    def serve_forever(self) -> None:
        """Start if needed, then block until Ctrl-C or ``stop()`` (from another thread)."""
        self.start()
        try:
            while not self._stop_requested.wait(_WAIT_SLICE):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    @property
    def viewer_url(self) -> str:
        """Base URL of the viewer: its live page is at ``GET /``."""
        if self._viewer is None:
            raise RuntimeError("the viewer is not running (not started, or viewer_port=None)")
        host, port = self._viewer.host, self._viewer.port
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def clear(self) -> dict[str, int]:
        """Forget what both emulators recorded (faults stay); return how many events each had.

        This is what the viewer's Clear button (``POST /_clear``) does.
        """
        return {name: emulator.clear() for name, emulator in self.emulators.items()}

    def reset(self) -> None:
        """Reset both emulators (events, counters, faults)."""
        self.segment.reset()
        self.posthog.reset()

    def __repr__(self) -> str:
        return f"Sandbox(segment={self.segment!r}, posthog={self.posthog!r})"

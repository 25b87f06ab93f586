"""The error a failed transform gives: which destination, which transform, and why."""

from __future__ import annotations

from router_core.errors import RouterError
from router_core.secrets import redact

__all__ = ["TransformError"]


class TransformError(RouterError):
    """A transform raised, or produced something that is not a valid event.

    It fails the event for that destination only. ``destination`` is the destination's name,
    ``index`` the transform's position in its ``transforms`` list (from 0), ``transform`` its
    ``type`` and ``plugin`` the plugin's name for a ``type = "plugin"`` transform. ``reason``
    is the cause's text with every registered secret masked; the cause itself is not chained,
    so a traceback cannot carry a secret it held.
    """

    def __init__(
        self,
        destination: str,
        index: int,
        transform: str,
        reason: str,
        *,
        plugin: str | None = None,
    ) -> None:
        self.destination = destination
        self.index = index
        self.transform = transform
        self.plugin = plugin
        self.reason = redact(reason)
        label = f"plugin {plugin!r}" if plugin is not None else transform
        super().__init__(
            f"destinations.{destination}.transforms[{index}] ({label}) failed: {self.reason}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only ``plugin`` needs help to survive pickling (worker processes, queues).
        return (_rebuild, (self.destination, self.index, self.transform, self.reason, self.plugin))


def _rebuild(
    destination: str, index: int, transform: str, reason: str, plugin: str | None
) -> TransformError:
    return TransformError(destination, index, transform, reason, plugin=plugin)

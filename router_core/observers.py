"""Telling observers how delivery went: the broadcast hooks and the router's ``on_error``.

``delivery_attempted`` and ``dead_lettered`` are broadcast through the registry's
``plugin_manager`` (every plugin, and every observer the app registered in-process); the
router's ``on_error`` callback hears of every failed delivery. Nothing here raises: an
observer's exception is logged and delivery goes on as if it had not been called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pluggy

from router_core.logs import get_logger
from router_core.redaction import exception_text

if TYPE_CHECKING:
    from router_core.results import DeliveryResult

__all__ = ["NO_OBSERVERS", "ErrorCallback", "Observers"]

ErrorCallback = Callable[[str, "DeliveryResult"], object]
"""``on_error(message_id, result)``: one event failed at one destination (``result.error``
says why); in queued mode, it was dead-lettered."""

_log = get_logger("event_router.observers")


class Observers:
    """The observer hooks of one registry, plus one router's ``on_error``."""

    __slots__ = ("_hook", "_on_error")

    def __init__(
        self, manager: pluggy.PluginManager | None, on_error: ErrorCallback | None = None
    ) -> None:
        self._hook = manager.hook if manager is not None else None
        self._on_error = on_error

    def attempted(  # noqa: PLR0917 - the hook's arguments, in its order
        self,
        destination: str,
        message_ids: Sequence[str],
        outcome: str,
        attempt: int,
        duration_ms: float,
        error: str | None,
    ) -> None:
        """One attempt at ``destination`` for these events (one, or a batch) finished."""
        if self._hook is None:
            return
        caller = self._hook.delivery_attempted
        if not caller.get_hookimpls():
            return  # the common case costs one check per attempt
        for message_id in message_ids:
            self._call(
                "delivery_attempted",
                caller,
                destination=destination,
                message_id=message_id,
                outcome=outcome,
                attempt=attempt,
                duration_ms=duration_ms,
                error=error,
            )

    def dead_lettered(self, destination: str, message_id: str, error: str) -> None:
        """One event for ``destination`` went to the dead letter."""
        if self._hook is None:
            return
        caller = self._hook.dead_lettered
        if caller.get_hookimpls():
            self._call(
                "dead_lettered",
                caller,
                destination=destination,
                message_id=message_id,
                error=error,
            )

    def failed(self, message_id: str, result: DeliveryResult) -> None:
        """Tell ``on_error`` that ``message_id`` failed at ``result.destination``."""
        if self._on_error is None:
            return
        try:
            self._on_error(message_id, result)
        except Exception as exc:  # the app's callback must not break delivery
            _log.error(
                "on_error_raised",
                destination=result.destination,
                message_id=message_id,
                error=f"{type(exc).__name__}: {exception_text(exc)}",
            )

    @staticmethod
    def _call(name: str, caller: pluggy.HookCaller, **kwargs: object) -> None:
        try:
            caller(**kwargs)
        except Exception as exc:  # an observer must never affect delivery
            _log.error(
                "observer_raised",
                hook=name,
                destination=kwargs.get("destination"),
                error=f"{type(exc).__name__}: {exception_text(exc)}",
            )


NO_OBSERVERS = Observers(None)
"""Observers that observe nothing (delivery helpers called without a router)."""

"""The hooks a destination plugin implements, and the one a transform plugin implements.

A plugin is a module (or any object) registered under the ``event_router`` entry-point group.
It provides one kind of destination: the config's ``plugin = "<entry-point name>"`` selects it.
A transform plugin implements ``transform_event`` (and need not implement ``send_event``): a
destination's ``[[destinations.NAME.transforms]]`` table with ``type = "plugin"`` and
``name = "<entry-point name>"`` selects it.
The router calls each plugin's destination and transform hooks on their own (never
``pm.hook.<name>()`` across all plugins), so one plugin failing or returning garbage cannot
affect another. The observer hooks (``delivery_attempted``, ``dead_lettered``) are the
exception: they are broadcast to every plugin through the registry's ``plugin_manager``, and
a plugin may implement only them (metrics, audit logs). An observer that raises is logged and
never affects delivery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from router_core.destination import Destination
    from router_core.events import Event, EventType
    from router_core.limits import BatchLimits
    from router_core.results import Delivery
    from router_core.settings import DestinationSettings

__all__ = [
    "PROJECT_NAME",
    "BatchLimitsHook",
    "DeadLetteredHook",
    "DeliveryAttemptedHook",
    "DestinationSettingsHook",
    "EventTypesHook",
    "SendBatchHook",
    "SendEventHook",
    "TransformEventHook",
    "hookimpl",
    "hookspec",
]

PROJECT_NAME = "event_router"
"""pluggy project name, and the entry-point group plugins register under."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(firstresult=True)
def destination_settings() -> type[DestinationSettings]:  # type: ignore[empty-body]
    """Return the pydantic model (a ``DestinationSettings`` subclass) for this plugin's settings.

    The router validates each destination's config table against it; errors name the
    destination and the field. Mark secrets ``SecretStr`` so they never reach logs or results.
    Optional: a plugin without this hook takes no settings beyond the common ones.
    """


@hookspec
def send_event(  # type: ignore[empty-body]
    destination: Destination[Any], event: Event
) -> Delivery | Awaitable[Delivery]:
    """Deliver ``event`` to ``destination`` and return a ``Delivery``.

    May be ``async def`` (preferred: use ``destination.client``, the router's pooled
    ``httpx.AsyncClient``) or a plain function (run in a worker thread). Raise ``DeliveryError``
    (``retryable=True`` for transient failures) when the destination does not accept the event;
    any other exception is reported as a failed, non-retried result.
    """


@hookspec
def send_batch(  # type: ignore[empty-body]
    destination: Destination[Any], events: Sequence[Event]
) -> Delivery | Awaitable[Delivery]:
    """Deliver ``events`` in ONE request, all or nothing. Optional.

    Used by queued delivery. The router sizes batches within ``batch_limits()``; if the
    destination still refuses the batch permanently, the router splits it to find the event at
    fault. Raise ``DeliveryError`` exactly as ``send_event`` does. Without this hook, queued
    delivery calls ``send_event`` once per event.
    """


@hookspec(firstresult=True)
def batch_limits(settings: DestinationSettings) -> BatchLimits:  # type: ignore[empty-body]
    """The destination's documented limits (events and bytes per request, bytes per event).

    ``settings`` are the destination's own (a plan with smaller batches, say); limits are
    asked for once per destination. An implementation may leave the argument out
    (``def batch_limits()``) when its limits are the same for every destination. Optional;
    without it the router uses conservative defaults (``BatchLimits()``).
    """


@hookspec(firstresult=True)
def transform_event(
    event: Event, options: Mapping[str, Any], destination: str
) -> Event | Sequence[Event] | None:
    """Transform ``event`` before it is delivered to the destination named ``destination``.

    Return the event (changed with ``event.model_copy(update={...})``, or as it came),
    ``None`` to drop it for that destination only, or a list of events to deliver instead
    (an empty list drops it too). ``options`` is the transform table's ``options``, read-only.

    A plain ``def`` only: transforms are CPU work, run for every event, and must not wait on
    the network (an ``async def`` implementation is refused when the plugin loads). Be
    deterministic: the same event and options must always give the same output (no clock, no
    randomness), because the router may transform one event more than once (a preview, a
    retry).

    The router validates what comes back (an invalid event fails that destination, as does an
    exception, with the reason in its result) and sets each event's ``message_id``: the
    original one for a single event, stable ids derived from it for a list. ``event`` is a
    copy: changing it in place cannot affect other destinations.
    """


@hookspec(firstresult=True)
def event_types(settings: DestinationSettings) -> Collection[EventType] | None:
    """The event types a destination with these ``settings`` takes; ``None`` for all. Optional.

    Events of other types are skipped for that destination (``report.skip_reasons`` says
    ``"unsupported type"``) instead of failing there and, in queued mode, filling the dead
    letter. Called once per destination when the router is built.
    """


@hookspec
def delivery_attempted(  # noqa: PLR0917 - pluggy passes hook arguments by keyword
    destination: str,
    message_id: str,
    outcome: str,
    attempt: int,
    duration_ms: float,
    error: str | None,
) -> None:
    """Observer: one attempt to deliver one event to ``destination`` finished. Optional.

    ``outcome`` is ``"delivered"``, ``"retrying"`` (direct mode retries now),
    ``"retry_later"`` (queued mode retries later) or ``"failed"`` (given up: a permanent
    refusal, or the retries ran out); ``error`` says why when it was not delivered (secrets
    masked). A batch attempt calls it once per event of the batch. Broadcast to every plugin
    that implements it; keep it quick (it runs on the router's loop) and never raise (an
    exception is logged and ignored).
    """


@hookspec
def dead_lettered(destination: str, message_id: str, error: str) -> None:
    """Observer: queued delivery put one event for ``destination`` in the dead letter. Optional.

    ``error`` is the reason stored with it (secrets masked). Broadcast like
    ``delivery_attempted``.
    """


# The hooks' shapes as types, so that mypy checks an implementation against its spec:
# ``_: SendEventHook = send_event`` in a plugin (or its tests) fails type checking when the
# implementation's parameters or return type do not fit. pluggy checks the names at runtime.


class DestinationSettingsHook(Protocol):
    def __call__(self) -> type[DestinationSettings]: ...


class SendEventHook(Protocol):
    def __call__(
        self, destination: Destination[Any], event: Event
    ) -> Delivery | Awaitable[Delivery]: ...


class SendBatchHook(Protocol):
    def __call__(
        self, destination: Destination[Any], events: Sequence[Event]
    ) -> Delivery | Awaitable[Delivery]: ...


class _SettingsBatchLimitsHook(Protocol):
    def __call__(self, settings: DestinationSettings) -> BatchLimits: ...


class _FixedBatchLimitsHook(Protocol):
    def __call__(self) -> BatchLimits: ...


# pluggy passes an implementation only the arguments it names, so both shapes fit the spec.
BatchLimitsHook = _SettingsBatchLimitsHook | _FixedBatchLimitsHook


class TransformEventHook(Protocol):
    def __call__(
        self, event: Event, options: Mapping[str, Any], destination: str
    ) -> Event | Sequence[Event] | None: ...


class EventTypesHook(Protocol):
    def __call__(self, settings: DestinationSettings) -> Collection[EventType] | None: ...


class DeliveryAttemptedHook(Protocol):
    def __call__(  # noqa: PLR0917 - the hook's shape
        self,
        destination: str,
        message_id: str,
        outcome: str,
        attempt: int,
        duration_ms: float,
        error: str | None,
    ) -> None: ...


class DeadLetteredHook(Protocol):
    def __call__(self, destination: str, message_id: str, error: str) -> None: ...

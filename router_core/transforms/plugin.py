"""``type = "plugin"``: a third party's ``transform_event`` hook, called and checked.

The plugin gets a deep copy of the event (changing it in place cannot reach what other
destinations receive) and read-only options. Whatever it returns is checked: an ``Event``,
a list of them, or ``None``. Each event it returns is validated again, and gets its
``message_id`` from the router: the original one for a single event, ids derived from it for
a split (so retries and dedup keep working, and the same input always gives the same ids).
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from router_core.errors import InvalidEventError
from router_core.events import Event
from router_core.plugins import LoadedPlugin

__all__ = ["PluginTransform", "TransformFailed", "describe", "split_message_id"]

# Fixed forever: derived ids must be the same in every version, process and run.
_SPLIT_NAMESPACE = uuid.UUID("7d0c6f3e-2b9a-5c1e-9f4d-1a6b8e3c5d70")


def split_message_id(message_id: str, index: int) -> str:
    """The ``message_id`` of event ``index`` (from 0) of those a transform split one into."""
    return str(uuid.uuid5(_SPLIT_NAMESPACE, f"{message_id}/{index}"))


class TransformFailed(Exception):
    """Why a transform failed (the pipeline turns it into a ``TransformError``)."""


def describe(exc: BaseException) -> str:
    """``"ValueError: the message"``, even when the exception's ``str()`` itself fails."""
    try:
        text = str(exc)
    except Exception:
        text = "(its message could not be read)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _frozen(value: Any) -> Any:
    """``value`` made read-only all the way down: a transform cannot change its options."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


class PluginTransform:
    """Calls one plugin's ``transform_event`` for one destination."""

    __slots__ = ("_call", "_destination", "_options", "name")

    def __init__(self, plugin: LoadedPlugin, options: Mapping[str, Any], destination: str) -> None:
        if plugin.transform_event is None:
            raise ValueError(f"plugin {plugin.name!r} does not implement the transform_event hook")
        self.name = plugin.name
        self._call = plugin.transform_event
        self._options: Mapping[str, Any] = _frozen(options)
        self._destination = destination

    def __call__(self, event: Event) -> tuple[Event, ...]:
        """The events to deliver (none: dropped). Raises ``TransformFailed``."""
        copy = event.model_copy(deep=True)
        try:
            result = self._call(event=copy, options=self._options, destination=self._destination)
        except Exception as exc:  # the plugin's failure fails this destination only
            raise TransformFailed(describe(exc)) from None
        items = _events_in(result)
        if len(items) == 1:
            item = items[0]
            if item is copy and item == event:
                return (event,)  # unchanged: the original object, no validation needed
            return (_checked(item, event.message_id),)
        return tuple(
            _checked(item, split_message_id(event.message_id, i)) for i, item in enumerate(items)
        )


def _events_in(result: object) -> list[Event]:
    """What ``transform_event`` returned, as a list of events; ``TransformFailed`` if not."""
    if result is None:
        return []
    if isinstance(result, Event):
        return [result]
    if isinstance(result, Sequence) and not isinstance(result, str | bytes):
        items = list(result)
        strays = sorted({type(item).__name__ for item in items if not isinstance(item, Event)})
        if strays:
            raise TransformFailed(f"returned a list holding {', '.join(strays)}, not only Events")
        return items
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: close it so Python does not warn
        raise TransformFailed(
            "returned an awaitable: transform_event must be a plain def (transforms are CPU work)"
        )
    kind = type(result).__name__
    raise TransformFailed(f"returned {kind}, not an Event, a list of Events or None")


def _checked(event: Event, message_id: str) -> Event:
    """``event`` validated from scratch, with ``message_id``; ``TransformFailed`` if invalid.

    A plugin may build events with ``model_copy(update=...)`` or ``model_construct``, which
    skip validation: this is where an invalid one is caught.
    """
    try:
        return Event.parse({**event.__dict__, "message_id": message_id})
    except InvalidEventError as exc:
        raise TransformFailed(f"returned an invalid event: {exc}") from None

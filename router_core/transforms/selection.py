"""``drop_events`` and ``rename``: which events a destination gets, and under what name."""

from __future__ import annotations

from fnmatch import fnmatchcase

from router_core.transforms.settings import DropEventsSettings, RenameSettings
from router_core.transforms.step import Fields

__all__ = ["DropEvents", "Rename"]


class DropEvents:
    """The ``drop_events`` transform.

    ``events`` patterns match as a destination's ``events`` filter does: against a track
    event's name and against every event's type; ``types`` lists types dropped whole.
    """

    __slots__ = ("_events", "_types")

    def __init__(self, settings: DropEventsSettings) -> None:
        self._events = settings.events
        self._types = frozenset(settings.types)

    def __call__(self, fields: Fields) -> Fields | None:
        kind = fields["type"]
        if kind in self._types:
            return None
        label = fields.get("event") if kind == "track" else kind
        for pattern in self._events:
            if fnmatchcase(kind, pattern) or (label and fnmatchcase(label, pattern)):
                return None
        return fields


class Rename:
    """The ``rename`` transform: a track event whose name is a key gets the value as name."""

    __slots__ = ("_names",)

    def __init__(self, settings: RenameSettings) -> None:
        self._names = dict(settings.events)

    def __call__(self, fields: Fields) -> Fields:
        if fields["type"] != "track":
            return fields
        new = self._names.get(fields.get("event") or "")
        if new is None or new == fields["event"]:
            return fields
        return {**fields, "event": new}

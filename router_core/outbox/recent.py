"""The events this process stored last, already validated, for its own workers.

``send()`` has the validated ``Event`` in hand when it stores the event's JSON; the workers
would otherwise parse and validate that JSON again, once per destination. They look here
first, and parse only what is not here (events stored by another process, or before a
restart, or pushed out by newer ones).

An entry is used only if its JSON is the one stored, so an event is never sent other than as
stored. Entries go once every destination took theirs, or oldest first past ``capacity``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from itertools import islice

from router_core.events import Event

__all__ = ["RecentEvents"]


@dataclass(slots=True)
class _Entry:
    payload: str
    event: Event
    uses: int


class RecentEvents:
    """A bounded map of message id to (stored JSON, event, destinations still to take it)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, event: Event, payload: str, uses: int) -> None:
        """Remember ``event`` stored as ``payload`` for ``uses`` destinations."""
        if uses <= 0 or self._capacity <= 0:
            return
        entries = self._entries
        with self._lock:
            entries[event.message_id] = _Entry(payload, event, uses)
            if len(entries) > self._capacity:
                # The oldest go, a few at a time so that not every put pays for it.
                for message_id in list(islice(entries, self._capacity // 64 + 1)):
                    del entries[message_id]

    def take(self, message_id: str, payload: str) -> Event | None:
        """The event stored as ``payload``, if remembered; one destination's use of it."""
        with self._lock:
            entry = self._entries.get(message_id)
            if entry is None or entry.payload != payload:
                return None
            entry.uses -= 1
            if entry.uses <= 0:
                del self._entries[message_id]
        return entry.event

    def clear(self) -> None:
        """Forget everything (after ``fork()``: the child's workers start afresh)."""
        with self._lock:
            self._entries.clear()

"""Stored events rebuilt once for all of this process's workers.

Each destination's worker claims the same events at about the same time, and each would
rebuild every one from its stored JSON (``Event.from_stored``, about 1.5 µs). The last few
thousand rebuilt are kept here so that the second destination takes the first one's.

Only the router's loop thread uses it (every worker task runs there), so it takes no lock;
after ``fork()`` the child starts with an empty one.
"""

from __future__ import annotations

from collections import OrderedDict

from router_core.events import Event
from router_core.outbox.store import ClaimedRow

__all__ = ["RebuiltEvents"]


class RebuiltEvents:
    """A bounded map from a stored event's (id, message id) to the event rebuilt from it."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # An id may be used again once its event is deleted; its message id tells them apart.
        self._events: OrderedDict[tuple[int, str], Event] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def get(self, row: ClaimedRow) -> Event:
        """The event ``row`` holds; ``ValueError``/``InvalidEventError`` when it cannot be
        read (nothing is kept then)."""
        key = (row.event_id, row.message_id)
        event = self._events.get(key)
        if event is None:
            event = Event.from_stored(row.payload)
            self._events[key] = event
            if len(self._events) > self._capacity:
                self._events.popitem(last=False)
        return event

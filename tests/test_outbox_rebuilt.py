"""Stored events are rebuilt once for every destination's worker (router_core.outbox.rebuilt)."""

from __future__ import annotations

import pytest

from router_core import Event, InvalidEventError
from router_core.outbox.rebuilt import RebuiltEvents
from router_core.outbox.store import ClaimedRow


def row(event_id: int, event: Event) -> ClaimedRow:
    payload = event.stored_json()
    return ClaimedRow(event_id, event.message_id, payload, len(payload), 0, 0.0)


def test_the_second_destination_gets_the_event_the_first_rebuilt() -> None:
    rebuilt = RebuiltEvents(capacity=10)
    event = Event.track("E", user_id="u1", properties={"n": 1})
    first = rebuilt.get(row(1, event))
    assert first == event
    assert rebuilt.get(row(1, event)) is first
    assert len(rebuilt) == 1


def test_an_id_used_again_by_another_event_is_not_confused_with_the_old_one() -> None:
    rebuilt = RebuiltEvents(capacity=10)
    old, new = Event.track("Old", user_id="u1"), Event.track("New", user_id="u2")
    assert rebuilt.get(row(7, old)).event == "Old"
    assert rebuilt.get(row(7, new)).event == "New"


def test_it_keeps_at_most_its_capacity_oldest_out_first() -> None:
    rebuilt = RebuiltEvents(capacity=3)
    events = [Event.track("E", user_id=f"u{i}") for i in range(5)]
    first = rebuilt.get(row(0, events[0]))
    for i, event in enumerate(events[1:], start=1):
        rebuilt.get(row(i, event))
    assert len(rebuilt) == 3
    assert rebuilt.get(row(0, events[0])) is not first  # pushed out, rebuilt again


def test_an_unreadable_row_raises_and_is_not_kept() -> None:
    rebuilt = RebuiltEvents(capacity=3)
    broken = ClaimedRow(1, "m-1", '{"type": "track"}', 17, 0, 0.0)
    with pytest.raises(InvalidEventError):
        rebuilt.get(broken)
    with pytest.raises(ValueError, match=r"(?i)expected"):
        rebuilt.get(ClaimedRow(2, "m-2", "not json", 8, 0, 0.0))
    assert len(rebuilt) == 0


@pytest.mark.parametrize("payload", ['{"type": [1]}', '{"type": {}}', "[1]", '"track"'])
def test_stored_json_of_the_wrong_shape_is_refused_as_invalid(payload: str) -> None:
    with pytest.raises(InvalidEventError):
        RebuiltEvents(capacity=3).get(ClaimedRow(1, "m-1", payload, len(payload), 0, 0.0))

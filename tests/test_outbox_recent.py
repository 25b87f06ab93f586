"""The cache of recently stored events the queue's workers use instead of re-parsing JSON."""

from __future__ import annotations

from router_core import Event
from router_core.outbox.recent import RecentEvents


def stored(name: str) -> tuple[Event, str]:
    event = Event.track(name, user_id="u")
    return event, event.model_dump_json()


def test_each_destination_takes_the_event_once_then_it_is_gone() -> None:
    recent = RecentEvents(capacity=10)
    event, payload = stored("A")
    recent.put(event, payload, uses=2)
    assert recent.take(event.message_id, payload) is event
    assert len(recent) == 1
    assert recent.take(event.message_id, payload) is event
    assert len(recent) == 0
    assert recent.take(event.message_id, payload) is None


def test_an_entry_is_used_only_for_the_json_actually_stored() -> None:
    recent = RecentEvents(capacity=10)
    event, payload = stored("A")
    recent.put(event, payload, uses=1)
    assert recent.take(event.message_id, payload.replace('"A"', '"B"')) is None
    assert recent.take(event.message_id, payload) is event


def test_the_oldest_go_past_capacity() -> None:
    recent = RecentEvents(capacity=64)
    events = [stored(f"E{i}") for i in range(100)]
    for event, payload in events:
        recent.put(event, payload, uses=1)
    assert len(recent) <= 64
    first, first_payload = events[0]
    last, last_payload = events[-1]
    assert recent.take(first.message_id, first_payload) is None
    assert recent.take(last.message_id, last_payload) is last


def test_nothing_is_kept_for_no_destination_or_no_capacity() -> None:
    event, payload = stored("A")
    none = RecentEvents(capacity=0)
    none.put(event, payload, uses=1)
    unused = RecentEvents(capacity=10)
    unused.put(event, payload, uses=0)
    assert len(none) == len(unused) == 0


def test_clear_forgets_everything() -> None:
    recent = RecentEvents(capacity=10)
    event, payload = stored("A")
    recent.put(event, payload, uses=3)
    recent.clear()
    assert recent.take(event.message_id, payload) is None

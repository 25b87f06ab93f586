"""Property test: over arbitrary valid events, path transforms always give valid events."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_core import Event, TransformPipeline

KEYS = st.sampled_from(["a", "ab", "secret", "email", "ip", "url", "utm_source", "b", "x.y"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
URLS = st.builds(
    lambda path, query, fragment: f"https://example.com/{path}{query}{fragment}",
    st.text("abc/%", max_size=6),
    st.sampled_from(["", "?", "?a=1", "?utm_source=x&a=2", "?a&&utm_source"]),
    st.sampled_from(["", "#f", "#f?a=1"]),
)
IPS = st.ip_addresses().map(str) | st.text(max_size=8)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS | URLS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=5)
CONTEXTS = st.fixed_dictionaries(
    {},
    optional={
        "ip": IPS,
        "page": st.fixed_dictionaries({}, optional={"url": URLS, "search": URLS, "x": JSON}),
        "other": JSON,
    },
)
IDS = st.text(min_size=1, max_size=10)


@st.composite
def events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]))
    data: dict[str, Any] = {
        "type": kind,
        "properties": draw(OBJECTS),
        "traits": draw(OBJECTS),
        "context": draw(CONTEXTS),
        "user_id": draw(IDS | st.none()),
    }
    if kind != "alias" and data["user_id"] is None:
        data["anonymous_id"] = draw(IDS)
    if kind == "track":
        data["event"] = draw(st.sampled_from(["Order Completed", "Debug tap", "x"]))
    if kind == "group":
        data["group_id"] = draw(IDS)
    if kind == "alias":
        data["previous_id"] = draw(IDS)
        data["user_id"] = draw(IDS)
    return Event.parse(data)


PIPELINE = TransformPipeline.build(
    "posthog",
    [
        {"type": "drop", "paths": ["properties.*.secret", "traits.**.email", "context.other"]},
        {"type": "allow", "paths": ["properties.a*", "properties.url", "properties.**.b"]},
        {"type": "scrub_ip", "mode": "truncate"},
        {"type": "strip_query", "params": ["utm_*"]},
        {"type": "strip_query", "paths": ["context.page.url", "properties.**.url"]},
        {"type": "drop_events", "events": ["Debug *"], "types": ["screen"]},
    ],
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_path_transforms_always_give_a_valid_event_or_a_drop(event: Event) -> None:
    assert PIPELINE is not None
    outcome = PIPELINE.apply(event)
    assert outcome.ok, outcome.error
    if not outcome.events:
        assert outcome.dropped == "dropped by transform drop_events"
        assert event.type == "screen" or (event.event or "").startswith("Debug ")
        return
    (out,) = outcome.events
    assert Event.parse(out.model_dump()) == out  # valid, whatever the input held
    assert out.message_id == event.message_id
    assert (out.type, out.user_id, out.anonymous_id) == (
        event.type,
        event.user_id,
        event.anonymous_id,
    )
    for key, value in out.properties.items():  # allowed: a*, url, and what holds a "b"
        assert key.startswith("a") or key in ("url", "b") or isinstance(value, dict | list)
    assert "other" not in out.context
    ip = out.context.get("ip")
    assert ip is None or ip.endswith((".0", "::", ":0"))
    page_url = out.context.get("page", {}).get("url")
    assert page_url is None or "?" not in page_url.split("#")[0]
    assert PIPELINE.apply(event) == outcome  # deterministic

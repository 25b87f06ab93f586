"""The PostHog emulator enforces PostHog's capture API rules over real loopback HTTP."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from router_core.sandbox import PostHogEmulator

API_KEY = "phc_test_0123456789abcdef"


@pytest.fixture
def posthog() -> Iterator[PostHogEmulator]:
    with PostHogEmulator() as em:
        yield em


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def event(name: str = "Order Completed", **fields: Any) -> dict[str, Any]:
    """A valid capture event; ``fields`` override (None removes a field)."""
    base: dict[str, Any] = {
        "event": name,
        "distinct_id": "user_1",
        "uuid": str(uuid.uuid4()),
        "timestamp": "2024-01-01T00:00:00+00:00",
        "properties": {"$lib": "event-router", "total": 9.5},
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def post_batch(
    client: httpx.Client, em: PostHogEmulator, events: list[Any], key: str | None = API_KEY
) -> httpx.Response:
    body: dict[str, Any] = {"batch": events, "historical_migration": False}
    if key is not None:
        body["api_key"] = key
    return client.post(f"{em.url}/batch/", json=body)


def test_batch_is_recorded(posthog: PostHogEmulator, client: httpx.Client) -> None:
    sent = event()

    response = post_batch(client, posthog, [sent])

    assert response.status_code == 200
    assert response.json() == {"status": 1}
    (got,) = posthog.events
    assert got.vendor == "posthog"
    assert got.message_id == sent["uuid"]
    assert got.event == "Order Completed"
    assert got.type == "track"
    assert got.distinct_id == "user_1"
    assert got.payload == sent
    assert got.key == "phc_…cdef"
    assert got.path == "/batch/"


def test_spec_event_names_map_to_types(posthog: PostHogEmulator, client: httpx.Client) -> None:
    names = ["$identify", "$pageview", "$screen", "$groupidentify", "$create_alias", "Signed Up"]

    post_batch(client, posthog, [event(name) for name in names])

    assert [e.type for e in posthog.events] == [
        "identify",
        "page",
        "screen",
        "group",
        "alias",
        "track",
    ]


@pytest.mark.parametrize("path", ["/i/v0/e/", "/i/v0/e", "/e/", "/capture/", "/track/"])
def test_single_event_endpoints_take_the_key_from_the_event(
    posthog: PostHogEmulator, client: httpx.Client, path: str
) -> None:
    sent = {**event(), "api_key": API_KEY}

    response = client.post(f"{posthog.url}{path}", json=sent)

    assert response.status_code == 200
    (got,) = posthog.events
    assert got.path == path
    assert got.payload["api_key"] == "phc_…cdef"
    assert API_KEY not in client.get(f"{posthog.url}/_events").text


def test_batch_without_trailing_slash(posthog: PostHogEmulator, client: httpx.Client) -> None:
    response = client.post(f"{posthog.url}/batch", json={"api_key": API_KEY, "batch": [event()]})

    assert response.status_code == 200


def test_token_field_is_a_key_too(posthog: PostHogEmulator, client: httpx.Client) -> None:
    response = client.post(f"{posthog.url}/batch/", json={"token": API_KEY, "batch": [event()]})

    assert response.status_code == 200
    assert posthog.events[0].key == "phc_…cdef"


def test_array_of_events_with_token_in_properties(
    posthog: PostHogEmulator, client: httpx.Client
) -> None:
    # posthog-js posts a bare array, each event carrying the key as properties.token.
    sent = [event(properties={"token": API_KEY, "n": i}) for i in range(3)]

    response = client.post(f"{posthog.url}/e/", json=sent)

    assert response.status_code == 200
    assert len(posthog.events) == 3
    assert all(e.payload["properties"]["token"] == "phc_…cdef" for e in posthog.events)
    assert API_KEY not in client.get(f"{posthog.url}/_events").text


def test_events_with_different_keys_are_401(posthog: PostHogEmulator, client: httpx.Client) -> None:
    sent = [event(api_key=API_KEY), event(api_key="phc_another_key_000000")]

    response = client.post(f"{posthog.url}/e/", json=sent)

    assert response.status_code == 401
    assert posthog.events == []


def test_missing_key_is_401(posthog: PostHogEmulator, client: httpx.Client) -> None:
    response = post_batch(client, posthog, [event()], key=None)

    assert response.status_code == 401
    assert response.json()["code"] == "missing_key"
    assert "detail" in response.json()
    assert posthog.events == []


def test_personal_key_is_401(posthog: PostHogEmulator, client: httpx.Client) -> None:
    personal = "phx_personal_0123456789abcdef"

    response = post_batch(client, posthog, [event()], key=personal)

    assert response.status_code == 401
    assert response.json()["code"] == "personal_api_key"
    assert personal not in response.text
    assert posthog.events == []


def test_any_project_key_is_accepted_when_api_keys_is_none(
    posthog: PostHogEmulator, client: httpx.Client
) -> None:
    response = post_batch(client, posthog, [event()], key="phc_whatever_key_99999")

    assert response.status_code == 200


def test_only_listed_api_keys_are_accepted(client: httpx.Client) -> None:
    with PostHogEmulator(api_keys={API_KEY}) as em:
        wrong = post_batch(client, em, [event()], key="phc_other_0000000000000")
        right = post_batch(client, em, [event()])

        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_key"
        assert right.status_code == 200
        assert len(em.events) == 1


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (event(), "user_1"),
        (event(distinct_id=None, **{"$distinct_id": "dollar_id"}), "dollar_id"),
        (event(distinct_id=None, properties={"distinct_id": "prop_id"}), "prop_id"),
        (event(distinct_id="top", properties={"distinct_id": "prop"}), "top"),
        (event(distinct_id=42), "42"),
    ],
)
def test_distinct_id_sources(
    posthog: PostHogEmulator, client: httpx.Client, sent: dict[str, Any], expected: str
) -> None:
    response = post_batch(client, posthog, [sent])

    assert response.status_code == 200
    assert posthog.events[0].distinct_id == expected


@pytest.mark.parametrize(
    ("sent", "names"),
    [
        (event(distinct_id=None), "distinct_id"),
        (event(distinct_id=""), "distinct_id"),
        (event(event=None), "event"),
        (event(event=""), "event"),
        (event(uuid="not-a-uuid"), "uuid"),
        (event(uuid=12), "uuid"),
        (event(properties=["x"]), "properties"),
        ("just a string", "must be a JSON object"),
    ],
)
def test_an_event_breaking_a_rule_is_400_naming_it(
    posthog: PostHogEmulator, client: httpx.Client, sent: Any, names: str
) -> None:
    response = post_batch(client, posthog, [event(), sent])

    assert response.status_code == 400
    assert names in response.json()["detail"]
    assert "batch[1]" in response.json()["detail"]
    assert posthog.events == []  # the valid first event is not recorded either


def test_empty_batch_is_400(posthog: PostHogEmulator, client: httpx.Client) -> None:
    response = post_batch(client, posthog, [])

    assert response.status_code == 400
    assert response.json()["code"] == "empty_batch"


def test_missing_uuid_is_assigned_one(posthog: PostHogEmulator, client: httpx.Client) -> None:
    response = post_batch(client, posthog, [event(uuid=None)])

    assert response.status_code == 200
    uuid.UUID(posthog.message_ids()[0])  # raises if it is not a UUID


def test_event_over_1_mb_is_413(posthog: PostHogEmulator, client: httpx.Client) -> None:
    big = event(properties={"blob": "x" * (1024 * 1024)})

    response = post_batch(client, posthog, [event(), big])

    assert response.status_code == 413
    assert response.json()["code"] == "event_too_large"
    assert posthog.events == []


def test_request_over_20_mb_is_413(posthog: PostHogEmulator, client: httpx.Client) -> None:
    body = json.dumps({"api_key": API_KEY, "batch": [event()]}).encode()
    body += b" " * (20 * 1024 * 1024)  # whitespace is valid JSON: only the size is wrong

    response = client.post(f"{posthog.url}/batch/", content=body)

    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert posthog.events == []


def test_gzip_bomb_over_20_mb_is_413(posthog: PostHogEmulator, client: httpx.Client) -> None:
    text = json.dumps({"api_key": API_KEY, "batch": [event()]}) + " " * (21 * 1024 * 1024)

    response = client.post(
        f"{posthog.url}/batch/",
        content=gzip.compress(text.encode()),
        headers={"Content-Encoding": "gzip"},
    )

    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/batch/", {"Content-Encoding": "gzip"}),  # posthog-python
        ("/e/?compression=gzip-js&ver=1.0", {}),  # posthog-js
        ("/batch/", {}),  # no hint at all: PostHog sniffs the gzip magic bytes
    ],
)
def test_gzip_bodies_are_accepted(
    posthog: PostHogEmulator, client: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    sent = event()
    body = gzip.compress(json.dumps({"api_key": API_KEY, "batch": [sent]}).encode())

    response = client.post(f"{posthog.url}{path}", content=body, headers=headers)

    assert response.status_code == 200
    assert posthog.message_ids() == [sent["uuid"]]


def test_unsupported_compression_is_400(posthog: PostHogEmulator, client: httpx.Client) -> None:
    response = client.post(
        f"{posthog.url}/e/?compression=lz64", json={"api_key": API_KEY, "batch": [event()]}
    )

    assert response.status_code == 400
    assert "lz64" in response.json()["detail"]


@pytest.mark.parametrize(
    "body", [b"{broken", b"", b"42", b'{"api_key": "phc_x", "batch": {"event": "e"}}']
)
def test_bad_json_is_400(posthog: PostHogEmulator, client: httpx.Client, body: bytes) -> None:
    response = client.post(f"{posthog.url}/batch/", content=body)

    assert response.status_code == 400
    assert posthog.events == []


def test_v1_capture_path_is_not_emulated(posthog: PostHogEmulator, client: httpx.Client) -> None:
    response = client.post(f"{posthog.url}/i/v1/analytics/events", json={})

    assert response.status_code == 404


def test_events_endpoint_lists_what_was_accepted(
    posthog: PostHogEmulator, client: httpx.Client
) -> None:
    sent = [event("$pageview"), event("Signed Up")]
    post_batch(client, posthog, sent)

    feed = client.get(f"{posthog.url}/_events").json()

    assert list(feed) == ["posthog"]
    assert [e["message_id"] for e in feed["posthog"]] == [e["uuid"] for e in sent]
    assert feed["posthog"][0]["type"] == "page"
    assert feed["posthog"][1]["payload"] == sent[1]

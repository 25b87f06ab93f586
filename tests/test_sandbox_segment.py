"""The Segment emulator enforces Segment's HTTP Tracking API rules over real loopback HTTP."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from router_core.sandbox import SegmentEmulator

WRITE_KEY = "wk_test_0123456789abcdef"


@pytest.fixture
def segment() -> Iterator[SegmentEmulator]:
    with SegmentEmulator() as em:
        yield em


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


_REQUIRED: dict[str, dict[str, Any]] = {
    "track": {"event": "Order Completed", "properties": {"total": 9.5}},
    "identify": {"traits": {"plan": "pro"}},
    "page": {"name": "Home"},
    "screen": {"name": "Main"},
    "group": {"groupId": "acme"},
    "alias": {"previousId": "anon_1"},
}


def message(kind: str = "track", **fields: Any) -> dict[str, Any]:
    """A valid message of ``kind``; ``fields`` override (None removes a field)."""
    base: dict[str, Any] = {"type": kind, "userId": "user_1", "messageId": f"m-{kind}"}
    base.update(_REQUIRED[kind])
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def post_batch(
    client: httpx.Client,
    em: SegmentEmulator,
    messages: list[Any],
    key: str | None = WRITE_KEY,
    **envelope: Any,
) -> httpx.Response:
    url, body = f"{em.url}/v1/batch", {"batch": messages, **envelope}
    if key is None:
        return client.post(url, json=body)
    return client.post(url, json=body, auth=(key, ""))


def test_batch_with_basic_auth_is_recorded(segment: SegmentEmulator, client: httpx.Client) -> None:
    sent = message("track", properties={"total": 99.99, "items": ["a", "b"]})

    response = post_batch(client, segment, [sent], sentAt="2024-01-01T00:00:00+00:00")

    assert response.status_code == 200
    assert response.json() == {"success": True}
    (event,) = segment.events
    assert event.vendor == "segment"
    assert event.type == "track"
    assert event.event == "Order Completed"
    assert event.distinct_id == "user_1"
    assert event.message_id == "m-track"
    assert event.payload == sent
    assert event.key == "…cdef"
    assert event.received_at.tzinfo is not None
    assert event.path == "/v1/batch"
    assert segment.requests == 1


def test_write_key_in_body_is_accepted_and_masked(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    response = post_batch(client, segment, [message()], key=None, writeKey=WRITE_KEY)

    assert response.status_code == 200
    assert segment.events[0].key == "…cdef"
    dump = client.get(f"{segment.url}/_events").text + client.get(f"{segment.url}/_requests").text
    assert WRITE_KEY not in dump


def test_write_key_inside_a_single_message_is_masked(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    body = {**message("identify"), "writeKey": WRITE_KEY}

    response = client.post(f"{segment.url}/v1/identify", json=body)

    assert response.status_code == 200
    assert segment.events[0].payload["writeKey"] == "…cdef"
    assert WRITE_KEY not in client.get(f"{segment.url}/_events").text


def test_missing_write_key_is_401_and_records_nothing(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    response = post_batch(client, segment, [message()], key=None)

    assert response.status_code == 401
    assert response.json()["code"] == "missing_key"
    assert segment.events == []


def test_empty_basic_user_falls_back_to_missing(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    response = post_batch(client, segment, [message()], key="")

    assert response.status_code == 401


def test_any_non_empty_key_is_accepted_when_write_keys_is_none(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    # Real Segment answers 200 for a wrong write key; write_keys=None mirrors that.
    response = post_batch(client, segment, [message()], key="not-a-real-key")

    assert response.status_code == 200
    assert segment.events[0].key == "…"  # short keys are masked whole


def test_only_listed_write_keys_are_accepted(client: httpx.Client) -> None:
    with SegmentEmulator(write_keys={WRITE_KEY}) as em:
        wrong = post_batch(client, em, [message()], key="wk_other_0000000000000")
        right = post_batch(client, em, [message()])

        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_key"
        assert "wk_other" not in wrong.text
        assert right.status_code == 200
        assert len(em.events) == 1


@pytest.mark.parametrize("header", ["Bearer some-oauth-token", WRITE_KEY, "Basic %%%"])
def test_other_authorization_is_401_without_echoing_it(
    segment: SegmentEmulator, client: httpx.Client, header: str
) -> None:
    response = client.post(
        f"{segment.url}/v1/batch",
        json={"batch": [message()]},
        headers={"Authorization": header},
    )

    assert response.status_code == 401
    credentials = header.rsplit(maxsplit=1)[-1]
    assert "Basic" in response.json()["message"]
    assert credentials not in response.text
    assert credentials not in str(segment.request_log)


def test_every_message_type_is_accepted(segment: SegmentEmulator, client: httpx.Client) -> None:
    kinds = ["track", "identify", "page", "screen", "group", "alias"]

    response = post_batch(client, segment, [message(kind) for kind in kinds])

    assert response.status_code == 200
    assert [e.type for e in segment.events] == kinds
    assert [e.event for e in segment.events] == [
        "Order Completed",
        None,
        "Home",
        "Main",
        None,
        None,
    ]


def test_anonymous_id_alone_identifies_a_message(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    response = post_batch(client, segment, [message(userId=None, anonymousId="anon_9")])

    assert response.status_code == 200
    assert segment.events[0].distinct_id == "anon_9"


@pytest.mark.parametrize(
    ("sent", "names"),
    [
        (message("track", event=None), "event"),
        (message("track", event=""), "event"),
        (message("identify", userId=None), "userId or anonymousId"),
        (message("page", userId=None), "userId or anonymousId"),
        (message("screen", userId=None, anonymousId=""), "userId or anonymousId"),
        (message("group", groupId=None), "groupId"),
        (message("group", userId=None), "userId or anonymousId"),
        (message("alias", previousId=None), "previousId"),
        (message("alias", userId=None), "userId"),
        (message("track", type="purchase"), "type"),
        (message("track", type=None), "type"),
        (message("track", messageId="x" * 101), "messageId"),
        (message("track", messageId=7), "messageId"),
        (message("track", userId=True), "userId"),
        (message("track", properties=["not", "an", "object"]), "properties"),
        ("not an object", "must be a JSON object"),
    ],
)
def test_a_message_breaking_a_rule_is_400_naming_it(
    segment: SegmentEmulator, client: httpx.Client, sent: Any, names: str
) -> None:
    response = post_batch(client, segment, [sent])

    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert names in body["message"]
    assert "batch[0]" in body["message"]
    assert segment.events == []


def test_message_id_of_exactly_100_characters_is_accepted(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    response = post_batch(client, segment, [message(messageId="x" * 100)])

    assert response.status_code == 200
    assert segment.message_ids() == ["x" * 100]


def test_missing_message_id_is_assigned_one(segment: SegmentEmulator, client: httpx.Client) -> None:
    response = post_batch(client, segment, [message(messageId=None)])

    assert response.status_code == 200
    assert segment.message_ids()[0].startswith("api-")


def test_numeric_user_id_is_stringified(segment: SegmentEmulator, client: httpx.Client) -> None:
    response = post_batch(client, segment, [message(userId=12345)])

    assert response.status_code == 200
    assert segment.events[0].distinct_id == "12345"


def test_one_bad_message_rejects_the_whole_batch(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    response = post_batch(client, segment, [message(), message("group", groupId=None)])

    assert response.status_code == 400
    assert "batch[1]" in response.json()["message"]
    assert segment.events == []
    assert segment.request_log[0].status == 400


@pytest.mark.parametrize("kind", ["track", "identify", "page", "screen", "group", "alias"])
def test_single_message_endpoints(
    segment: SegmentEmulator, client: httpx.Client, kind: str
) -> None:
    sent = message(kind, type=None)  # the path says what it is

    response = client.post(f"{segment.url}/v1/{kind}", json=sent, auth=(WRITE_KEY, ""))

    assert response.status_code == 200
    (event,) = segment.events
    assert event.type == kind
    assert event.path == f"/v1/{kind}"
    assert event.payload == sent


def test_single_endpoint_checks_its_rules(segment: SegmentEmulator, client: httpx.Client) -> None:
    response = client.post(
        f"{segment.url}/v1/track", json=message(event=None), auth=(WRITE_KEY, "")
    )

    assert response.status_code == 400
    assert "track needs event" in response.json()["message"]


def test_single_endpoint_refuses_a_different_type(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    response = client.post(
        f"{segment.url}/v1/track", json=message("identify"), auth=(WRITE_KEY, "")
    )

    assert response.status_code == 400
    assert "identify" in response.json()["message"]


def test_message_over_32_kb_is_400(segment: SegmentEmulator, client: httpx.Client) -> None:
    big = message(properties={"blob": "x" * (32 * 1024)})

    response = post_batch(client, segment, [message(), big])

    assert response.status_code == 400
    assert response.json()["code"] == "message_too_large"
    assert "batch[1]" in response.json()["message"]
    assert segment.events == []


def test_message_just_under_32_kb_is_accepted(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    sent = message(properties={"blob": ""})
    overhead = len(json.dumps(sent, separators=(",", ":")))
    sent["properties"]["blob"] = "x" * (32 * 1024 - overhead)

    response = post_batch(client, segment, [sent])

    assert response.status_code == 200


def test_request_over_500_kb_is_400(segment: SegmentEmulator, client: httpx.Client) -> None:
    # Each message is under 32 KB; together they are over 500 KB.
    messages = [message(messageId=f"m{i}", properties={"blob": "x" * 30_000}) for i in range(18)]

    response = post_batch(client, segment, messages)

    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"
    assert segment.events == []


def test_batch_of_2500_is_accepted_and_2501_refused(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    small = {"type": "track", "event": "e", "userId": "u"}

    over = post_batch(client, segment, [small] * 2501)
    at_limit = post_batch(client, segment, [small] * 2500)

    assert over.status_code == 400
    assert over.json()["code"] == "batch_too_large"
    assert at_limit.status_code == 200
    assert len(segment.events) == 2500


def test_gzip_body_is_accepted(segment: SegmentEmulator, client: httpx.Client) -> None:
    body = gzip.compress(json.dumps({"batch": [message()], "writeKey": WRITE_KEY}).encode())

    response = client.post(
        f"{segment.url}/v1/batch",
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )

    assert response.status_code == 200
    assert segment.message_ids() == ["m-track"]


def test_gzip_body_over_500_kb_once_inflated_is_400(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    padded = json.dumps({"batch": [message()], "writeKey": WRITE_KEY}) + " " * 600_000
    body = gzip.compress(padded.encode())
    assert len(body) < 100_000  # small on the wire, too big inflated

    response = client.post(
        f"{segment.url}/v1/batch", content=body, headers={"Content-Encoding": "gzip"}
    )

    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"


def test_broken_gzip_is_400(segment: SegmentEmulator, client: httpx.Client) -> None:
    response = client.post(
        f"{segment.url}/v1/batch",
        content=b"\x1f\x8b definitely not gzip",
        headers={"Content-Encoding": "gzip"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_gzip"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"batch": [], "x": NaN}', "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[1, 2]", "invalid_request"),
        (b'{"batch": {"type": "track"}}', "invalid_request"),
    ],
)
def test_bad_json_is_400(
    segment: SegmentEmulator, client: httpx.Client, body: bytes, code: str
) -> None:
    response = client.post(f"{segment.url}/v1/batch", content=body, auth=(WRITE_KEY, ""))

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert segment.events == []


def test_chunked_body_is_read(segment: SegmentEmulator, client: httpx.Client) -> None:
    data = json.dumps({"batch": [message(), message("identify")]}).encode()
    chunks = iter([data[:10], data[10:50], data[50:]])  # an iterator makes httpx send chunks

    response = client.post(f"{segment.url}/v1/batch", content=chunks, auth=(WRITE_KEY, ""))

    assert response.status_code == 200
    assert segment.message_ids() == ["m-track", "m-identify"]


def test_unknown_path_is_404_and_counted(segment: SegmentEmulator, client: httpx.Client) -> None:
    response = client.post(f"{segment.url}/v2/batch", json={}, auth=(WRITE_KEY, ""))

    assert response.status_code == 404
    assert segment.requests == 1
    assert segment.events == []


def test_events_endpoint_lists_what_was_accepted(
    segment: SegmentEmulator, client: httpx.Client
) -> None:
    post_batch(client, segment, [message(), message("page")])

    feed = client.get(f"{segment.url}/_events").json()

    assert list(feed) == ["segment"]
    assert [e["message_id"] for e in feed["segment"]] == ["m-track", "m-page"]
    assert feed["segment"][0]["payload"]["event"] == "Order Completed"
    assert feed["segment"][1]["type"] == "page"
    assert segment.requests == 1  # the viewer read is not an ingestion request

"""The viewer's HTTP API: the page and its assets, the ``/_feed`` cursor, ``POST /_clear``.

What the page does with them in a browser is tested in test_sandbox_browser.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from router_core.sandbox import Sandbox, mask_key

WRITE_KEY = "wk_view_0123456789abcdef"
OTHER_WRITE_KEY = "wk_else_0123456789abc999"
API_KEY = "phc_view_0123456789abcdef"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(write_keys={WRITE_KEY}) as sandbox:
        yield sandbox


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def track(message_id: str, event: str = "Order Completed", user: str = "u1") -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": user, "messageId": message_id}


def send_segment(
    client: httpx.Client, sb: Sandbox, *messages: dict[str, Any], key: str = WRITE_KEY
) -> httpx.Response:
    return client.post(f"{sb.segment.url}/v1/batch", json={"batch": list(messages)}, auth=(key, ""))


def send_posthog(client: httpx.Client, sb: Sandbox, name: str) -> httpx.Response:
    body = {"api_key": API_KEY, "batch": [{"event": name, "distinct_id": "u1"}]}
    return client.post(f"{sb.posthog.url}/batch/", json=body)


def feed(client: httpx.Client, url: str, **params: str) -> dict[str, Any]:
    response = client.get(f"{url}/_feed", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def sources(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {source["vendor"]: source for source in answer["sources"]}


# -- the page ---------------------------------------------------------------------------------


def test_the_page_and_its_assets_come_from_the_sandbox_under_a_strict_csp(
    sb: Sandbox, client: httpx.Client
) -> None:
    send_segment(client, sb, track("m1", event="Secret Plan"))
    for url in (sb.viewer_url, sb.segment.url, sb.posthog.url):
        page = client.get(f"{url}/")
        assert page.status_code == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "Secret Plan" not in page.text  # events reach the page only through /_feed

        script = client.get(f"{url}/_static/viewer.js")
        style = client.get(f"{url}/_static/viewer.css")
        assert script.headers["Content-Type"].startswith("text/javascript")
        assert style.headers["Content-Type"].startswith("text/css")
        assert "/_feed" in script.text
        # Nothing from the network: every URL the page names is on the sandbox itself.
        for text in (page.text, script.text, style.text):
            assert "http://" not in text.replace("http://127.0.0.1", "")
            assert "https://" not in text


# -- /_feed -----------------------------------------------------------------------------------


def test_first_answer_has_everything_oldest_first_across_vendors(
    sb: Sandbox, client: httpx.Client
) -> None:
    send_segment(client, sb, track("s1", event="First"))
    send_posthog(client, sb, "Second")
    send_segment(client, sb, track("s2", event="Third"), track("s3", event="Fourth"))

    answer = feed(client, sb.viewer_url)

    assert [e["event"] for e in answer["entries"]] == ["First", "Second", "Third", "Fourth"]
    assert [e["vendor"] for e in answer["entries"]] == ["segment", "posthog", "segment", "segment"]
    assert {e["kind"] for e in answer["entries"]} == {"event"}
    assert len({e["id"] for e in answer["entries"]}) == 4
    assert answer["entries"][0]["payload"]["messageId"] == "s1"
    assert answer["title"] == "event-router sandbox"
    by_vendor = sources(answer)
    assert by_vendor["segment"]["url"] == sb.segment.url
    assert by_vendor["segment"]["events"] == 3
    assert by_vendor["posthog"]["events"] == 1
    assert all(source["reset"] for source in answer["sources"])


def test_the_cursor_brings_only_what_is_new(sb: Sandbox, client: httpx.Client) -> None:
    send_segment(client, sb, track("old"))
    first = feed(client, sb.viewer_url)

    quiet = feed(client, sb.viewer_url, since=first["cursor"])
    send_posthog(client, sb, "New One")
    news = feed(client, sb.viewer_url, since=quiet["cursor"])

    assert quiet["entries"] == []
    assert quiet["cursor"] == first["cursor"]
    assert [e["event"] for e in news["entries"]] == ["New One"]
    assert not any(source["reset"] for source in news["sources"])


def test_refused_requests_are_entries_with_status_reason_and_masked_key(
    sb: Sandbox, client: httpx.Client
) -> None:
    send_segment(client, sb, track("wrong"), key=OTHER_WRITE_KEY)
    send_segment(client, sb, {**track("big"), "properties": {"blob": "x" * 40_000}})
    client.post(f"{sb.posthog.url}/batch/", content=b"{not json")
    sb.posthog.faults.set(statuses=[503])
    send_posthog(client, sb, "Faulted")
    sb.segment.faults.set(drop_connections=1)
    with pytest.raises(httpx.TransportError):
        send_segment(client, sb, track("dropped"))

    answer = feed(client, sb.viewer_url)
    seen = [
        (e["vendor"], e["status"], e["outcome"], e["key"])
        for e in answer["entries"]
        if e["kind"] == "request"
    ]

    assert seen == [
        ("segment", 401, "key", mask_key(OTHER_WRITE_KEY)),
        ("segment", 400, "too_large", mask_key(WRITE_KEY)),
        ("posthog", 400, "malformed", None),
        ("posthog", 503, "fault", None),
        ("segment", None, "fault", None),
    ]
    wrong, big, malformed, faulted, dropped = (
        e for e in answer["entries"] if e["kind"] == "request"
    )
    assert wrong["error"] == "write key is not one this emulator accepts"
    assert wrong["code"] == "invalid_key"
    assert "32,768-byte" in big["error"]
    assert "not valid JSON" in malformed["error"]
    assert faulted["fault"] == "injected status 503"
    assert dropped["fault"] == "dropped connection"
    assert [e["kind"] for e in answer["entries"]].count("event") == 0
    assert sources(answer)["segment"]["refused"] == 3
    assert OTHER_WRITE_KEY not in client.get(f"{sb.viewer_url}/_feed").text
    assert mask_key(OTHER_WRITE_KEY) == "…c999"


def test_a_personal_posthog_key_is_shown_as_one(client: httpx.Client) -> None:
    personal = "phx_personal_0123456789abcdef"
    with Sandbox() as sb:
        client.post(
            f"{sb.posthog.url}/batch/",
            json={"api_key": personal, "batch": [{"event": "e", "distinct_id": "u"}]},
        )
        (entry,) = feed(client, sb.posthog.url)["entries"]

    assert entry["key"] == "phx_…cdef"
    assert entry["code"] == "personal_api_key"
    assert entry["outcome"] == "key"


def test_limit_keeps_the_newest_and_counts_what_it_left_out(
    sb: Sandbox, client: httpx.Client
) -> None:
    send_segment(client, sb, *(track(f"m{i}", event=f"E{i}") for i in range(5)))

    answer = feed(client, sb.viewer_url, limit="2")
    rest = feed(client, sb.viewer_url, since=answer["cursor"])

    assert [e["event"] for e in answer["entries"]] == ["E3", "E4"]
    assert sources(answer)["segment"]["skipped"] == 3
    assert sources(answer)["segment"]["events"] == 5
    assert rest["entries"] == []


def test_an_emulator_serves_a_feed_of_its_own(sb: Sandbox, client: httpx.Client) -> None:
    send_segment(client, sb, track("s1"))
    send_posthog(client, sb, "Elsewhere")

    answer = feed(client, sb.segment.url)

    assert answer["title"] == "segment emulator"
    assert [s["vendor"] for s in answer["sources"]] == ["segment"]
    assert [e["message_id"] for e in answer["entries"]] == ["s1"]
    assert sb.segment.requests == 1  # reading the feed is not an ingestion request


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "bogus"}, "'bogus' is not NAME:GENERATION:EVENTS:REQUESTS"),
        ({"since": "mixpanel:ab12:1:1"}, "no emulator named 'mixpanel'"),
        ({"limit": "0"}, "limit must be from 1 to 5000"),
        ({"limit": "lots"}, "limit: 'lots' is not a whole number"),
    ],
)
def test_a_bad_feed_query_is_a_400_naming_it(
    sb: Sandbox, client: httpx.Client, params: dict[str, str], message: str
) -> None:
    response = client.get(f"{sb.viewer_url}/_feed", params=params)

    assert response.status_code == 400
    assert message in response.json()["error"]


# -- /_clear ----------------------------------------------------------------------------------


def test_clear_forgets_both_emulators_and_the_feed_starts_over(
    sb: Sandbox, client: httpx.Client
) -> None:
    send_segment(client, sb, track("a"), track("b"))
    send_segment(client, sb, track("refused"), key=OTHER_WRITE_KEY)
    send_posthog(client, sb, "One")
    before = feed(client, sb.viewer_url)
    sb.segment.faults.set(statuses=[503])

    cleared = client.post(f"{sb.viewer_url}/_clear")
    after = feed(client, sb.viewer_url, since=before["cursor"])

    assert cleared.status_code == 200
    assert cleared.json() == {"cleared": {"segment": 2, "posthog": 1}}
    assert sb.segment.events == []
    assert sb.segment.request_log == []
    assert sb.posthog.events == []
    assert after["entries"] == []
    assert all(source["reset"] for source in after["sources"])
    assert sb.segment.faults.pending_statuses == (503,)  # clearing is not resetting faults

    send_posthog(client, sb, "Fresh")
    fresh = feed(client, sb.viewer_url, since=after["cursor"])
    assert [e["event"] for e in fresh["entries"]] == ["Fresh"]
    assert not any(source["reset"] for source in fresh["sources"])


def test_clear_on_an_emulator_is_not_an_ingestion_request(
    sb: Sandbox, client: httpx.Client
) -> None:
    send_posthog(client, sb, "One")
    send_segment(client, sb, track("kept"))

    response = client.post(f"{sb.posthog.url}/_clear")

    assert response.json() == {"cleared": {"posthog": 1}}
    assert sb.posthog.requests == 0
    assert sb.posthog.request_log == []
    assert sb.segment.message_ids() == ["kept"]  # only that emulator is cleared


def test_another_site_cannot_clear_the_sandbox(sb: Sandbox, client: httpx.Client) -> None:
    send_segment(client, sb, track("kept"))

    response = client.post(f"{sb.viewer_url}/_clear", headers={"Sec-Fetch-Site": "cross-site"})

    assert response.status_code == 403
    assert sb.segment.message_ids() == ["kept"]


def test_the_viewer_takes_no_other_post(sb: Sandbox, client: httpx.Client) -> None:
    response = client.post(f"{sb.viewer_url}/_events", json={})

    assert response.status_code == 405
    assert "POST /_clear" in response.json()["error"]


# -- masked keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("phc_0123456789abcdefa1b2", "phc_…a1b2"),  # PostHog's kind of key stays visible
        ("phx_0123456789abcdefa1b2", "phx_…a1b2"),
        ("0123456789abcdefa1b2", "…a1b2"),  # Segment write keys have no prefix
        ("phc_short", "phc_…"),  # too short to show any of it
        ("short", "…"),
        ("abc_0123456789abcdefa1b2", "…a1b2"),  # only PostHog's prefixes are shown
    ],
)
def test_mask_key_keeps_the_kind_and_the_last_four(key: str, masked: str) -> None:
    assert mask_key(key) == masked

"""The README's "Privacy and transforms" config, run as written: what each destination gets.

Segment gets raw ids, PostHog pseudonymous ids without the IP, marketing only consented
events. Bodies are compared byte for byte: what the emulators received in direct mode, in
queued mode, and what ``preview`` shows must be the same text for every event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router_core import Event, PluginRegistry, Router, RouterConfig
from router_core.preview import Preview
from router_core.sandbox import PostHogEmulator, SegmentEmulator
from router_core.sandbox.bodies import compact_json
from router_core.sandbox.emulator import Emulator
from router_core.transforms import pseudonym

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
KEY = "pseudonym-key-for-the-readme-test"
IP = "203.0.113.7"


def readme_config(tmp_path: Path) -> RouterConfig:
    found = re.search(r"<!-- privacy-example[^>]*-->\n```toml\n(.*?)```", README, re.DOTALL)
    assert found is not None, "the README's privacy example is missing"
    path = tmp_path / "privacy.toml"
    path.write_text(found.group(1), encoding="utf-8")
    return RouterConfig.load(path)


@pytest.fixture
def emulators() -> Iterator[dict[str, Emulator]]:
    with SegmentEmulator() as segment, PostHogEmulator() as posthog, SegmentEmulator() as mkt:
        yield {"segment": segment, "posthog": posthog, "marketing": mkt}


def environment(emulators: dict[str, Emulator]) -> dict[str, str]:
    return {
        "SEGMENT_WRITE_KEY": "seg-write-key-1",
        "SEGMENT_HOST": emulators["segment"].url,
        "POSTHOG_API_KEY": "phc_readmeexample123",
        "POSTHOG_HOST": emulators["posthog"].url,
        "PSEUDONYM_KEY": KEY,
        "MARKETING_WRITE_KEY": "mkt-write-key-1",
        "MARKETING_HOST": emulators["marketing"].url,
    }


def consent(marketing: bool) -> dict[str, Any]:
    return {"ip": IP, "consent": {"categoryPreferences": {"marketing": marketing}}}


EVENTS = [
    Event.track("Order Completed", user_id="u1", context=consent(True), properties={"total": 9}),
    Event.track("Order Completed", user_id="u2", context=consent(False)),
    Event.identify(user_id="u3", anonymous_id="anon-3", context={"ip": IP}),  # no consent
    Event.alias(previous_id="anon-3", user_id="u3", context=consent(True)),
]


def received(emulators: dict[str, Emulator]) -> dict[str, list[str]]:
    return {name: [e.payload_json for e in em.events] for name, em in emulators.items()}


def previewed(previews: list[list[Preview]]) -> dict[str, list[str]]:
    """Each destination's events as the preview's request bodies carry them."""
    bodies: dict[str, list[str]] = {"segment": [], "posthog": [], "marketing": []}
    for per_event in previews:
        for p in per_event:
            assert p.error is None
            for request in p.requests:
                body = json.loads(request.body)
                bodies[p.destination] += [compact_json(item) for item in body["batch"]]
    return bodies


def test_each_destination_gets_what_the_readme_says(
    tmp_path: Path, emulators: dict[str, Emulator]
) -> None:
    config = readme_config(tmp_path)
    env = environment(emulators)
    with Router(config, env=env, plugins=PluginRegistry()) as router:
        previews = [router.preview(event) for event in EVENTS]
        reports = [router.send(event) for event in EVENTS]
    assert all(r.ok for r in reports)
    assert [r.skip_reasons for r in reports] == [
        {},
        {"marketing": "consent"},
        {"marketing": "consent"},  # [consent] missing = "skip"
        {},
    ]
    direct = received(emulators)
    # preview shows, byte for byte, what was then delivered.
    assert previewed(previews) == direct

    segment = [json.loads(p) for p in direct["segment"]]
    assert [e.get("userId") for e in segment] == ["u1", "u2", "u3", "u3"]
    assert all(e["context"]["ip"] == IP for e in segment)
    assert segment[3]["previousId"] == "anon-3"

    posthog = [json.loads(p) for p in direct["posthog"]]
    # An alias is sent from the previous id, with the new one as its alias (posthog-python).
    ids = [pseudonym(u, KEY, "2026-01") for u in ("u1", "u2", "u3", "anon-3")]
    assert [e["distinct_id"] for e in posthog] == ids
    assert all(IP not in p and '"u1"' not in p and '"anon-3"' not in p for p in direct["posthog"])
    # The same pseudonym for u3 as identify's user and alias's target: persons still merge.
    assert posthog[3]["properties"]["alias"] == pseudonym("u3", KEY, "2026-01") == ids[2]

    marketing = [json.loads(p) for p in direct["marketing"]]
    assert [(e["type"], e["userId"]) for e in marketing] == [("track", "u1"), ("alias", "u3")]
    # Marketing and Segment got the same bytes for the events both received.
    assert direct["marketing"] == [direct["segment"][0], direct["segment"][3]]


def test_queued_mode_delivers_the_same_bytes(
    tmp_path: Path, emulators: dict[str, Emulator]
) -> None:
    config = readme_config(tmp_path)
    env = environment(emulators)
    with Router(config, env=env, plugins=PluginRegistry()) as router:
        for event in EVENTS:
            router.send(event)
    direct = received(emulators)
    for em in emulators.values():
        em.clear()
    queue = {"path": str(tmp_path / "outbox.db"), "flush_interval": 0.01}
    with Router(config, env=env, plugins=PluginRegistry(), queue=queue) as router:
        reports = [router.send(event) for event in EVENTS]
        assert router.flush(30.0).complete
    assert reports[1].queued_for == ("segment", "posthog")
    queued = received(emulators)
    assert {k: sorted(v) for k, v in queued.items()} == {k: sorted(v) for k, v in direct.items()}

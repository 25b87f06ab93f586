"""A transform plugin, built and installed as a real distribution, changes one destination.

The plugin is tests/fixtures/transform_plugin: the README's transform example, plus an
option that makes it raise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router_core import DeliveryResult, Event, PluginRegistry, Router
from router_core.sandbox import SegmentEmulator
from tests.distributions import installed_distribution


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with installed_distribution(
        "transform_plugin", tmp_path_factory.mktemp("site"), "event_router_tag_region"
    ) as target:
        yield target


@pytest.fixture
def segment() -> Iterator[SegmentEmulator]:
    with SegmentEmulator() as em:
        yield em


def config(url: str, **options: Any) -> dict[str, dict[str, Any]]:
    transform = {"type": "plugin", "name": "tag_region", "options": options}
    return {
        "tagged": {"plugin": "segment", "write_key": "key-tagged", "host": url,
                   "transforms": [transform], "retry": {"max_attempts": 1}},
        "plain": {"plugin": "segment", "write_key": "key-plain", "host": url},
    }  # fmt: skip


def test_it_changes_one_destination_and_not_the_other(
    installed: Path, segment: SegmentEmulator
) -> None:
    registry = PluginRegistry()
    info = {i.name: i for i in registry.infos()}["tag_region"]
    assert info.distribution == "event-router-tag-region"
    assert info.hooks == ("transform_event",)
    with Router(config(segment.url, region="us"), plugins=registry) as router:
        sale = router.send(Event.track("Sale", user_id="u1", properties={"notes": "hi", "n": 1}))
        internal = router.send(Event.track("Ping", user_id="u1", properties={"internal": True}))
    assert sale.ok
    assert internal.skip_reasons == {"tagged": "dropped by transform plugin tag_region"}
    assert segment.wait_for(3)
    payloads = [e.payload for e in segment.events]
    tagged = [
        p["properties"] for p in payloads if p["event"] == "Sale" and "region" in p["properties"]
    ]
    assert tagged == [{"n": 1, "region": "us"}]
    untouched = [p["properties"] for p in payloads if "region" not in p["properties"]]
    assert untouched == [{"notes": "hi", "n": 1}, {"internal": True}]


def test_when_it_raises_that_destination_fails_and_queued_mode_dead_letters(
    installed: Path, segment: SegmentEmulator, tmp_path: Path
) -> None:
    failures: list[tuple[str, DeliveryResult]] = []
    tables = config(segment.url, fail=True)
    with Router(tables, plugins=PluginRegistry()) as router:
        report = router.send(Event.track("Sale", user_id="u1"))
    assert report.results["plain"].success
    error = report.results["tagged"].error
    assert error == (
        "destinations.tagged.transforms[0] (plugin 'tag_region') failed: "
        "RuntimeError: tag_region cannot tag for tagged"
    )
    queue = {"path": str(tmp_path / "outbox.db"), "flush_interval": 0.01}
    with Router(
        tables,
        plugins=PluginRegistry(),
        queue=queue,
        on_error=lambda m, r: failures.append((m, r)),
    ) as router:
        queued = router.send(Event.track("Sale", user_id="u2"))
        flushed = router.flush(30.0)
        outbox = router.outbox
        assert outbox is not None
        assert outbox.dead_counts(["tagged", "plain"]) == {"tagged": 1, "plain": 0}
    assert flushed.complete
    assert [(m, r.destination, r.error) for m, r in failures] == [
        (queued.message_id, "tagged", error)
    ]
    assert segment.wait_for(2)
    assert [e.distinct_id for e in segment.events] == ["u1", "u2"]  # plain only

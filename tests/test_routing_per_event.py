"""Per-event routing (integrations, consent, event types), transforms per destination, and
the observers: what reaches each destination, and why the others were skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pytest

from router_core import (
    ConfigError,
    Delivery,
    DeliveryError,
    DeliveryResult,
    Destination,
    DestinationSettings,
    Event,
    PluginRegistry,
    Router,
    RouterConfig,
    hookimpl,
)
from router_core.hookspecs import DeadLetteredHook, DeliveryAttemptedHook, EventTypesHook
from router_core.routing import integrations_allow

WAIT = 30.0


class Settings(DestinationSettings):
    mode: str = "ok"
    no_alias: bool = False


class Recorder:
    """Records what each destination receives; ``mode = "refuse"`` refuses permanently."""

    def __init__(self) -> None:
        self.received: dict[str, list[Event]] = {}

    @hookimpl
    def destination_settings(self) -> type[Settings]:
        return Settings

    @hookimpl
    def event_types(self, settings: Settings) -> Collection[str] | None:
        return {"track", "identify", "page", "screen", "group"} if settings.no_alias else None

    @hookimpl
    async def send_event(self, destination: Destination[Settings], event: Event) -> Delivery:
        if destination.settings.mode == "refuse":
            raise DeliveryError("refused by the test", status_code=400)
        self.received.setdefault(destination.name, []).append(event)
        return Delivery(200)


class Observer:
    """An observer-only plugin: it delivers nothing, it watches."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str, str, int]] = []
        self.dead: list[tuple[str, str, str]] = []

    @hookimpl
    def delivery_attempted(  # noqa: PLR0917 - the hook's arguments
        self,
        destination: str,
        message_id: str,
        outcome: str,
        attempt: int,
        duration_ms: float,
        error: str | None,
    ) -> None:
        assert duration_ms >= 0
        self.attempts.append((destination, message_id, outcome, attempt))

    @hookimpl
    def dead_lettered(self, destination: str, message_id: str, error: str) -> None:
        self.dead.append((destination, message_id, error))


class Raises:
    """A transform plugin that always raises, and an observer that always raises."""

    @hookimpl
    def transform_event(self, event: Event, options: Mapping[str, Any], destination: str) -> Any:
        raise ValueError("this transform is broken")

    @hookimpl
    def delivery_attempted(  # noqa: PLR0917 - the hook's arguments
        self,
        destination: str,
        message_id: str,
        outcome: str,
        attempt: int,
        duration_ms: float,
        error: str | None,
    ) -> None:
        raise RuntimeError("an observer bug")


# The implementations fit the hook specs (mypy checks these assignments).
_attempted: DeliveryAttemptedHook = Observer().delivery_attempted
_dead: DeadLetteredHook = Observer().dead_lettered
_types: EventTypesHook = Recorder().event_types  # type: ignore[assignment]


def registry(*extra: tuple[object, str]) -> tuple[PluginRegistry, Recorder]:
    recorder = Recorder()
    plugins = PluginRegistry(entry_points=False)
    plugins.register(recorder, "rec")
    for obj, name in extra:
        plugins.register(obj, name)
    return plugins, recorder


def test_integrations_select_destinations_per_event() -> None:
    plugins, rec = registry()
    config = {"PostHog": {"plugin": "rec"}, "segment": {"plugin": "rec"}, "crm": {"plugin": "rec"}}
    with Router(config, plugins=plugins) as router:
        only = router.send(Event.track("A", user_id="u", integrations={"All": False, "posthog": 1}))
        assert set(only.results) == {"PostHog"}
        assert only.skip_reasons == {"segment": "integrations", "crm": "integrations"}
        assert only.skipped == ("segment", "crm")
        off = router.send(Event.track("B", user_id="u", integrations={"posthog": False}))
        assert set(off.results) == {"segment", "crm"}
        assert off.skipped == ("PostHog",)
        # An object of options counts as enabled, as Segment reads it; the plugin's name
        # matches too, and the destination's own name wins over it.
        opts = {"All": False, "REC": {"x": 1}, "crm": False}
        mixed = router.send(Event.track("C", user_id="u", integrations=opts))
        assert set(mixed.results) == {"PostHog", "segment"}
        assert mixed.to_dict()["skip_reasons"] == {"crm": "integrations"}
        everywhere = router.send(Event.track("D", user_id="u"))
        assert set(everywhere.results) == {"PostHog", "segment", "crm"}
    assert [e.event for e in rec.received["crm"]] == ["B", "D"]


def test_integrations_rules() -> None:
    assert integrations_allow({}, ["a"])
    assert not integrations_allow({"All": False}, ["a", "p"])
    assert integrations_allow({"All": False, "P": True}, ["a", "p"])
    assert not integrations_allow({"A": False, "p": True}, ["a", "p"])
    assert integrations_allow({"all": None}, ["a"])  # only false switches off


def test_consent_gates_a_destination_and_missing_consent_is_a_router_setting() -> None:
    plugins, _ = registry()
    config: dict[str, dict[str, Any]] = {
        "analytics": {"plugin": "rec"},
        "marketing": {"plugin": "rec", "consent": ["marketing", "analytics"]},
    }

    def consent(**granted: bool) -> dict[str, Any]:
        return {"consent": {"categoryPreferences": granted}}

    both = Event.track("A", user_id="u", context=consent(marketing=True, analytics=True))
    partial = Event.track("B", user_id="u", context=consent(marketing=True, analytics=False))
    absent_category = Event.track("C", user_id="u", context=consent(marketing=True))
    none = Event.track("D", user_id="u")
    with Router(config, plugins=plugins) as router:
        assert set(router.send(both).results) == {"analytics", "marketing"}
        assert router.send(partial).skip_reasons == {"marketing": "consent"}
        assert router.send(absent_category).skip_reasons == {"marketing": "consent"}
        assert set(router.send(none).results) == {"analytics", "marketing"}  # default: deliver
    with Router(config, plugins=plugins, consent_missing="skip") as router:
        assert router.send(none).skip_reasons == {"marketing": "consent"}
        assert set(router.send(both).results) == {"analytics", "marketing"}
    table = {"consent": {"missing": "skip"}, "destinations": config}
    with Router.from_config(RouterConfig.from_dict(table), plugins=plugins) as router:
        assert router.send(none).skip_reasons == {"marketing": "consent"}
    with pytest.raises(ConfigError, match=r"consent.missing: must be 'deliver' or 'skip'"):
        RouterConfig.from_dict({"consent": {"missing": "maybe"}, "destinations": config})
    with pytest.raises(ConfigError, match="consent_missing"):
        Router(config, plugins=plugins, consent_missing="sometimes")


def test_a_plugin_that_takes_no_alias_skips_it_direct_and_queued(tmp_path: Path) -> None:
    plugins, rec = registry()
    config: dict[str, dict[str, Any]] = {
        "strict": {"plugin": "rec", "no_alias": True},
        "all": {"plugin": "rec"},
    }
    alias = Event.alias(previous_id="old", user_id="new")
    with Router(config, plugins=plugins) as router:
        report = router.send(alias)
        assert report.ok
        assert report.skip_reasons == {"strict": "unsupported type"}
        assert set(report.results) == {"all"}
    queue = {"path": str(tmp_path / "o.db"), "flush_interval": 0.01}
    with Router(config, plugins=plugins, queue=queue) as router:
        report = router.send(alias)
        assert report.queued_for == ("all",)
        assert report.skip_reasons == {"strict": "unsupported type"}
        flushed = router.flush(WAIT)
        assert flushed.complete
        assert flushed.dead == {"strict": 0, "all": 0}
    assert "strict" not in rec.received
    assert len(rec.received["all"]) == 2


def test_an_observer_only_plugin_loads_but_cannot_be_a_destination() -> None:
    observer = Observer()
    plugins, _ = registry((observer, "watch"))
    assert plugins.get("watch").info.hooks == ("dead_lettered", "delivery_attempted")
    with pytest.raises(
        ConfigError, match=r"destinations.x.plugin: .*does not implement send_event"
    ):
        Router({"x": {"plugin": "watch"}}, plugins=plugins)
    plugins.register(Raises(), "transform_only")
    with pytest.raises(ConfigError, match=r"plugin 'transform_only' does not implement send_event"):
        Router({"y": {"plugin": "transform_only"}}, plugins=plugins)


def test_transforms_run_per_destination_in_direct_mode() -> None:
    observer = Observer()
    plugins, rec = registry((Raises(), "broken"), (observer, "watch"))
    failures: list[tuple[str, DeliveryResult]] = []
    config: dict[str, dict[str, Any]] = {
        "raw": {"plugin": "rec"},
        "lean": {
            "plugin": "rec",
            "transforms": [
                {"type": "drop", "paths": ["properties.card_*"]},
                {"type": "drop_events", "events": ["Debug *"]},
            ],
        },
        "fails": {"plugin": "rec", "transforms": [{"type": "plugin", "name": "broken"}]},
    }
    with Router(config, plugins=plugins, on_error=lambda m, r: failures.append((m, r))) as router:
        report = router.send(Event.track("Paid", user_id="u", properties={"card_no": 1, "n": 2}))
        debug = router.send(Event.track("Debug ping", user_id="u"))
    assert not report.ok
    failed = report.results["fails"]
    assert not failed.success
    assert failed.error is not None
    assert "transforms[0] (plugin 'broken') failed: ValueError: this transform is broken" in (
        failed.error
    )
    assert [(m, r.destination) for m, r in failures] == [
        (report.message_id, "fails"),
        (debug.message_id, "fails"),
    ]
    assert debug.skip_reasons == {"lean": "dropped by transform drop_events"}
    assert [e.properties for e in rec.received["raw"]] == [{"card_no": 1, "n": 2}, {}]
    assert [e.properties for e in rec.received["lean"]] == [{"n": 2}]
    assert "fails" not in rec.received
    # The raising observer was logged and ignored; the other one saw every attempt.
    assert sorted((d, o) for d, _, o, _ in observer.attempts) == [
        ("lean", "delivered"),
        ("raw", "delivered"),
        ("raw", "delivered"),
    ]


def test_a_transform_problem_is_a_config_problem() -> None:
    plugins, _ = registry()
    config = {"x": {"plugin": "rec", "transforms": [{"type": "drop", "pths": ["a"]}]}}
    with pytest.raises(ConfigError, match=r"destinations.x.transforms\[0\]"):
        Router(config, plugins=plugins)


def test_queued_transforms_dead_letter_failures_and_acknowledge_drops(tmp_path: Path) -> None:
    observer = Observer()
    plugins, rec = registry((Raises(), "broken"), (observer, "watch"))
    failures: list[tuple[str, DeliveryResult]] = []
    config: dict[str, dict[str, Any]] = {
        "ok": {"plugin": "rec", "transforms": [{"type": "drop_events", "events": ["Debug *"]}]},
        "fails": {"plugin": "rec", "transforms": [{"type": "plugin", "name": "broken"}]},
        "refuses": {"plugin": "rec", "mode": "refuse"},
    }
    queue = {"path": str(tmp_path / "o.db"), "flush_interval": 0.01}
    with Router(
        config, plugins=plugins, queue=queue, on_error=lambda m, r: failures.append((m, r))
    ) as router:
        kept = router.send(Event.track("Paid", user_id="u"))
        debug = router.send(Event.track("Debug ping", user_id="u"))
        flushed = router.flush(WAIT)
    assert flushed.complete
    assert flushed.dead == {"ok": 0, "fails": 2, "refuses": 2}
    assert [e.message_id for e in rec.received["ok"]] == [kept.message_id]
    dead = {(d, m): error for d, m, error in observer.dead}
    assert set(dead) == {
        ("fails", kept.message_id),
        ("fails", debug.message_id),
        ("refuses", kept.message_id),
        ("refuses", debug.message_id),
    }
    assert "failed: ValueError: this transform is broken" in dead[("fails", kept.message_id)]
    assert "refused by the test" in dead[("refuses", kept.message_id)]
    # on_error fires once for every failed queued delivery, with the same reason.
    assert sorted((r.destination, m) for m, r in failures) == sorted(dead)
    assert all(not r.success and r.error for _, r in failures)
    outcomes = [(d, o) for d, _, o, _ in observer.attempts]
    assert outcomes.count(("refuses", "failed")) == 2
    assert outcomes.count(("ok", "delivered")) == 1


_SAMPLED_USERS = """
import json, sys
from router_core import Delivery, Event, PluginRegistry, Router, hookimpl

class Ok:
    @hookimpl
    async def send_event(self, destination, event):
        return Delivery(200)

plugins = PluginRegistry(entry_points=False)
plugins.register(Ok(), "ok")
config = {"all": {"plugin": "ok"},
          "some": {"plugin": "ok", "transforms": [{"type": "sample", "rate": 0.25}]}}
with Router(config, plugins=plugins) as router:
    reports = [router.send(Event.track("E", user_id=f"user-{i}")) for i in range(200)]
print(json.dumps([i for i, r in enumerate(reports) if "some" in r.results]))
"""


def test_sampling_keeps_the_same_users_in_every_process() -> None:
    runs = [
        subprocess.run(
            [sys.executable, "-c", _SAMPLED_USERS],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        for seed in ("1", "2")
    ]
    first, second = (json.loads(run.stdout) for run in runs)
    assert first == second
    assert 20 < len(first) < 80  # about a quarter of 200 users
    # This process agrees, and reports the others as sampled out.
    plugins, _ = registry()
    config: dict[str, dict[str, Any]] = {
        "all": {"plugin": "rec"},
        "some": {"plugin": "rec", "transforms": [{"type": "sample", "rate": 0.25}]},
    }
    with Router(config, plugins=plugins) as router:
        reports = [router.send(Event.track("E", user_id=f"user-{i}")) for i in range(200)]
    assert [i for i, r in enumerate(reports) if "some" in r.results] == first
    assert {r.skip_reasons.get("some") for r in reports} == {None, "sampled out"}

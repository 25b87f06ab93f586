"""Plugin discovery and registration: one broken plugin never stops the others."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from router_core import (
    BatchLimits,
    Delivery,
    Destination,
    Event,
    PluginLoadError,
    PluginRegistry,
    Router,
    hookimpl,
)
from router_core.plugins import PLUGINS_ENV_VAR

GOOD = """
from router_core import Delivery, hookimpl

@hookimpl
async def send_event(destination, event):
    return Delivery(200, {"plugin": __name__})
"""
BROKEN_IMPORT = "raise ImportError('missing dependency: vendor_sdk')\n"
TYPO = """
from router_core import Delivery, hookimpl

@hookimpl
async def send_event(destination, event):
    return Delivery(200)

@hookimpl
def sned_batch(destination, events):
    return None
"""
BAD_SIGNATURE = """
from router_core import hookimpl

@hookimpl
def send_event(destination, event, colour):
    return None
"""
NO_SEND = """
from router_core import hookimpl

@hookimpl
def batch_limits():
    return None
"""


@pytest.fixture
def fake_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Installs modules on sys.path and advertises them as event_router entry points."""
    modules = {
        "plug_good": GOOD,
        "plug_broken": BROKEN_IMPORT,
        "plug_typo": TYPO,
        "plug_badsig": BAD_SIGNATURE,
        "plug_nosend": NO_SEND,
        "plug_other": GOOD,
    }
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = metadata.EntryPoints(
        metadata.EntryPoint(name=name.removeprefix("plug_"), value=name, group="event_router")
        for name in modules
    )

    def entry_points(**params: Any) -> metadata.EntryPoints:
        assert params == {"group": "event_router"}
        return eps

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.delenv(PLUGINS_ENV_VAR, raising=False)
    yield
    for name in modules:
        sys.modules.pop(name, None)


@pytest.mark.usefixtures("fake_entry_points")
def test_broken_plugins_are_reported_by_name_and_the_rest_load() -> None:
    registry = PluginRegistry()
    assert registry.names() == ["good", "other"]
    failures = registry.failures()
    assert set(failures) == {"broken", "typo", "badsig", "nosend"}
    assert "ImportError: missing dependency: vendor_sdk" in failures["broken"]
    assert "sned_batch" in failures["typo"]  # caught by check_pending()
    assert "colour" in failures["badsig"]  # argument unknown to the hook spec
    assert "does not implement the send_event hook" in failures["nosend"]
    infos = {info.name: info for info in registry.infos()}
    assert infos["good"].loaded
    assert infos["good"].hooks == ("send_event",)
    assert not infos["broken"].loaded


@pytest.mark.usefixtures("fake_entry_points")
def test_routing_to_a_plugin_that_failed_to_load_says_why() -> None:
    with pytest.raises(Exception, match="plugin 'broken' failed to load: ImportError"):
        Router({"d": {"plugin": "broken"}}, plugins=PluginRegistry())


@pytest.mark.usefixtures("fake_entry_points")
@pytest.mark.parametrize(
    ("env_value", "expected"),
    [("good", ["good"]), ("good, other", ["good", "other"]), ("", [])],
)
def test_env_var_restricts_loading(
    monkeypatch: pytest.MonkeyPatch, env_value: str, expected: list[str]
) -> None:
    monkeypatch.setenv(PLUGINS_ENV_VAR, env_value)
    registry = PluginRegistry()
    assert registry.names() == expected
    assert registry.failures() == {}
    with pytest.raises(KeyError, match=PLUGINS_ENV_VAR):
        registry.get("broken")


class Recorder:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.seen: list[str] = []

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.seen.append(destination.name)
        return Delivery(200, {"tag": self.tag})


def test_each_plugin_is_called_alone_even_when_registered_later() -> None:
    registry = PluginRegistry(entry_points=False)
    first, second = Recorder("first"), Recorder("second")
    registry.register(first, "first")
    with Router({"a": {"plugin": "first"}}, plugins=registry) as router:
        registry.register(second, "second")  # must not join the first plugin's calls
        report = router.send(Event.track("X", user_id="u"))
    assert report.results["a"].output == {"tag": "first"}
    assert first.seen == ["a"]
    assert second.seen == []


def test_register_rejects_invalid_plugins_with_a_clear_error() -> None:
    registry = PluginRegistry(entry_points=False)

    class Typo:
        @hookimpl
        def send_evnt(self, destination: Any, event: Any) -> None:
            return None

    with pytest.raises(PluginLoadError, match="plugin 'typo' failed to load"):
        registry.register(Typo(), "typo")
    registry.register(Recorder("ok"), "ok")
    with pytest.raises(PluginLoadError, match="already registered"):
        registry.register(Recorder("again"), "ok")
    assert registry.names() == ["ok"]


def test_hook_calls_can_be_traced_with_pluggy_monitoring() -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(Recorder("traced"), "traced")
    calls: list[str] = []

    def before(hook_name: str, impls: Any, kwargs: Any) -> None:
        calls.append(f"{hook_name}:{kwargs['destination'].name}")

    def after(outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
        calls.append(f"done:{hook_name}")

    undo = registry.add_hookcall_monitoring(before, after)
    try:
        with Router({"t": {"plugin": "traced"}}, plugins=registry) as router:
            assert router.send(Event.track("X", user_id="u")).ok
    finally:
        undo()
    assert calls == ["send_event:t", "done:send_event"]


def test_monitoring_added_before_a_plugin_registers_traces_it_too() -> None:
    registry = PluginRegistry(entry_points=False)
    calls: list[str] = []
    undo = registry.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append(f"{name}:{len(impls)}"),
        lambda outcome, name, impls, kwargs: None,
    )
    registry.register(Recorder("late"), "late")
    try:
        with Router({"l": {"plugin": "late"}}, plugins=registry) as router:
            assert router.send(Event.track("X", user_id="u")).ok
    finally:
        undo()
    # One implementation per call: the plugin's own manager holds nothing else.
    assert calls == ["send_event:1"]
    with Router({"l": {"plugin": "late"}}, plugins=registry) as router:
        assert router.send(Event.track("Y", user_id="u")).ok
    assert calls == ["send_event:1"]  # undone


def test_firstresult_hooks_answer_with_the_plugins_own_value() -> None:
    registry = PluginRegistry(entry_points=False)

    class Limited(Recorder):
        @hookimpl
        def batch_limits(self) -> BatchLimits:
            return BatchLimits(max_events=7)

    registry.register(Limited("limited"), "limited")
    registry.register(Recorder("plain"), "plain")
    assert registry.get("limited").limits == BatchLimits(max_events=7)
    assert registry.get("plain").limits == BatchLimits()

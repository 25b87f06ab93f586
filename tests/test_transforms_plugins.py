"""Transform plugins: found by name in the plugin registry, called through their own manager,
and checked, so a bad one fails its destination with a reason and nothing else."""

from __future__ import annotations

import importlib
import pickle
import re
import sys
import textwrap
import uuid
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from router_core import (
    ConfigError,
    Event,
    PluginLoadError,
    PluginRegistry,
    TransformError,
    TransformOutcome,
    TransformPipeline,
    hookimpl,
)
from router_core.hookspecs import TransformEventHook
from router_core.secrets import MASK, register_secret
from router_core.transforms import split_message_id

SECRET = "transform-plugin-secret-9f8e7d"


class Tagger:
    """Adds a property from its options and records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Event, Mapping[str, Any], str]] = []

    @hookimpl
    def transform_event(
        self, event: Event, options: Mapping[str, Any], destination: str
    ) -> Event | Sequence[Event] | None:
        self.calls.append((event, options, destination))
        return event.model_copy(
            update={"properties": {**event.properties, "tag": options["tag"], "for": destination}}
        )


class Returns:
    """Returns whatever it was built with (or what the function makes of the event)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    @hookimpl
    def transform_event(self, event: Event, options: Mapping[str, Any], destination: str) -> Any:
        return self.answer(event) if callable(self.answer) else self.answer


def _pipeline(plugin: object, options: Mapping[str, Any] | None = None) -> TransformPipeline:
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "my_transform")
    table = {"type": "plugin", "name": "my_transform", "options": dict(options or {})}
    pipeline = TransformPipeline.build("posthog", [table], registry)
    assert pipeline is not None
    return pipeline


def _event() -> Event:
    return Event.track("Order Completed", user_id="user-1", properties={"total": 10})


def _error(outcome: TransformOutcome) -> TransformError:
    assert outcome.events == ()
    assert outcome.error is not None
    return outcome.error


_: TransformEventHook = Tagger().transform_event  # the hook's type fits its spec (mypy)


def test_a_transform_only_plugin_loads_and_changes_the_event() -> None:
    tagger = Tagger()
    registry = PluginRegistry(entry_points=False)
    registry.register(tagger, "my_transform")
    loaded = registry.get("my_transform")
    assert loaded.info.hooks == ("transform_event",)
    assert loaded.transform_event is not None
    table = {"type": "plugin", "name": "my_transform", "options": {"tag": "t1"}}
    pipeline = TransformPipeline.build("posthog", [table], registry)
    assert pipeline is not None
    event = _event()
    (out,) = pipeline.apply(event).events
    assert out.properties == {"total": 10, "tag": "t1", "for": "posthog"}
    assert out.message_id == event.message_id
    assert event.properties == {"total": 10}
    ((seen, options, destination),) = tagger.calls
    assert seen == event
    assert seen is not event  # a copy: changing it in place cannot reach other destinations
    assert dict(options) == {"tag": "t1"}
    assert destination == "posthog"


def test_calls_go_through_the_plugins_own_pluggy_manager() -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(Tagger(), "my_transform")
    traced: list[str] = []
    registry.add_hookcall_monitoring(
        lambda name, impls, kwargs: traced.append(name), lambda *a: None
    )
    table = {"type": "plugin", "name": "my_transform", "options": {"tag": "t"}}
    pipeline = TransformPipeline.build("posthog", [table], registry)
    assert pipeline is not None
    pipeline.apply(_event())
    assert traced == ["transform_event"]


def test_a_plugin_changing_the_event_in_place_changes_only_its_own_copy() -> None:
    def mutate(event: Event) -> Event:
        event.properties["total"] = 0
        return event

    event = _event()
    (out,) = _pipeline(Returns(mutate)).apply(event).events
    assert out.properties == {"total": 0}
    assert event.properties == {"total": 10}


def test_returning_the_event_unchanged_gives_back_the_original_object() -> None:
    event = _event()
    assert _pipeline(Returns(lambda e: e)).apply(event).events[0] is event


def test_a_single_event_keeps_the_original_message_id() -> None:
    event = _event()
    fresh = _pipeline(Returns(lambda e: Event.track("Replaced", user_id="user-1")))
    (out,) = fresh.apply(event).events
    assert out.event == "Replaced"
    assert out.message_id == event.message_id


def test_a_list_result_yields_several_valid_events_with_stable_derived_ids() -> None:
    def split(event: Event) -> list[Event]:
        return [
            event.model_copy(update={"event": f"{event.event} #{n}", "properties": {"n": n}})
            for n in range(3)
        ]

    pipeline = _pipeline(Returns(split))
    event = _event()
    first = pipeline.apply(event).events
    assert [e.event for e in first] == [f"Order Completed #{n}" for n in range(3)]
    assert [e.properties for e in first] == [{"n": 0}, {"n": 1}, {"n": 2}]
    ids = [e.message_id for e in first]
    assert len(set(ids)) == 3
    assert event.message_id not in ids
    assert all(uuid.UUID(i).version == 5 for i in ids)
    assert ids == [split_message_id(event.message_id, n) for n in range(3)]
    assert [e.message_id for e in pipeline.apply(event).events] == ids  # the same every time
    assert all(Event.parse(e.model_dump()) == e for e in first)


@pytest.mark.parametrize("answer", [None, []])
def test_none_or_an_empty_list_drops_the_event_for_that_destination(answer: object) -> None:
    outcome = _pipeline(Returns(answer)).apply(_event())
    assert outcome == TransformOutcome(dropped="dropped by transform plugin my_transform")
    assert outcome.ok


def test_a_raising_plugin_gives_a_transform_error_with_the_reason_and_secrets_masked() -> None:
    register_secret(SECRET)

    def fail(event: Event) -> Event:
        raise RuntimeError(f"could not reach the vault with token {SECRET}")

    error = _error(_pipeline(Returns(fail)).apply(_event()))
    assert isinstance(error, TransformError)
    assert error.destination == "posthog"
    assert error.index == 0
    assert error.transform == "plugin"
    assert error.plugin == "my_transform"
    assert error.reason == f"RuntimeError: could not reach the vault with token {MASK}"
    assert str(error) == (
        "destinations.posthog.transforms[0] (plugin 'my_transform') failed: "
        f"RuntimeError: could not reach the vault with token {MASK}"
    )
    assert SECRET not in repr(error)
    assert error.__cause__ is None
    assert error.__suppress_context__
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.plugin) == (str(error), error.plugin)


async def _coroutine() -> None:
    return None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (42, "returned int, not an Event, a list of Events or None"),
        ({"type": "track"}, "returned dict, not an Event, a list of Events or None"),
        ("track", "returned str, not an Event, a list of Events or None"),
        (lambda e: [e, 1, "x"], "returned a list holding int, str, not only Events"),
        (lambda e: _coroutine(), "returned an awaitable: transform_event must be a plain def"),
        (
            lambda e: e.model_copy(update={"user_id": None}),
            "returned an invalid event: invalid track event: "
            "a track event needs user_id or anonymous_id",
        ),
        (
            lambda e: [e, Event.model_construct(type="track", event="x")],
            "returned an invalid event: invalid track event: ",
        ),
    ],
)
def test_returning_garbage_is_a_transform_error(answer: object, reason: str) -> None:
    error = _error(_pipeline(Returns(answer)).apply(_event()))
    assert error.reason.startswith(reason), error.reason


def test_options_are_read_only() -> None:
    class Meddler:
        @hookimpl
        def transform_event(
            self, event: Event, options: Mapping[str, Any], destination: str
        ) -> Event:
            options["seen"] = True  # type: ignore[index]
            return event

    pipeline = _pipeline(Meddler(), {"nested": {"a": [1]}})
    error = _error(pipeline.apply(_event()))
    assert error.reason.startswith("TypeError:")
    assert _error(pipeline.apply(_event())).reason == error.reason  # nothing was changed


def test_a_plugin_sees_the_built_ins_before_it_and_feeds_those_after_it() -> None:
    tagger = Tagger()
    registry = PluginRegistry(entry_points=False)
    registry.register(tagger, "my_transform")
    tables: list[dict[str, Any]] = [
        {"type": "drop", "paths": ["properties.total"]},
        {"type": "plugin", "name": "my_transform", "options": {"tag": "t"}},
        {"type": "rename", "events": {"Order Completed": "purchase"}},
    ]
    pipeline = TransformPipeline.build("posthog", tables, registry)
    assert pipeline is not None
    (out,) = pipeline.apply(_event()).events
    assert tagger.calls[0][0].properties == {}
    assert out.properties == {"tag": "t", "for": "posthog"}
    assert out.event == "purchase"


def test_an_async_transform_is_refused_when_the_plugin_loads() -> None:
    class Slow:
        @hookimpl
        async def transform_event(
            self, event: Event, options: Mapping[str, Any], destination: str
        ) -> Event:
            return event

    with pytest.raises(PluginLoadError, match="transform_event must be a plain def"):
        PluginRegistry(entry_points=False).register(Slow(), "slow")


def test_a_plugin_with_neither_hook_is_still_refused() -> None:
    class Nothing:
        @hookimpl
        def batch_limits(self) -> None:
            return None

    with pytest.raises(PluginLoadError, match="does not implement the send_event hook"):
        PluginRegistry(entry_points=False).register(Nothing(), "nothing")


def test_naming_a_missing_or_unsuitable_plugin_is_a_config_error() -> None:
    class SendsOnly:
        @hookimpl
        def send_event(self, destination: Any, event: Event) -> None:
            return None

    registry = PluginRegistry(entry_points=False)
    registry.register(SendsOnly(), "sender")
    tables = [
        {"type": "scrub_ip"},
        {"type": "plugin", "name": "nope"},
        {"type": "plugin", "name": "sender"},
    ]
    with pytest.raises(ConfigError) as caught:
        TransformPipeline.build("posthog", tables, registry)
    assert caught.value.problems == (
        "destinations.posthog.transforms[1].name: unknown plugin 'nope'; loaded plugins: sender",
        "destinations.posthog.transforms[2].name: "
        "plugin 'sender' does not implement the transform_event hook",
    )


PLUGIN_MODULE = """
from router_core import hookimpl

@hookimpl
def transform_event(event, options, destination):
    return event.model_copy(update={"properties": {**event.properties, "via": __name__}})
"""


@pytest.fixture
def installed_transform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module advertised under the ``event_router`` entry-point group as ``masker``."""
    (tmp_path / "masker_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = metadata.EntryPoints(
        [metadata.EntryPoint(name="masker", value="masker_plugin", group="event_router")]
    )
    monkeypatch.setattr(metadata, "entry_points", lambda **params: eps)
    monkeypatch.delenv("EVENT_ROUTER_PLUGINS", raising=False)
    yield "masker"
    sys.modules.pop("masker_plugin", None)


def test_a_transform_plugin_is_found_by_its_entry_point_name(installed_transform: str) -> None:
    registry = PluginRegistry()
    assert registry.names() == [installed_transform]
    table = {"type": "plugin", "name": installed_transform}
    pipeline = TransformPipeline.build("posthog", [table], registry)
    assert pipeline is not None
    (out,) = pipeline.apply(_event()).events
    assert out.properties == {"total": 10, "via": "masker_plugin"}


def _readme_transform_plugin() -> str:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    (block,) = [b for b in blocks if "def transform_event(" in b]
    return str(block)


def test_the_readme_transform_plugin_works_as_described(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "readme_transform.py").write_text(_readme_transform_plugin(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("readme_transform")
        registry = PluginRegistry(entry_points=False)
        registry.register(module, "my_transform")
    finally:
        sys.modules.pop("readme_transform", None)
    table = {"type": "plugin", "name": "my_transform", "options": {"region": "us"}}
    pipeline = TransformPipeline.build("posthog", [table], registry)
    assert pipeline is not None
    event = Event.track("Note Added", user_id="u1", properties={"notes": "private", "n": 1})
    (out,) = pipeline.apply(event).events
    assert out.properties == {"n": 1, "region": "us"}
    internal = Event.track("Note Added", user_id="u1", properties={"internal": True})
    assert pipeline.apply(internal).dropped == "dropped by transform plugin my_transform"

"""A destination's transforms, in order: what an event becomes before it is delivered there.

``TransformPipeline.build`` turns a destination's validated ``transforms`` list into a
pipeline (``None`` when the list is empty, so a destination without transforms costs
nothing); ``apply(event)`` never raises and answers with a ``TransformOutcome``: the events to
deliver, or why there are none (dropped, or a ``TransformError``).

Consecutive built-ins work on the event's fields and are validated once, after the last of
them; a plugin transform gets a validated ``Event`` and its answer is validated again. An
event no transform changed comes back as the very same object. Nothing depends on the clock,
randomness or the process: the same event and config always give the same output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from router_core.errors import ConfigError, InvalidEventError, TransformError
from router_core.events import Event
from router_core.plugins import PluginRegistry, default_registry
from router_core.transforms.fields import Allow, Drop
from router_core.transforms.plugin import PluginTransform, TransformFailed, describe
from router_core.transforms.pseudonymize import Pseudonymize
from router_core.transforms.sample import Sample
from router_core.transforms.scrub import ScrubIp, StripQuery
from router_core.transforms.selection import DropEvents, Rename
from router_core.transforms.settings import (
    PluginTransformSettings,
    TransformSettings,
    parse_transforms,
)
from router_core.transforms.step import FieldStep

__all__ = ["TransformOutcome", "TransformPipeline"]

_BUILT_INS: dict[str, Callable[[Any], FieldStep]] = {
    "pseudonymize": Pseudonymize,
    "drop": Drop,
    "allow": Allow,
    "scrub_ip": ScrubIp,
    "strip_query": StripQuery,
    "drop_events": DropEvents,
    "rename": Rename,
    "sample": Sample,
}

_DROP_REASONS = {"sample": "sampled out"}


@dataclass(frozen=True, slots=True)
class TransformOutcome:
    """What a destination's transforms made of one event.

    ``events`` are the events to deliver: usually one (the original object when nothing
    changed), none when the event was dropped (``dropped`` says why, e.g. ``"sampled out"``)
    or failed (``error``), several when a plugin split it.
    """

    events: tuple[Event, ...] = ()
    dropped: str | None = None
    error: TransformError | None = None

    @property
    def ok(self) -> bool:
        """False when a transform failed (the destination fails for this event)."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class _BuiltIn:
    index: int
    type: str
    step: FieldStep
    dropped: str  # the reason reported when this step drops an event


@dataclass(frozen=True, slots=True)
class _BuiltIns:
    """Consecutive built-in transforms: run on the fields, validated once at the end."""

    destination: str
    steps: tuple[_BuiltIn, ...]

    def __call__(self, event: Event) -> tuple[Event, ...] | str:
        fields: Mapping[str, Any] = event.__dict__  # read only: every step copies on write
        last: _BuiltIn | None = None
        for built_in in self.steps:
            try:
                out = built_in.step(fields)
            except Exception as exc:  # a bug must fail this destination, not the router
                raise self._error(built_in, describe(exc)) from None
            if out is None:
                return built_in.dropped
            if out is not fields:
                fields, last = out, built_in
        if last is None:
            return (event,)
        try:
            return (Event.parse(fields),)
        except InvalidEventError:
            raise self._culprit(event, last) from None

    def _culprit(self, event: Event, last: _BuiltIn) -> TransformError:
        """The error naming the first step whose output is invalid.

        Built-ins only touch values an event may hold, so this should never run; if one ever
        breaks an event, replaying the (deterministic) steps one validation at a time finds it.
        """
        fields: Mapping[str, Any] = event.__dict__
        for built_in in self.steps:
            out = built_in.step(fields)
            if out is None:
                break
            if out is not fields:
                try:
                    Event.parse(out)
                except InvalidEventError as exc:
                    return self._error(built_in, f"produced an invalid event: {exc}")
                fields = out
        return self._error(last, "produced an invalid event")

    def _error(self, built_in: _BuiltIn, reason: str) -> TransformError:
        return TransformError(self.destination, built_in.index, built_in.type, reason)


@dataclass(frozen=True, slots=True)
class _Plugin:
    destination: str
    index: int
    transform: PluginTransform

    def __call__(self, event: Event) -> tuple[Event, ...] | str:
        try:
            events = self.transform(event)
        except TransformFailed as exc:
            raise TransformError(
                self.destination, self.index, "plugin", str(exc), plugin=self.transform.name
            ) from None
        return events if events else f"dropped by transform plugin {self.transform.name}"


_Stage: TypeAlias = _BuiltIns | _Plugin


class TransformPipeline:
    """One destination's transforms, ready to apply. Build it with ``TransformPipeline.build``."""

    __slots__ = ("_stages", "destination", "transforms")

    def __init__(
        self,
        destination: str,
        transforms: tuple[TransformSettings, ...],
        stages: tuple[_Stage, ...],
    ) -> None:
        self.destination = destination
        self.transforms = transforms
        self._stages = stages

    @classmethod
    def build(
        cls,
        destination: str,
        transforms: Sequence[TransformSettings | Mapping[str, Any]] | None,
        registry: PluginRegistry | None = None,
        *,
        where: str | None = None,
    ) -> TransformPipeline | None:
        """The pipeline for ``destination``'s ``transforms`` (tables or validated settings).

        Returns ``None`` when there are none. ``registry`` finds ``type = "plugin"``
        transforms (default: the installed plugins). Raises ``ConfigError`` listing every
        problem, each named ``<where>[<index>]`` (``destinations.<destination>.transforms``).
        """
        where = where if where is not None else f"destinations.{destination}.transforms"
        settings = parse_transforms(transforms, where)
        if not settings:
            return None
        problems: list[str] = []
        stages: list[_Stage] = []
        run: list[_BuiltIn] = []
        for index, spec in enumerate(settings):
            if not isinstance(spec, PluginTransformSettings):
                reason = _DROP_REASONS.get(spec.type, f"dropped by transform {spec.type}")
                run.append(_BuiltIn(index, spec.type, _BUILT_INS[spec.type](spec), reason))
                continue
            if run:
                stages.append(_BuiltIns(destination, tuple(run)))
                run = []
            plugins = registry if registry is not None else default_registry()
            problem = _plugin_problem(plugins, spec.name)
            if problem is not None:
                problems.append(f"{where}[{index}].name: {problem}")
                continue
            transform = PluginTransform(plugins.get(spec.name), spec.options, destination)
            stages.append(_Plugin(destination, index, transform))
        if run:
            stages.append(_BuiltIns(destination, tuple(run)))
        if problems:
            raise ConfigError(problems)
        return cls(destination, settings, tuple(stages))

    def apply(self, event: Event) -> TransformOutcome:
        """Run every transform over ``event``, in order. Never raises."""
        events: tuple[Event, ...] = (event,)
        dropped: str | None = None
        try:
            for stage in self._stages:
                out: list[Event] = []
                for item in events:
                    result = stage(item)
                    if isinstance(result, str):
                        dropped = dropped or result  # the first reason is the one reported
                    else:
                        out.extend(result)
                if not out:
                    return TransformOutcome(dropped=dropped)
                events = tuple(out)
        except TransformError as exc:
            return TransformOutcome(error=exc)
        return TransformOutcome(events=events)

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        kinds = ", ".join(
            f"plugin {t.name}" if isinstance(t, PluginTransformSettings) else t.type
            for t in self.transforms
        )
        return f"TransformPipeline({self.destination!r}: {kinds})"


def _plugin_problem(registry: PluginRegistry, name: str) -> str | None:
    if name not in registry:
        return registry.why_missing(name)
    if registry.get(name).transform_event is None:
        return f"plugin {name!r} does not implement the transform_event hook"
    return None

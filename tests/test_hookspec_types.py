"""The in-tree plugins' hook implementations fit the hookspecs' types.

mypy --strict checks this module: an implementation whose parameters or return type drift
from its spec fails type checking here, before pluggy would notice at runtime (it only
compares argument names).
"""

from __future__ import annotations

import inspect

import event_router_posthog
import event_router_segment
import pytest

from router_core import BatchLimits, DestinationSettings, hookspecs
from router_core.hookspecs import (
    BatchLimitsHook,
    DestinationSettingsHook,
    SendBatchHook,
    SendEventHook,
)

SEGMENT: tuple[DestinationSettingsHook, SendEventHook, SendBatchHook, BatchLimitsHook] = (
    event_router_segment.destination_settings,
    event_router_segment.send_event,
    event_router_segment.send_batch,
    event_router_segment.batch_limits,
)
POSTHOG: tuple[DestinationSettingsHook, SendEventHook, SendBatchHook, BatchLimitsHook] = (
    event_router_posthog.destination_settings,
    event_router_posthog.send_event,
    event_router_posthog.send_batch,
    event_router_posthog.batch_limits,
)


@pytest.mark.parametrize("impls", [SEGMENT, POSTHOG], ids=["segment", "posthog"])
def test_each_implementation_takes_its_specs_arguments(impls: tuple[object, ...]) -> None:
    # pluggy passes an implementation only the arguments it names: they must be the spec's.
    for impl in impls:
        name = getattr(impl, "__name__", "")
        spec = getattr(hookspecs, name)
        taken = list(inspect.signature(impl).parameters)  # type: ignore[arg-type]
        assert set(taken) <= set(inspect.signature(spec).parameters), name
        if name != "batch_limits":  # the one hook whose argument is optional to take
            assert taken == list(inspect.signature(spec).parameters), name


def _per_plan(settings: DestinationSettings) -> BatchLimits:
    return BatchLimits(max_events=10)


def _fixed() -> BatchLimits:
    return BatchLimits()


# Both shapes of batch_limits fit the hook's type (mypy checks these two lines).
BOTH: tuple[BatchLimitsHook, BatchLimitsHook] = (_per_plan, _fixed)


def test_batch_limits_takes_the_destinations_settings() -> None:
    assert list(inspect.signature(hookspecs.batch_limits).parameters) == ["settings"]
    assert [list(inspect.signature(f).parameters) for f in BOTH] == [["settings"], []]

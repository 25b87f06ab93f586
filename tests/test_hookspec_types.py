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

from router_core import hookspecs
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
    for impl in impls:
        name = getattr(impl, "__name__", "")
        spec = getattr(hookspecs, name)
        assert list(inspect.signature(impl).parameters) == list(  # type: ignore[arg-type]
            inspect.signature(spec).parameters
        ), name

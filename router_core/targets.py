"""A destination paired with the plugin that delivers to it: what the router and the queue share.

The router builds one ``Target`` per enabled destination (on its own loop, where the pooled
client lives); direct sends and the queue's workers both deliver through them, applying the
destination's transforms first and telling the observers how each attempt went.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from router_core.delivery import deliver
from router_core.destination import Destination
from router_core.errors import TransformError
from router_core.events import Event
from router_core.limits import BatchLimits
from router_core.observers import NO_OBSERVERS, Observers
from router_core.plugins import LoadedPlugin
from router_core.results import DeliveryResult
from router_core.transforms import TransformPipeline

__all__ = ["Target", "TargetSource"]


@dataclass(frozen=True, slots=True)
class Target:
    """One destination, its plugin, its transforms (``None``: none) and the observers.

    It unpacks as ``plugin, destination``, the pair the router and the queue deliver with.
    """

    plugin: LoadedPlugin
    destination: Destination[Any]
    transforms: TransformPipeline | None = None
    observers: Observers = field(default=NO_OBSERVERS, repr=False)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.plugin, self.destination))

    @property
    def name(self) -> str:
        """The destination's name (from the config)."""
        return self.destination.name

    @property
    def limits(self) -> BatchLimits:
        """This destination's ``BatchLimits`` (they may depend on its settings)."""
        return self.plugin.limits_for(self.destination.settings)

    async def deliver(self, event: Event) -> DeliveryResult | str:
        """Deliver ``event`` after this destination's transforms, retrying as its policy
        allows; a string is why a transform dropped it."""
        plugin, destination = self.plugin, self.destination
        if self.transforms is None:
            return await deliver(plugin, destination, event, self.observers)
        outcome = self.transforms.apply(event)
        if outcome.error is not None:
            return self.transform_failure(outcome.error)
        if not outcome.events:
            return outcome.dropped or "dropped by transform"
        result: DeliveryResult | None = None
        for each in outcome.events:  # a transform that split the event: each in turn
            result = await deliver(plugin, destination, each, self.observers)
            if not result.success:
                break
        assert result is not None
        return result

    def transform_failure(self, error: TransformError) -> DeliveryResult:
        """The failed result of an event this destination's transforms could not make."""
        text = str(error)
        return DeliveryResult(
            destination=self.destination.name,
            plugin=self.destination.plugin,
            success=False,
            error=text,
            attempts=0,
            output={"success": False, "error": text},
            exception=error,
        )


TargetSource = Callable[[], Sequence[Target]]
"""Returns the router's targets, building them on first use (called on the router's loop)."""

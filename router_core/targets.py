"""A destination paired with the plugin that delivers to it: what the router and the queue share.

The router builds one ``Target`` per enabled destination (on its own loop, where the pooled
client lives); direct sends and the queue's workers both deliver through them, applying the
destination's transforms first and telling the observers how each attempt went.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from router_core.destination import Destination
from router_core.observers import NO_OBSERVERS, Observers
from router_core.plugins import LoadedPlugin
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


TargetSource = Callable[[], Sequence[Target]]
"""Returns the router's targets, building them on first use (called on the router's loop)."""

"""A destination paired with the plugin that delivers to it: what the router and the queue share.

The router builds one ``Target`` per enabled destination (on its own loop, where the pooled
client lives); direct sends and the queue's workers both deliver through them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from router_core.destination import Destination
from router_core.limits import BatchLimits
from router_core.plugins import LoadedPlugin

__all__ = ["Target", "TargetSource"]


class Target(NamedTuple):
    """One destination and its plugin."""

    plugin: LoadedPlugin
    destination: Destination[Any]

    @property
    def name(self) -> str:
        """The destination's name (from the config)."""
        return self.destination.name

    @property
    def limits(self) -> BatchLimits:
        """This destination's ``BatchLimits`` (they may depend on its settings)."""
        return self.plugin.limits_for(self.destination.settings)


TargetSource = Callable[[], Sequence[Target]]
"""Returns the router's targets, building them on first use (called on the router's loop)."""

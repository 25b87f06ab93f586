"""Which destinations one event goes to, and why the others are skipped.

In order, a destination is skipped when its ``events``/``types`` filters do not match
(``"filter"``), its plugin does not take the event's type (``"unsupported type"``), the
event's ``integrations`` switch it off (``"integrations"``, as the Segment spec defines them),
or the event's consent does not grant every category it needs (``"consent"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router_core.config import DestinationConfig
from router_core.events import Event

__all__ = ["Routing", "integrations_allow"]


def integrations_allow(integrations: Mapping[str, Any], names: Sequence[str]) -> bool:
    """Whether Segment's ``integrations`` object lets an event through to ``names``.

    Keys match the destination's name, then its plugin's name, case-insensitively; the first
    that matches decides, else ``All`` (default true). ``false`` switches off; ``true`` or an
    object of options (as Segment allows) switches on.
    """
    if not integrations:
        return True
    lowered = {str(key).lower(): value for key, value in integrations.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()] is not False
    return lowered.get("all", True) is not False


class Routing:
    """The routing decisions for a router's enabled destinations."""

    __slots__ = ("_consent_missing", "_destinations", "_everywhere")

    def __init__(self, destinations: Sequence[DestinationConfig], consent_missing: str) -> None:
        self._destinations = tuple(destinations)
        self._consent_missing = consent_missing == "deliver"
        # With nothing to decide, an event without integrations goes everywhere at no cost.
        self._everywhere: tuple[str, ...] | None = None
        if all(
            d.routing.types is None
            and d.routing.events is None
            and not d.routing.consent
            and d.event_types is None
            for d in self._destinations
        ):
            self._everywhere = tuple(d.name for d in self._destinations)

    def route(self, event: Event) -> tuple[tuple[str, ...], dict[str, str]]:
        """The destinations ``event`` goes to, and the reason for each one skipped."""
        if self._everywhere is not None and not event.integrations:
            return self._everywhere, {}
        chosen: list[str] = []
        skipped: dict[str, str] = {}
        for d in self._destinations:
            reason = self.skip_reason(d, event)
            if reason is None:
                chosen.append(d.name)
            else:
                skipped[d.name] = reason
        return tuple(chosen), skipped

    def skip_reason(self, d: DestinationConfig, event: Event) -> str | None:
        """Why ``d`` does not get ``event``, or ``None`` when it does."""
        if not d.routing.accepts(event):
            return "filter"
        if d.event_types is not None and event.type not in d.event_types:
            return "unsupported type"
        if not integrations_allow(event.integrations, (d.name, d.plugin)):
            return "integrations"
        if not d.routing.consented(event, missing=self._consent_missing):
            return "consent"
        return None

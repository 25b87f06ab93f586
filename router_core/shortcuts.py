"""``router.track(...)``, ``identify``, ``page``, ``screen``, ``group``, ``alias``, ``capture``.

The argument names and order are those of Segment's ``analytics-python`` (``analytics.track(
user_id, event, properties, context, timestamp, anonymous_id, integrations, message_id)``),
and ``capture(event, distinct_id=..., properties=...)`` is PostHog's, so code written for
either SDK moves over by renaming the object. Each builds the event, sends it with
``send()`` and returns the ``SendReport``; ``None`` leaves a field at its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from router_core.events import Event
from router_core.results import SendReport

__all__ = ["EventShortcuts"]


def _fields(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not None}


class EventShortcuts:
    """The SDK-shaped methods, on top of the class's ``send()``."""

    def send(self, event: Event | Mapping[str, Any]) -> SendReport:
        raise NotImplementedError

    def track(  # noqa: PLR0917 - positional, as in the SDK
        self,
        user_id: str | None = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> SendReport:
        """Send a track event (Segment's ``analytics.track``)."""
        return self.send(
            _fields(
                type="track",
                user_id=user_id,
                event=event,
                properties=properties,
                context=context,
                timestamp=timestamp,
                anonymous_id=anonymous_id,
                integrations=integrations,
                message_id=message_id,
            )
        )

    def identify(  # noqa: PLR0917 - positional, as in the SDK
        self,
        user_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> SendReport:
        """Send an identify event (Segment's ``analytics.identify``)."""
        return self.send(
            _fields(
                type="identify",
                user_id=user_id,
                traits=traits,
                context=context,
                timestamp=timestamp,
                anonymous_id=anonymous_id,
                integrations=integrations,
                message_id=message_id,
            )
        )

    def page(  # noqa: PLR0917 - positional, as in the SDK
        self,
        user_id: str | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> SendReport:
        """Send a page event (Segment's ``analytics.page``)."""
        return self.send(
            _fields(
                type="page",
                user_id=user_id,
                category=category,
                name=name,
                properties=properties,
                context=context,
                timestamp=timestamp,
                anonymous_id=anonymous_id,
                integrations=integrations,
                message_id=message_id,
            )
        )

    def screen(  # noqa: PLR0917 - positional, as in the SDK
        self,
        user_id: str | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> SendReport:
        """Send a screen event (Segment's ``analytics.screen``)."""
        return self.send(
            _fields(
                type="screen",
                user_id=user_id,
                category=category,
                name=name,
                properties=properties,
                context=context,
                timestamp=timestamp,
                anonymous_id=anonymous_id,
                integrations=integrations,
                message_id=message_id,
            )
        )

    def group(  # noqa: PLR0917 - positional, as in the SDK
        self,
        user_id: str | None = None,
        group_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> SendReport:
        """Send a group event (Segment's ``analytics.group``)."""
        return self.send(
            _fields(
                type="group",
                user_id=user_id,
                group_id=group_id,
                traits=traits,
                context=context,
                timestamp=timestamp,
                anonymous_id=anonymous_id,
                integrations=integrations,
                message_id=message_id,
            )
        )

    def alias(  # noqa: PLR0917 - positional, as in the SDK
        self,
        previous_id: str | None = None,
        user_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> SendReport:
        """Send an alias event (Segment's ``analytics.alias``)."""
        return self.send(
            _fields(
                type="alias",
                previous_id=previous_id,
                user_id=user_id,
                context=context,
                timestamp=timestamp,
                integrations=integrations,
                message_id=message_id,
            )
        )

    def capture(
        self,
        event: str,
        distinct_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: str | None = None,
    ) -> SendReport:
        """Send a track event the way PostHog's ``capture`` names things (``distinct_id`` is
        the user id, ``uuid`` the message id)."""
        return self.track(
            user_id=distinct_id,
            event=event,
            properties=properties,
            timestamp=timestamp,
            message_id=uuid,
        )

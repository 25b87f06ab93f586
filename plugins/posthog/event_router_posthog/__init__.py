"""PostHog destination for event-router.

Registered under the ``event_router`` entry-point group as ``posthog``::

    [destinations.posthog]
    plugin = "posthog"
    api_key = "${POSTHOG_API_KEY}"      # project API key, phc_...
    host = "https://eu.i.posthog.com"   # optional; US Cloud by default

Events are posted to ``{host}/batch/``; the six Segment-spec types map to PostHog's
(track -> the event name, identify -> ``$identify``, page -> ``$pageview``,
screen -> ``$screen``, group -> ``$groupidentify``, alias -> ``$create_alias``).
"""

from event_router_posthog.errors import PostHogAPIError
from event_router_posthog.plugin import batch_limits, destination_settings, send_batch, send_event
from event_router_posthog.settings import PostHogSettings

__all__ = [
    "PostHogAPIError",
    "PostHogSettings",
    "batch_limits",
    "destination_settings",
    "send_batch",
    "send_event",
]

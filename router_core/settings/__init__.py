"""Every settings model, in one place: what a config file may say, validated.

- ``destination``: the keys every ``[destinations.NAME]`` table takes (``RoutingSettings``,
  ``RetrySettings``) and ``DestinationSettings``, the base of each plugin's own model;
- ``queue``: ``[queue]`` and ``[queue.retry]`` (queued delivery through an outbox);
- ``logs``: ``[logging]``;
- ``http``: ``[http]`` (the router's HTTP client: proxy, TLS, pool sizes);
- ``problems``: pydantic errors as the one-line problems config errors list.
"""

from router_core.settings.destination import (
    ROUTING_KEYS,
    DestinationSettings,
    RetrySettings,
    RoutingSettings,
)
from router_core.settings.http import HttpSettings
from router_core.settings.logs import LoggingSettings
from router_core.settings.problems import config_strings, validation_problems, without_echoes
from router_core.settings.queue import DEFAULT_OUTBOX_PATH, QueueRetrySettings, QueueSettings

__all__ = [
    "DEFAULT_OUTBOX_PATH",
    "ROUTING_KEYS",
    "DestinationSettings",
    "HttpSettings",
    "LoggingSettings",
    "QueueRetrySettings",
    "QueueSettings",
    "RetrySettings",
    "RoutingSettings",
    "config_strings",
    "validation_problems",
    "without_echoes",
]

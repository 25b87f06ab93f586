"""event-router: send each product-analytics event once, to every destination.

>>> from router_core import Router, Event
>>> with Router.from_config("config/router.toml") as router:          # doctest: +SKIP
...     report = router.send(Event.track("Order Completed", user_id="user_12345"))
"""

from router_core._version import __version__ as __version__
from router_core.config import DestinationConfig, RouterConfig
from router_core.destination import Destination
from router_core.errors import (
    ConfigError,
    DeliveryDisabledError,
    DeliveryError,
    InvalidEventError,
    PluginLoadError,
    RouterClosedError,
    RouterError,
    TransactionalSendError,
)
from router_core.events import (
    AliasEvent,
    Event,
    EventType,
    GroupEvent,
    IdentifyEvent,
    PageEvent,
    ScreenEvent,
    TrackEvent,
)
from router_core.hookspecs import hookimpl
from router_core.http import (
    LIBRARY_NAME,
    LIBRARY_VERSION,
    USER_AGENT,
    is_retryable_status,
    raise_for_status,
)
from router_core.kit import (
    GZIP_LEVEL,
    Oversize,
    describe_oversize,
    encode_json,
    event_json,
    json_array,
    post_events,
)
from router_core.limits import BatchLimits
from router_core.logs import configure_logging
from router_core.outbox import (
    OutboxDiskFullError,
    OutboxFullError,
    OutboxStats,
    OutboxUnavailableError,
    QueueRetrySettings,
    QueueSettings,
)
from router_core.plugins import PluginInfo, PluginRegistry
from router_core.redaction import RedactedError
from router_core.response_cap import MAX_BODY_EXTENSION, RESPONSE_BODY_LIMIT, body_truncated
from router_core.results import BatchReport, Delivery, DeliveryResult, FlushResult, SendReport
from router_core.router import Router
from router_core.settings import DestinationSettings, HttpSettings, RetrySettings
from router_core.transforms import TransformError, TransformOutcome, TransformPipeline

__all__ = [
    "GZIP_LEVEL",
    "LIBRARY_NAME",
    "LIBRARY_VERSION",
    "MAX_BODY_EXTENSION",
    "RESPONSE_BODY_LIMIT",
    "USER_AGENT",
    "AliasEvent",
    "BatchLimits",
    "BatchReport",
    "ConfigError",
    "Delivery",
    "DeliveryDisabledError",
    "DeliveryError",
    "DeliveryResult",
    "Destination",
    "DestinationConfig",
    "DestinationSettings",
    "Event",
    "EventType",
    "FlushResult",
    "GroupEvent",
    "HttpSettings",
    "IdentifyEvent",
    "InvalidEventError",
    "OutboxDiskFullError",
    "OutboxFullError",
    "OutboxStats",
    "OutboxUnavailableError",
    "Oversize",
    "PageEvent",
    "PluginInfo",
    "PluginLoadError",
    "PluginRegistry",
    "QueueRetrySettings",
    "QueueSettings",
    "RedactedError",
    "RetrySettings",
    "Router",
    "RouterClosedError",
    "RouterConfig",
    "RouterError",
    "ScreenEvent",
    "SendReport",
    "TrackEvent",
    "TransactionalSendError",
    "TransformError",
    "TransformOutcome",
    "TransformPipeline",
    "body_truncated",
    "configure_logging",
    "describe_oversize",
    "encode_json",
    "event_json",
    "hookimpl",
    "is_retryable_status",
    "json_array",
    "post_events",
    "raise_for_status",
]

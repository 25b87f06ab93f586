"""OpenTelemetry metrics of delivery, built on the observer hooks (``event-router[otel]``).

``instrument(router)`` registers a ``DeliveryMetrics`` observer in the router's plugin
registry and, in queued mode, a gauge of the outbox backlog. It uses ``opentelemetry-api``
only: the instruments do nothing until the application configures an SDK (a
``MeterProvider`` with a reader and an exporter), as OpenTelemetry libraries should.

| instrument | kind | attributes |
| --- | --- | --- |
| ``event_router.delivered`` | counter of events | ``destination`` |
| ``event_router.failed`` | counter of events given up on (outcome ``failed``) | ``destination`` |
| ``event_router.retried`` | counter of attempts to be retried | ``destination`` |
| ``event_router.dead`` | counter of events dead-lettered | ``destination`` |
| ``event_router.attempt.duration`` | histogram, ms | ``destination``, ``outcome`` |
| ``event_router.outbox.pending`` | observable gauge of events | ``destination`` |
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as exc:  # the extra is not installed: say which one
    raise ImportError(
        "OpenTelemetry metrics need the otel extra: pip install 'event-router[otel]'"
    ) from exc

from router_core._version import __version__
from router_core.hookspecs import hookimpl
from router_core.logs import get_logger

if TYPE_CHECKING:
    from router_core.router import Router

__all__ = ["METRICS_PLUGIN", "DeliveryMetrics", "instrument"]

METRICS_PLUGIN = "event_router_metrics"
"""The name ``instrument()`` registers the observer under."""

_RETRIED = frozenset({"retrying", "retry_later"})


def _meter(provider: MeterProvider | None) -> Any:
    source = provider if provider is not None else metrics.get_meter_provider()
    return source.get_meter("event_router", __version__)


class DeliveryMetrics:
    """An observer plugin that counts deliveries per destination (see the module docstring)."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = _meter(meter_provider)
        self._meter = meter
        self._delivered = meter.create_counter(
            "event_router.delivered", unit="{event}", description="Events delivered"
        )
        self._failed = meter.create_counter(
            "event_router.failed", unit="{event}", description="Events given up on after failing"
        )
        self._retried = meter.create_counter(
            "event_router.retried", unit="{attempt}", description="Failed attempts to be retried"
        )
        self._dead = meter.create_counter(
            "event_router.dead", unit="{event}", description="Events put in the dead letter"
        )
        self._duration = meter.create_histogram(
            "event_router.attempt.duration", unit="ms", description="Delivery attempt durations"
        )

    @hookimpl
    def delivery_attempted(  # noqa: PLR0917 - the hook's arguments
        self,
        destination: str,
        message_id: str,
        outcome: str,
        attempt: int,
        duration_ms: float,
        error: str | None,
    ) -> None:
        attributes = {"destination": destination}
        if outcome == "delivered":
            self._delivered.add(1, attributes)
        elif outcome == "failed":
            self._failed.add(1, attributes)
        elif outcome in _RETRIED:
            self._retried.add(1, attributes)
        self._duration.record(duration_ms, {"destination": destination, "outcome": outcome})

    @hookimpl
    def dead_lettered(self, destination: str, message_id: str, error: str) -> None:
        self._dead.add(1, {"destination": destination})

    def watch_backlog(self, router: Router) -> None:
        """Report ``router``'s outbox backlog per destination (queued mode; else nothing)."""
        if router.outbox is None:
            return
        outbox, names = router.outbox, tuple(router.destinations)
        log = get_logger("event_router.metrics")

        def backlog(options: CallbackOptions) -> Iterable[Observation]:
            try:
                pending = outbox.pending(names)
            except Exception as exc:  # a closed outbox: nothing to report
                log.debug("outbox_backlog_unavailable", error=f"{type(exc).__name__}: {exc}")
                return []
            return [Observation(count, {"destination": name}) for name, count in pending.items()]

        self._meter.create_observable_gauge(
            "event_router.outbox.pending",
            callbacks=[backlog],
            unit="{event}",
            description="Events in the outbox waiting for delivery",
        )


def instrument(router: Router, meter_provider: MeterProvider | None = None) -> DeliveryMetrics:
    """Record OpenTelemetry metrics of ``router``'s deliveries (and its outbox backlog).

    The observer joins the router's plugin registry (once per registry: every router sharing
    it is counted, by destination name). ``meter_provider`` defaults to the global one.
    """
    registry = router.plugins
    observer: DeliveryMetrics
    if METRICS_PLUGIN in registry:
        obj = registry.get(METRICS_PLUGIN).obj
        assert isinstance(obj, DeliveryMetrics)
        observer = obj
    else:
        observer = DeliveryMetrics(meter_provider)
        registry.register(observer, METRICS_PLUGIN)
    observer.watch_backlog(router)
    return observer

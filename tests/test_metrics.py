"""OpenTelemetry metrics (``router_core.metrics``): the counters match what was delivered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

from router_core import (
    Delivery,
    DeliveryError,
    Destination,
    DestinationSettings,
    Event,
    PluginRegistry,
    Router,
    hookimpl,
)
from router_core.metrics import instrument


class Settings(DestinationSettings):
    fail_every: int = 0  # every n-th event is refused permanently (0: none)


class Flaky:
    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    @hookimpl
    def destination_settings(self) -> type[Settings]:
        return Settings

    @hookimpl
    async def send_event(self, destination: Destination[Settings], event: Event) -> Delivery:
        n = self.seen[destination.name] = self.seen.get(destination.name, 0) + 1
        every = destination.settings.fail_every
        if every and n % every == 0:
            raise DeliveryError("refused", status_code=400)
        return Delivery(200)


def points(reader: InMemoryMetricReader) -> dict[tuple[str, str], Any]:
    """``{(metric name, destination): value}`` (a count for histograms)."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[tuple[str, str], Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, str(dict(point.attributes or {})["destination"]))
                    if isinstance(point, HistogramDataPoint):  # one per outcome: add them up
                        found[key] = found.get(key, 0) + point.count
                    elif isinstance(point, NumberDataPoint):
                        found[key] = point.value
    return found


def test_counters_match_delivered_and_failed_counts(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    plugins = PluginRegistry(entry_points=False)
    plugins.register(Flaky(), "flaky")
    config: dict[str, dict[str, Any]] = {
        "steady": {"plugin": "flaky"},
        "shaky": {"plugin": "flaky", "fail_every": 3},
    }
    with Router(config, plugins=plugins) as router:
        instrument(router, provider)
        reports = [router.send(Event.track(f"E{i}", user_id="u")) for i in range(9)]
    direct_failed = sum(len(r.failed) for r in reports)
    direct_ok = sum(len(r.results) for r in reports) - direct_failed
    queue = {"path": str(tmp_path / "o.db"), "flush_interval": 0.01}
    failures: list[str] = []
    with Router(
        config, plugins=plugins, queue=queue, on_error=lambda m, r: failures.append(m)
    ) as router:
        instrument(router, provider)
        for i in range(6):
            router.send(Event.track(f"Q{i}", user_id="u"))
        flushed = router.flush(30.0)
        backlog = points(reader)
    assert flushed.complete
    got = points(reader)
    assert direct_failed == 3
    assert got[("event_router.delivered", "steady")] == 9 + 6
    assert got[("event_router.delivered", "shaky")] == 6 + 4
    assert got[("event_router.failed", "shaky")] == 3 + 2
    assert (
        got[("event_router.delivered", "steady")] + got[("event_router.delivered", "shaky")]
        == direct_ok + 6 + 4
    )
    assert got[("event_router.dead", "shaky")] == flushed.dead["shaky"] == len(failures) == 2
    assert ("event_router.failed", "steady") not in got
    assert got[("event_router.attempt.duration", "shaky")] == 9 + 6
    assert backlog[("event_router.outbox.pending", "shaky")] == 0

"""Direct delivery of many events at once (``Router.send_many``): one request per chunk.

Each destination gets its events in chunks that fit its plugin's ``BatchLimits`` (planned by
``plan_batch`` on the events' JSON sizes, as the outbox plans its claims), one ``send_batch``
request per chunk, retried as the destination's retry policy allows. A chunk refused
permanently is split in halves to find the events at fault (``deliver_splitting``, shared with
queued delivery). A plugin without ``send_batch`` gets one ``send_event`` per event, a few at a
time. Destinations are delivered to concurrently; one destination's chunks go one after
another, and once a chunk has failed transiently (its retries spent) the rest of that
destination's chunks are not tried: they fail with an error saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from router_core.delivery import Outcome, deliver, deliver_batch
from router_core.destination import Destination
from router_core.errors import InvalidEventError
from router_core.events import Event
from router_core.limits import BatchLimits
from router_core.outbox.store import plan_batch
from router_core.results import DeliveryResult, SendReport
from router_core.splitting import deliver_splitting
from router_core.targets import Target

__all__ = ["EACH_CONCURRENCY", "Progress", "Route", "deliver_many", "parse_many"]

EACH_CONCURRENCY = 10
"""Events in flight at once to a destination whose plugin has no ``send_batch``."""

Route = tuple[tuple[str, ...], Mapping[str, str]]
"""Where one event goes: the destinations chosen, and why each of the others skips it."""

Progress = Callable[[int], None]
"""Told how many more (event, destination) deliveries just ended (on the router's loop)."""


def parse_many(events: Sequence[Event | Any]) -> list[Event]:
    """Validate every event before any is sent; the error names the index at fault."""
    parsed: list[Event] = []
    for index, event in enumerate(events):
        try:
            parsed.append(Event.parse(event))
        except InvalidEventError as exc:
            problems = [(f"[{index}].{where}", why) for where, why in exc.problems]
            raise InvalidEventError(f"event {index}: {exc}", problems) from None
    return parsed


async def deliver_many(
    targets: Sequence[Target],
    events: Sequence[Event],
    routes: Sequence[Route],
    progress: Progress | None = None,
) -> list[SendReport]:
    """Deliver ``events`` (routed by ``routes``) to ``targets``; a report per event, in order."""
    results: list[dict[str, DeliveryResult]] = [{} for _ in events]
    skips: list[dict[str, str]] = [dict(skipped) for _, skipped in routes]
    jobs = []
    for target in targets:
        indexes = [i for i, (chosen, _) in enumerate(routes) if target.name in chosen]
        if indexes:
            jobs.append(
                _to_target(
                    target,
                    events=events,
                    indexes=indexes,
                    results=results,
                    skips=skips,
                    progress=progress,
                )
            )
    await asyncio.gather(*jobs)
    order = {target.name: n for n, target in enumerate(targets)}
    reports = []
    for event, got, skipped in zip(events, results, skips, strict=True):
        # Destinations in config order, however their deliveries interleaved.
        named = sorted(skipped, key=lambda name: order.get(name, len(order)))
        reports.append(
            SendReport(
                message_id=event.message_id,
                results={name: got[name] for name in sorted(got, key=order.__getitem__)},
                skipped=tuple(named),
                skip_reasons={name: skipped[name] for name in named},
            )
        )
    return reports


async def _to_target(
    target: Target,
    *,
    events: Sequence[Event],
    indexes: Sequence[int],
    results: list[dict[str, DeliveryResult]],
    skips: list[dict[str, str]],
    progress: Progress | None,
) -> None:
    """One destination's share: its transforms first, then its events in chunks."""
    name = target.name

    def record(part: Sequence[int], result: DeliveryResult) -> None:
        for i in part:
            results[i][name] = result
        if progress is not None:
            progress(len(part))

    if target.transforms is None:
        await _to_destination(target, events, indexes, record)
        return
    mine = list(events)  # this destination's events, as its transforms made them
    batched: list[int] = []
    alone: list[int] = []
    for i in indexes:
        outcome = target.transforms.apply(events[i])
        if outcome.error is not None:
            record([i], target.transform_failure(outcome.error))
        elif not outcome.events:
            skips[i][name] = outcome.dropped or "dropped by transform"
            if progress is not None:
                progress(1)
        elif len(outcome.events) == 1:
            mine[i] = outcome.events[0]
            batched.append(i)
        else:
            alone.append(i)  # split by a plugin transform: each part goes on its own

    async def split(i: int) -> None:
        answer = await target.deliver(events[i])
        if isinstance(answer, str):
            skips[i][name] = answer
        else:
            record([i], answer)

    await asyncio.gather(_to_destination(target, mine, batched, record), *map(split, alone))


async def _to_destination(
    target: Target,
    events: Sequence[Event],
    indexes: Sequence[int],
    record: Callable[[Sequence[int], DeliveryResult], None],
) -> None:
    if not indexes:
        return
    plugin, destination, observers = target.plugin, target.destination, target.observers
    if plugin.send_batch is None:
        gate = asyncio.Semaphore(EACH_CONCURRENCY)

        async def one(i: int) -> None:
            async with gate:
                record([i], await deliver(plugin, destination, events[i], observers))

        await asyncio.gather(*(one(i) for i in indexes))
        return
    policy = destination.routing.retry

    async def send(part: Sequence[int]) -> Outcome:
        return await deliver_batch(
            plugin, destination, [events[i] for i in part], policy=policy, observers=observers
        )

    def settle(part: Sequence[int], outcome: Outcome) -> bool:
        record(part, outcome.to_result(destination))
        # A destination still failing after its retries: the chunks after this one would only
        # wait out the same backoff.
        return outcome.success or not outcome.retryable

    def on_split(size: int, outcome: Outcome) -> None:
        destination.log.info(
            "batch_split", events=size, status_code=outcome.status_code, error=outcome.error
        )

    chunks = _chunks(target.limits, events, indexes)
    for number, chunk in enumerate(chunks):
        if not await deliver_splitting(chunk, send, settle, on_split):
            _give_up(destination, [i for rest in chunks[number + 1 :] for i in rest], record)
            return


def _chunks(
    limits: BatchLimits, events: Sequence[Event], indexes: Sequence[int]
) -> list[list[int]]:
    """``indexes`` cut into chunks of one request each, within the destination's limits."""
    sizes = [len(events[i].model_dump_json()) for i in indexes]
    chunks: list[list[int]] = []
    start = 0
    while start < len(indexes):
        count = plan_batch(sizes[start : start + limits.max_events], limits, limits.max_events)
        chunks.append(list(indexes[start : start + count]))
        start += count
    return chunks


def _give_up(
    destination: Destination[Any],
    left: Sequence[int],
    record: Callable[[Sequence[int], DeliveryResult], None],
) -> None:
    if not left:
        return
    error = "not sent: an earlier batch to this destination failed after its retries"
    record(
        left,
        Outcome(success=False, attempts=0, duration_ms=0.0, error=error).to_result(destination),
    )

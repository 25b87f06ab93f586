"""Finding the events at fault in a batch a destination refused: split it in halves.

Queued delivery (the outbox worker) and ``Router.send_many`` both send one request per batch.
A permanent refusal that may blame a single event (400, 413, or a plugin's own refusal with no
status) does not condemn the whole batch: it is sent again in halves, recursively, until the
refused events are alone, so the good ones are still delivered. A transient failure or a
refusal of the batch as such (401, 403, ...) settles the batch as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from router_core.delivery import Outcome

__all__ = ["SPLITTABLE", "deliver_splitting", "splittable"]

T = TypeVar("T")

SPLITTABLE = frozenset({400, 413})
"""Status codes that may blame one event of a batch rather than the batch itself."""


def splittable(outcome: Outcome, size: int) -> bool:
    """Whether a batch of ``size`` events that ended with ``outcome`` is worth splitting."""
    return (
        size > 1
        and not outcome.success
        and not outcome.retryable
        and (outcome.status_code is None or outcome.status_code in SPLITTABLE)
    )


async def deliver_splitting(
    batch: Sequence[T],
    send: Callable[[Sequence[T]], Awaitable[Outcome]],
    settle: Callable[[Sequence[T], Outcome], bool],
    on_split: Callable[[int, Outcome], None] | None = None,
) -> bool:
    """Send ``batch`` with ``send``; on a splittable refusal, send each half the same way.

    ``settle(items, outcome)`` records how a (sub-)batch that was not split ended and returns
    whether to go on: ``False`` (say, the destination is backing off) stops the halves not
    sent yet, and ``deliver_splitting`` returns ``False`` too. ``on_split(size, outcome)`` is
    told each time a batch is split (for a log line).
    """
    outcome = await send(batch)
    if not splittable(outcome, len(batch)):
        return settle(batch, outcome)
    if on_split is not None:
        on_split(len(batch), outcome)
    middle = len(batch) // 2
    return await deliver_splitting(
        batch[:middle], send, settle, on_split
    ) and await deliver_splitting(batch[middle:], send, settle, on_split)

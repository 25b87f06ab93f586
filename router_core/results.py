"""What a plugin returns (``Delivery``) and what the app gets back: a ``DeliveryResult`` per
destination in a ``SendReport`` per event, and a ``FlushResult`` from ``flush()``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchReport", "Delivery", "DeliveryResult", "FlushResult", "SendReport"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A plugin's answer for a delivered event (failures are raised as ``DeliveryError``).

    ``output`` is the destination's response in the shape its users know, e.g. Segment's
    ``{"success": true}``; the router fills in ``{"success": True}`` when it is empty.
    """

    status_code: int | None = None
    output: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one event at one destination.

    ``error`` is a human-readable message; ``exception`` the exception that caused the failure,
    when there was one (not part of ``to_dict()``). ``output`` is the destination's answer.

    Every secret the destination's settings declare (``SecretStr``, also base64-encoded as in
    an HTTP Basic header) is masked as ``**********`` in all of them, whatever plugin raised:
    ``exception`` is masked when the router receives it, in its ``args``, its ``str()`` and
    ``repr()``, its notes, ``DeliveryError.message``, ``body`` and ``output``, and in every
    exception chained to it (``__cause__``, ``__context__``, group members), so a printed
    traceback shows no key either. It is normally the plugin's own exception (same object, so
    ``isinstance`` checks hold); one whose text is built outside ``args`` gets a same-named
    subclass that masks its ``str()`` and ``repr()``. Only a built-in exception type keeping
    text elsewhere (an ``OSError``'s file name) is replaced by ``router_core.RedactedError``,
    which keeps the type's name, the masked text, the traceback and the chain; the original is
    dropped because it still holds the key. Frame locals of the traceback are not masked.
    """

    destination: str
    plugin: str
    success: bool
    status_code: int | None = None
    error: str | None = None
    attempts: int = 1
    duration_ms: float = 0.0
    output: Mapping[str, Any] = field(default_factory=dict)
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "plugin": self.plugin,
            "success": self.success,
            "status_code": self.status_code,
            "error": self.error,
            "attempts": self.attempts,
            "duration_ms": round(self.duration_ms, 3),
            "output": dict(self.output),
        }


@dataclass(frozen=True, slots=True)
class SendReport:
    """Per-destination results of one ``send()``.

    ``results`` is keyed by destination name (from the config). ``skipped`` names enabled
    destinations the event did not go to, and ``skip_reasons`` says why for each of them:
    ``"filter"`` (its ``events``/``types``), ``"unsupported type"`` (its plugin does not take
    the event's type), ``"integrations"`` (the event's ``integrations`` switched it off),
    ``"consent"``, or what a transform said when it dropped the event (``"sampled out"``,
    ``"dropped by transform drop_events"``). ``queued`` is true when the event was
    accepted into the outbox rather than delivered while the caller waited; ``results`` is then
    empty and ``queued_for`` names the destinations it will be delivered to. ``disabled`` is
    true when the router is switched off (``Router(disabled=True)``): the event was validated
    and routed, nothing was sent or stored; ``results`` is empty and ``disabled_for`` names
    the destinations it would have gone to.
    """

    message_id: str
    results: Mapping[str, DeliveryResult]
    skipped: tuple[str, ...] = ()
    queued: bool = False
    queued_for: tuple[str, ...] = ()
    disabled: bool = False
    disabled_for: tuple[str, ...] = ()
    skip_reasons: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every destination the event was routed to delivered it."""
        return all(result.success for result in self.results.values())

    @property
    def failed(self) -> dict[str, DeliveryResult]:
        return {name: r for name, r in self.results.items() if not r.success}

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "ok": self.ok,
            "queued": self.queued,
            "queued_for": list(self.queued_for),
            "results": {name: result.to_dict() for name, result in self.results.items()},
            "skipped": list(self.skipped),
            "skip_reasons": {name: self.skip_reasons.get(name, "filter") for name in self.skipped},
            "disabled": self.disabled,
            "disabled_for": list(self.disabled_for),
        }


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What ``send_many()`` did: one ``SendReport`` per event, in the order given."""

    reports: Sequence[SendReport]

    @property
    def ok(self) -> bool:
        """True when every event reached every destination it was routed to."""
        return all(report.ok for report in self.reports)

    @property
    def failed(self) -> list[SendReport]:
        """The reports of events that failed at some destination, in input order."""
        return [report for report in self.reports if not report.ok]

    def __len__(self) -> int:
        return len(self.reports)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per destination: how many events were ``delivered``, ``failed`` and ``skipped``
        (``queued`` and ``disabled`` in those modes)."""
        counts: dict[str, dict[str, int]] = {}

        def bump(name: str, state: str) -> None:
            row = counts.setdefault(
                name, {"delivered": 0, "failed": 0, "skipped": 0, "queued": 0, "disabled": 0}
            )
            row[state] += 1

        for report in self.reports:
            for name, result in report.results.items():
                bump(name, "delivered" if result.success else "failed")
            for name in report.skipped:
                bump(name, "skipped")
            for name in report.queued_for:
                bump(name, "queued")
            for name in report.disabled_for:
                bump(name, "disabled")
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": len(self.reports),
            "failed": len(self.failed),
            "counts": self.counts(),
            "reports": [report.to_dict() for report in self.reports],
        }


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What ``router.flush()`` left behind.

    ``pending`` counts, per destination, the events accepted before the flush that are not
    delivered yet (0 for each destination when everything went); ``dead`` counts the rows
    in the dead letter per destination. ``timed_out`` is true when the timeout ended the wait.
    """

    pending: Mapping[str, int] = field(default_factory=dict)
    dead: Mapping[str, int] = field(default_factory=dict)
    timed_out: bool = False

    @property
    def complete(self) -> bool:
        """True when nothing accepted before the flush is still waiting for delivery."""
        return not any(self.pending.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "timed_out": self.timed_out,
            "pending": dict(self.pending),
            "dead": dict(self.dead),
        }

"""What a plugin returns (`Delivery`) and what the app gets back (results and reports)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchLimits", "Delivery", "DeliveryResult", "SendReport"]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What one request to a destination may carry. Sizes are of the JSON the plugin sends."""

    max_events: int = 100
    max_request_bytes: int = 500_000
    max_event_bytes: int = 32_000


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
    empty and ``queued_for`` names the destinations it will be delivered to.
    """

    message_id: str
    results: Mapping[str, DeliveryResult]
    skipped: tuple[str, ...] = ()
    queued: bool = False
    queued_for: tuple[str, ...] = ()
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
        }

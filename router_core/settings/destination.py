"""Settings shared by every destination, and the base class for a plugin's own settings."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router_core.events import Event, EventType
from router_core.secrets import MaskedReprModel

__all__ = ["DestinationSettings", "RetrySettings", "RoutingSettings"]


class DestinationSettings(MaskedReprModel):
    """Base class for a plugin's settings model. Unknown keys are errors, to catch typos.

    Validation errors never repeat the input, and ``repr()`` masks secrets even in fields not
    declared ``SecretStr`` (any field whose name looks secret, and every registered secret).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RetrySettings(BaseModel):
    """How a destination retries transient failures (408, 429, 5xx, timeouts, network errors).

    Backoff is exponential with full jitter above a floor: attempt ``n`` waits a random time
    in ``[backoff_min, min(backoff_max, backoff_base * 2**(n-1))]`` (``backoff_min`` caps at
    ``backoff_max``, so ``backoff_max`` below 0.1 s also lowers the floor). A server's
    ``Retry-After`` is a minimum: the wait is at least that long, up to ``retry_after_max``.
    Retries stop after ``max_attempts`` attempts or when the next wait would pass
    ``max_elapsed`` seconds since the first attempt. Times are in seconds, finite.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_min: float = Field(default=0.1, ge=0, allow_inf_nan=False)
    backoff_base: float = Field(default=0.5, ge=0, allow_inf_nan=False)
    backoff_max: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    retry_after_max: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    max_elapsed: float = Field(default=120.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _floor_within_the_ceiling(self) -> Self:
        # Only an explicit floor can contradict the ceiling: the default one gives way.
        if "backoff_min" in self.model_fields_set and self.backoff_min > self.backoff_max:
            raise ValueError(
                f"backoff_min ({self.backoff_min:g}) must not be more than "
                f"backoff_max ({self.backoff_max:g})"
            )
        return self


class RoutingSettings(MaskedReprModel):
    """The keys every destination table may carry, read by the router rather than the plugin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plugin: str = Field(min_length=1)
    enabled: bool = True
    events: tuple[str, ...] | None = None
    types: tuple[EventType, ...] | None = None
    timeout: float = Field(default=10.0, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    consent: tuple[str, ...] | None = None
    max_in_flight: int | None = Field(default=None, ge=1, le=10_000)
    """Queued delivery: at most this many batches of this destination in flight at once,
    across every worker sharing the outbox (``None``: one per worker task). A rate-limited
    vendor is then not hammered harder as workers are added."""

    @field_validator("events", "consent", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    def accepts(self, event: Event) -> bool:
        """Whether this destination's filters let ``event`` through.

        ``types`` lists the event types taken; ``events`` holds glob patterns matched against a
        track event's name and against every event's type (so ``"identify"`` selects identifies).
        """
        if self.types is not None and event.type not in self.types:
            return False
        if self.events is None:
            return True
        label = event.label
        return any(fnmatchcase(label, p) or fnmatchcase(event.type, p) for p in self.events)

    def consented(self, event: Event, *, missing: bool = True) -> bool:
        """Whether ``event``'s consent grants every category this destination needs.

        The consent object is Segment's ``context.consent.categoryPreferences``; an event
        without one gets ``missing`` (the router's ``[consent] missing`` setting).
        """
        if not self.consent:
            return True
        consent = event.context.get("consent")
        preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
        if not isinstance(preferences, dict):
            return missing
        return all(preferences.get(category) is True for category in self.consent)


ROUTING_KEYS = frozenset(RoutingSettings.model_fields)

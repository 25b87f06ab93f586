"""Settings shared by every destination, and the base class for a plugin's own settings."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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

    Backoff is exponential with full jitter: attempt ``n`` waits a random time in
    ``[0, min(backoff_max, backoff_base * 2**(n-1))]``, or the server's ``Retry-After`` when it
    sends one (capped at ``retry_after_max``). Retries stop after ``max_attempts`` attempts or
    when the next wait would pass ``max_elapsed`` seconds since the first attempt.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_base: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    retry_after_max: float = Field(default=60.0, ge=0)
    max_elapsed: float = Field(default=120.0, gt=0)


class RoutingSettings(MaskedReprModel):
    """The keys every destination table may carry, read by the router rather than the plugin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plugin: str = Field(min_length=1)
    enabled: bool = True
    events: tuple[str, ...] | None = None
    types: tuple[EventType, ...] | None = None
    timeout: float = Field(default=10.0, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)

    @field_validator("events", mode="before")
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


ROUTING_KEYS = frozenset(RoutingSettings.model_fields)

"""Delivering to one destination: isolation, timeouts, retries, one log line per try.

One attempt loop serves single events (``send_event``) and batches (``send_batch``): each try
runs under the destination's timeout, whatever the plugin raises is classified as retryable or
permanent, and ``Retry-After`` is honoured. Direct sends retry in the loop with the
destination's ``RetrySettings``; the queue's worker makes one attempt per call and schedules
retries in the outbox instead, so a destination backing off never holds anything else up.

Nothing here raises: whatever the plugin does (raise, hang, return garbage), the caller gets
an ``Outcome`` (or a ``DeliveryResult``) saying what happened, so other destinations are never
affected.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from router_core.destination import Destination
from router_core.errors import DeliveryError
from router_core.events import Event
from router_core.observers import NO_OBSERVERS, Observers
from router_core.plugins import LoadedPlugin
from router_core.redaction import exception_text, redact_exception
from router_core.results import Delivery, DeliveryResult
from router_core.retry import backoff_delay, retry_after_seconds
from router_core.secrets import redact, redact_value
from router_core.settings import RetrySettings

__all__ = ["Outcome", "attempt_limit", "deliver", "deliver_batch", "deliver_event"]

T = TypeVar("T")

# The router's guard around each attempt fires this long after the destination's timeout, so
# a plugin that honours ``destination.timeout`` reports its own error (it knows best what
# timed out); the guard only stops plugins that ignore the timeout.
_GUARD_GRACE_S = 0.5


def attempt_limit(destination: Destination[Any]) -> float:
    """The longest one attempt at ``destination`` can take, in seconds."""
    return destination.routing.timeout + _GUARD_GRACE_S


class _BadReturn(TypeError):
    """The plugin returned something other than a ``Delivery``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How delivering one event (or one batch) to one destination ended.

    On failure, ``retryable`` says whether a later attempt may succeed and ``retry_after`` is
    the server's ``Retry-After`` in seconds, when it sent one.
    """

    success: bool
    attempts: int
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    output: Mapping[str, Any] = field(default_factory=dict)
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def to_result(self, destination: Destination[Any]) -> DeliveryResult:
        """The ``DeliveryResult`` an app sees for this outcome (secrets masked in ``output``)."""
        if self.success:
            output: Mapping[str, Any] = self.output or {"success": True}
        else:
            failed = dict(self.output)
            failed.setdefault("success", False)
            failed.setdefault("error", self.error)
            output = failed
        # A destination's answer may echo the key, on success as on failure.
        output = redact_value(output)
        return DeliveryResult(
            destination=destination.name,
            plugin=destination.plugin,
            success=self.success,
            status_code=self.status_code,
            error=self.error,
            attempts=self.attempts,
            duration_ms=self.duration_ms,
            output=output,
            exception=self.exception,
        )


class _Failure:
    """How one failed attempt went, normalised from whatever was raised."""

    __slots__ = ("error", "exception", "output", "retry_after", "retryable", "status_code")

    def __init__(
        self,
        error: str,
        exception: BaseException,
        *,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
        output: Mapping[str, Any] | None = None,
    ) -> None:
        self.error = redact(error)
        self.exception = exception
        self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after
        self.output = redact_value(output) if output is not None else None


async def _in_thread(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run a blocking ``fn`` on the loop's default executor, in this task's context.

    On the router's loop that is a ``DaemonExecutor``: a plugin that never returns holds a
    daemon thread, never the interpreter's exit, and it still takes work while ``atexit``
    handlers run (the flush at exit must reach blocking plugins).
    """
    call = functools.partial(contextvars.copy_context().run, fn, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(None, call)


async def _call_hook(caller: Callable[..., list[Any]], is_async: bool, **kwargs: Any) -> Any:
    if is_async:
        returned = caller(**kwargs)
    else:
        # A blocking plugin must not stall the event loop the other destinations share.
        returned = await _in_thread(caller, **kwargs)
    outcome = returned[0] if returned else None
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return outcome


def _classify(exc: BaseException, timeout: float) -> _Failure:
    # The one place a plugin's exception enters the router: its secrets are masked here, so
    # results, log lines and the outbox only ever see the masked one.
    clean = redact_exception(exc)
    name = type(exc).__name__
    if isinstance(exc, DeliveryError):
        return _Failure(
            exc.message,
            clean,
            retryable=exc.retryable,
            status_code=exc.status_code,
            retry_after=exc.retry_after,
            output=exc.output,
        )
    if isinstance(exc, _BadReturn):
        return _Failure(str(exc), clean, retryable=False)
    if isinstance(exc, TimeoutError):
        return _Failure(f"timed out after {timeout:g}s", clean, retryable=True)
    if isinstance(exc, httpx.TimeoutException):
        return _Failure(f"timed out: {name}", clean, retryable=True)
    text = exception_text(exc)
    if isinstance(exc, httpx.TransportError):
        host = _host_of(exc)
        if host is None:
            return _Failure(f"network error: {name}: {text}", clean, retryable=True)
        if isinstance(exc, httpx.ConnectError):
            return _Failure(
                f"network error: cannot connect to {host} ({name})", clean, retryable=True
            )
        return _Failure(f"network error with {host}: {name}: {text}", clean, retryable=True)
    return _Failure(f"plugin raised {name}: {text}", clean, retryable=False)


def _host_of(exc: httpx.TransportError) -> str | None:
    """``host:port`` of the request that failed (never its path or query: they may hold a
    key), or None when the error carries no request."""
    try:
        url = exc.request.url
    except RuntimeError:  # raised by hand, without a request
        return None
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return redact(f"{host}:{port}" if port else host)


async def _attempts(
    destination: Destination[Any],
    hook: str,
    call: Callable[[], Awaitable[Any]],
    *,
    policy: RetrySettings | None,
    log_fields: Mapping[str, Any],
    message_ids: Sequence[str],
    observers: Observers,
    first_attempt: int = 1,
) -> Outcome:
    """The attempt loop: try ``call``; retry transient failures while ``policy`` allows.

    ``policy=None`` makes exactly one attempt. ``first_attempt`` numbers the log lines when
    earlier attempts happened elsewhere (the outbox counts them across runs). Each attempt is
    logged and told to ``observers`` (for ``message_ids``, the events it carried).
    """
    timeout = destination.routing.timeout
    log = destination.log
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        attempt_started = time.perf_counter()
        try:
            outcome = await asyncio.wait_for(call(), attempt_limit(destination))
            if not isinstance(outcome, Delivery):
                raise _BadReturn(
                    f"plugin returned {type(outcome).__name__} from {hook}, expected Delivery"
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = _classify(exc, timeout)
        else:
            duration_ms = (time.perf_counter() - attempt_started) * 1000
            log.debug(
                "delivery_attempt",
                status="delivered",
                status_code=outcome.status_code,
                attempt=first_attempt + attempt - 1,
                duration_ms=round(duration_ms, 2),
                **log_fields,
            )
            observers.attempted(
                destination.name,
                message_ids,
                "delivered",
                first_attempt + attempt - 1,
                duration_ms,
                None,
            )
            return Outcome(
                success=True,
                attempts=attempt,
                duration_ms=(time.monotonic() - started) * 1000,
                status_code=outcome.status_code,
                output=outcome.output,
            )
        duration_ms = (time.perf_counter() - attempt_started) * 1000
        # Whatever a plugin put there (NaN, a string, 10**400): finite seconds >= 0, or None.
        retry_after = retry_after_seconds(failed.retry_after)
        delay = 0.0
        will_retry = False
        if policy is not None and failed.retryable and attempt < policy.max_attempts:
            delay = backoff_delay(policy, attempt, retry_after)
            will_retry = time.monotonic() - started + delay <= policy.max_elapsed
        if will_retry:
            status, extra = "retrying", {"delay_s": round(delay, 3)}
        elif policy is None and failed.retryable:
            status, extra = "retry_later", {}  # the caller schedules it (the outbox worker)
        else:
            status, extra = "failed", {}
        log.warning(
            "delivery_attempt",
            status=status,
            status_code=failed.status_code,
            attempt=first_attempt + attempt - 1,
            duration_ms=round(duration_ms, 2),
            error=failed.error,
            **extra,
            **log_fields,
        )
        observers.attempted(
            destination.name,
            message_ids,
            status,
            first_attempt + attempt - 1,
            duration_ms,
            failed.error,
        )
        if not will_retry:
            return Outcome(
                success=False,
                attempts=attempt,
                duration_ms=(time.monotonic() - started) * 1000,
                status_code=failed.status_code,
                error=failed.error,
                retryable=failed.retryable,
                retry_after=retry_after,
                output=dict(failed.output) if failed.output else {},
                exception=failed.exception,
            )
        await asyncio.sleep(delay)


async def deliver_event(
    plugin: LoadedPlugin,
    destination: Destination[Any],
    event: Event,
    *,
    policy: RetrySettings | None = None,
    first_attempt: int = 1,
    observers: Observers = NO_OBSERVERS,
) -> Outcome:
    """Deliver one event with ``send_event``; one attempt unless ``policy`` allows retries."""
    return await _attempts(
        destination,
        "send_event",
        lambda: _call_hook(
            plugin.send_event, plugin.is_async, destination=destination, event=event
        ),
        policy=policy,
        log_fields={"message_id": event.message_id},
        message_ids=(event.message_id,),
        observers=observers,
        first_attempt=first_attempt,
    )


async def deliver_batch(
    plugin: LoadedPlugin,
    destination: Destination[Any],
    events: Sequence[Event],
    *,
    policy: RetrySettings | None = None,
    first_attempt: int = 1,
    observers: Observers = NO_OBSERVERS,
) -> Outcome:
    """Deliver ``events`` in one ``send_batch`` request (all or nothing).

    The plugin must implement ``send_batch`` (``plugin.send_batch`` is not ``None``).
    """
    send_batch = plugin.send_batch
    if send_batch is None:
        raise ValueError(f"plugin {plugin.name!r} does not implement send_batch")
    fields: dict[str, Any] = {"events": len(events)}
    if events:
        fields["message_id"] = events[0].message_id
    return await _attempts(
        destination,
        "send_batch",
        lambda: _call_hook(
            send_batch, plugin.batch_is_async, destination=destination, events=list(events)
        ),
        policy=policy,
        log_fields=fields,
        message_ids=[event.message_id for event in events],
        observers=observers,
        first_attempt=first_attempt,
    )


async def deliver(
    plugin: LoadedPlugin,
    destination: Destination[Any],
    event: Event,
    observers: Observers = NO_OBSERVERS,
) -> DeliveryResult:
    """Deliver ``event``, retrying transient failures as the destination's policy allows."""
    outcome = await deliver_event(
        plugin, destination, event, policy=destination.routing.retry, observers=observers
    )
    return outcome.to_result(destination)

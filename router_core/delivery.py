"""Delivering one event to one destination: isolation, timeouts, retries, one log line per try.

Nothing here raises: whatever the plugin does (raise, hang, return garbage), the caller gets a
``DeliveryResult`` saying what happened, so other destinations are never affected.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import httpx

from router_core.destination import Destination
from router_core.errors import DeliveryError
from router_core.events import Event
from router_core.plugins import LoadedPlugin
from router_core.results import Delivery, DeliveryResult
from router_core.retry import backoff_delay
from router_core.secrets import redact

__all__ = ["deliver"]

_GRACE = 1.0  # seconds, at most, beyond a destination's timeout before the router cuts in


class _BadReturn(TypeError):
    """The plugin returned something other than a ``Delivery``."""


class _Attempt:
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
        output: Any = None,
    ) -> None:
        self.error = redact(error)
        self.exception = exception
        self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after
        self.output = output


async def _call_plugin(plugin: LoadedPlugin, destination: Destination[Any], event: Event) -> Any:
    if plugin.is_async:
        returned = plugin.send_event(destination=destination, event=event)
    else:
        # A blocking plugin must not stall the event loop the other destinations share.
        returned = await asyncio.to_thread(plugin.send_event, destination=destination, event=event)
    outcome = returned[0] if returned else None
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return outcome


def _classify(exc: BaseException, timeout: float) -> _Attempt:
    if isinstance(exc, DeliveryError):
        return _Attempt(
            exc.message,
            exc,
            retryable=exc.retryable,
            status_code=exc.status_code,
            retry_after=exc.retry_after,
            output=exc.output,
        )
    if isinstance(exc, _BadReturn):
        return _Attempt(str(exc), exc, retryable=False)
    if isinstance(exc, TimeoutError):
        return _Attempt(f"timed out after {timeout:g}s", exc, retryable=True)
    if isinstance(exc, httpx.TimeoutException):
        return _Attempt(f"timed out: {type(exc).__name__}", exc, retryable=True)
    if isinstance(exc, httpx.TransportError):
        return _Attempt(f"network error: {type(exc).__name__}: {exc}", exc, retryable=True)
    return _Attempt(f"plugin raised {type(exc).__name__}: {exc}", exc, retryable=False)


async def deliver(
    plugin: LoadedPlugin, destination: Destination[Any], event: Event
) -> DeliveryResult:
    """Deliver ``event``, retrying transient failures as the destination's policy allows."""
    policy = destination.routing.retry
    timeout = destination.routing.timeout
    log = destination.log
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        attempt_started = time.perf_counter()
        try:
            # The grace lets a plugin's own HTTP timeout (same figure) report first, in the
            # plugin's words; the router's cut-off catches plugins that hang anywhere else.
            outcome = await asyncio.wait_for(
                _call_plugin(plugin, destination, event), timeout + min(timeout, _GRACE)
            )
            if not isinstance(outcome, Delivery):
                raise _BadReturn(
                    f"plugin returned {type(outcome).__name__} from send_event, expected Delivery"
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = _classify(exc, timeout)
        else:
            duration_ms = (time.perf_counter() - attempt_started) * 1000
            log.info(
                "delivery_attempt",
                status="delivered",
                status_code=outcome.status_code,
                attempt=attempt,
                duration_ms=round(duration_ms, 2),
                message_id=event.message_id,
            )
            return DeliveryResult(
                destination=destination.name,
                plugin=destination.plugin,
                success=True,
                status_code=outcome.status_code,
                attempts=attempt,
                duration_ms=(time.monotonic() - started) * 1000,
                output=outcome.output or {"success": True},
            )
        duration_ms = (time.perf_counter() - attempt_started) * 1000
        elapsed = time.monotonic() - started
        delay = backoff_delay(policy, attempt, failed.retry_after)
        will_retry = (
            failed.retryable
            and attempt < policy.max_attempts
            and elapsed + delay <= policy.max_elapsed
        )
        log.warning(
            "delivery_attempt",
            status="retrying" if will_retry else "failed",
            status_code=failed.status_code,
            attempt=attempt,
            duration_ms=round(duration_ms, 2),
            message_id=event.message_id,
            error=failed.error,
        )
        if not will_retry:
            output = dict(failed.output) if failed.output else {}
            output.setdefault("success", False)
            output.setdefault("error", failed.error)
            return DeliveryResult(
                destination=destination.name,
                plugin=destination.plugin,
                success=False,
                status_code=failed.status_code,
                error=failed.error,
                attempts=attempt,
                duration_ms=(time.monotonic() - started) * 1000,
                output=output,
                exception=failed.exception,
            )
        await asyncio.sleep(delay)

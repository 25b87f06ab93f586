"""How Segment's answers become a Delivery or a SegmentAPIError, and transport failures retries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import event_router_segment
import httpx
import pytest
import respx
from event_router_segment import SegmentAPIError, SegmentSettings, send_batch, send_event

from router_core import (
    USER_AGENT,
    Delivery,
    DeliveryError,
    Destination,
    Event,
    PluginRegistry,
    Router,
)
from router_core.testing import destination

KEY = "wk_http_Pq93mZrT"
URL = "https://api.segment.io/v1/batch"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The router's pooled client sends the User-Agent; plugins do not set it themselves.
    async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as http:
        yield http


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def _destination(client: httpx.AsyncClient, **settings: Any) -> Destination[SegmentSettings]:
    return destination("segment", SegmentSettings(write_key=KEY, **settings), client)


def _event() -> Event:
    return Event.track("Order Completed", user_id="user_12345", properties={"total": 99.99})


async def test_200_is_delivered(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    api.post(URL).respond(200, json={"success": True})
    assert await send_event(_destination(client), _event()) == Delivery(
        status_code=200, output={"success": True}
    )


async def test_any_2xx_is_delivered(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    api.post(URL).respond(202, text="")
    delivery = await send_event(_destination(client), _event())
    assert delivery.status_code == 202
    assert delivery.output == {"success": True}


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (413, False),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
    ],
)
async def test_status_classification(
    client: httpx.AsyncClient, api: respx.MockRouter, status: int, retryable: bool
) -> None:
    body = '{"code":"invalid_request","message":"refused"}'
    api.post(URL).respond(status, text=body)
    with pytest.raises(SegmentAPIError) as info:
        await send_event(_destination(client), _event())
    error = info.value
    assert isinstance(error, DeliveryError)
    assert error.message == f"Segment API error: HTTP {status}"
    assert str(error) == error.message
    assert error.status_code == status
    assert error.body == body
    assert error.retryable is retryable
    assert error.retry_after is None
    assert KEY not in str(error)
    assert KEY not in repr(error)


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_carried(
    client: httpx.AsyncClient, api: respx.MockRouter, status: int
) -> None:
    api.post(URL).respond(status, headers={"Retry-After": "7"}, text="slow down")
    with pytest.raises(SegmentAPIError) as info:
        await send_event(_destination(client), _event())
    assert info.value.retryable is True
    assert info.value.retry_after == 7.0
    assert info.value.body == "slow down"


async def test_batch_errors_are_classified_too(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    api.post(URL).respond(413, text="too large")
    with pytest.raises(SegmentAPIError) as info:
        await send_batch(_destination(client), [_event(), _event()])
    assert info.value.status_code == 413
    assert info.value.retryable is False


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectTimeout("connect timed out"), "timed out: ConnectTimeout"),
        (httpx.ReadTimeout("read timed out"), "timed out: ReadTimeout"),
        (httpx.WriteTimeout("write timed out"), "timed out: WriteTimeout"),
        (httpx.PoolTimeout("pool timed out"), "timed out: PoolTimeout"),
        (
            httpx.ConnectError("connection refused"),
            "network error: cannot connect to api.segment.io:443 (ConnectError)",
        ),
        (
            httpx.ReadError("connection reset"),
            "network error with api.segment.io:443: ReadError: connection reset",
        ),
        (
            httpx.RemoteProtocolError("server disconnected"),
            "network error with api.segment.io:443: RemoteProtocolError: server disconnected",
        ),
    ],
)
def test_timeouts_and_network_errors_are_retried_by_the_router(
    api: respx.MockRouter, exc: Exception, error: str
) -> None:
    # The plugin leaves transport failures to the router, which retries them and says what
    # happened the same way for every destination.
    route = api.post(URL).mock(side_effect=exc)
    registry = PluginRegistry(entry_points=False)
    registry.register(event_router_segment, "segment")
    config = {
        "plugin": "segment",
        "write_key": KEY,
        "retry": {"max_attempts": 2, "backoff_base": 0},
    }
    with Router({"segment": config}, plugins=registry) as router:
        result = router.send(_event()).results["segment"]
    assert result.success is False
    assert result.error == error
    assert result.attempts == 2
    assert route.call_count == 2
    assert type(result.exception) is type(exc)


async def test_error_carries_status_code_and_body(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    api.post(URL).respond(400, json={"success": False, "message": "bad messageId"})
    with pytest.raises(SegmentAPIError) as info:
        await send_event(_destination(client), _event())
    assert info.value.status_code == 400
    assert info.value.body == '{"success":false,"message":"bad messageId"}'
    assert repr(info.value) == "SegmentAPIError('Segment API error: HTTP 400', status_code=400)"


def test_segment_api_error_is_a_delivery_error() -> None:
    error = SegmentAPIError(
        "Segment API error: HTTP 500", status_code=500, body="x", retryable=True
    )
    assert isinstance(error, DeliveryError)
    assert (error.status_code, error.body, error.retryable) == (500, "x", True)

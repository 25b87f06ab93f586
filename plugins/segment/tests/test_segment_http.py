"""How Segment's answers and transport failures become a Delivery or a SegmentAPIError."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
from event_router_segment import SegmentAPIError, SegmentSettings, send_batch, send_event

from router_core import Delivery, DeliveryError, Destination, Event
from router_core.testing import destination

KEY = "wk_http_Pq93mZrT"
URL = "https://api.segment.io/v1/batch"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
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
    "exc",
    [
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.PoolTimeout("pool timed out"),
    ],
)
async def test_timeouts_are_retryable(
    client: httpx.AsyncClient, api: respx.MockRouter, exc: Exception
) -> None:
    api.post(URL).mock(side_effect=exc)
    with pytest.raises(SegmentAPIError) as info:
        await send_event(_destination(client), _event())
    error = info.value
    assert str(error) == "Segment API error: request timed out"
    assert error.retryable is True
    assert error.status_code is None
    assert error.__cause__ is exc


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (httpx.ConnectError("connection refused"), "ConnectError"),
        (httpx.ReadError("connection reset"), "ReadError"),
        (httpx.RemoteProtocolError("server disconnected"), "RemoteProtocolError"),
    ],
)
async def test_network_errors_are_retryable(
    client: httpx.AsyncClient, api: respx.MockRouter, exc: Exception, name: str
) -> None:
    api.post(URL).mock(side_effect=exc)
    with pytest.raises(SegmentAPIError) as info:
        await send_event(_destination(client), _event())
    assert str(info.value) == f"Segment API error: network error: {name}"
    assert info.value.retryable is True
    assert info.value.status_code is None


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

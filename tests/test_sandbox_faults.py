"""Fault injection: status sequences, Retry-After, latency and dropped connections."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from router_core.sandbox import Emulator, Faults, PostHogEmulator, SegmentEmulator

WRITE_KEY = "wk_faults_0123456789abcdef"
API_KEY = "phc_faults_0123456789abcdef"


@dataclass
class Vendor:
    """How to send one valid request to an emulator."""

    emulator: Emulator
    path: str

    def body(self, message_id: str | None = None) -> dict[str, Any]:
        message_id = message_id or str(uuid.uuid4())
        if isinstance(self.emulator, SegmentEmulator):
            msg = {"type": "track", "event": "e", "userId": "u", "messageId": message_id}
            return {"writeKey": WRITE_KEY, "batch": [msg]}
        return {
            "api_key": API_KEY,
            "batch": [{"event": "e", "distinct_id": "u", "uuid": message_id}],
        }

    def post(self, client: httpx.Client, message_id: str | None = None) -> httpx.Response:
        return client.post(f"{self.emulator.url}{self.path}", json=self.body(message_id))


@pytest.fixture(params=["segment", "posthog"])
def vendor(request: pytest.FixtureRequest) -> Iterator[Vendor]:
    if request.param == "segment":
        with SegmentEmulator() as seg:
            yield Vendor(seg, "/v1/batch")
    else:
        with PostHogEmulator() as ph:
            yield Vendor(ph, "/batch/")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def test_status_sequence_then_recovery(vendor: Vendor, client: httpx.Client) -> None:
    em = vendor.emulator
    em.faults.set(statuses=[503, 503, 429])
    message_id = str(uuid.uuid4())

    statuses = [vendor.post(client, message_id).status_code for _ in range(4)]

    assert statuses == [503, 503, 429, 200]
    assert em.message_ids() == [message_id]  # injected answers record nothing
    assert em.requests == 4
    assert [r.status for r in em.request_log] == [503, 503, 429, 200]
    assert [r.fault for r in em.request_log][:3] == ["injected status 503"] * 2 + [
        "injected status 429"
    ]
    assert em.faults.pending_statuses == ()


def test_injected_error_body_has_the_vendor_shape(vendor: Vendor, client: httpx.Client) -> None:
    vendor.emulator.faults.set(statuses=[500])

    response = vendor.post(client)

    assert response.status_code == 500
    assert response.headers["X-Sandbox-Fault"] == "status"
    field = "message" if isinstance(vendor.emulator, SegmentEmulator) else "detail"
    assert response.json()[field] == "injected status 500"


def test_retry_after_goes_with_injected_429_and_503_only(
    vendor: Vendor, client: httpx.Client
) -> None:
    vendor.emulator.faults.set(statuses=[429, 500, 503], retry_after=7)

    responses = [vendor.post(client) for _ in range(4)]

    assert [r.status_code for r in responses] == [429, 500, 503, 200]
    assert [r.headers.get("Retry-After") for r in responses] == ["7", None, "7", None]


def test_retry_after_can_be_an_http_date(vendor: Vendor, client: httpx.Client) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    vendor.emulator.faults.set(statuses=[503], retry_after=date)

    assert vendor.post(client).headers["Retry-After"] == date


def test_fractional_retry_after_is_kept(vendor: Vendor, client: httpx.Client) -> None:
    vendor.emulator.faults.set(statuses=[429], retry_after=0.5)

    assert vendor.post(client).headers["Retry-After"] == "0.5"


def test_injected_success_records_nothing(vendor: Vendor, client: httpx.Client) -> None:
    vendor.emulator.faults.set(statuses=[200])

    response = vendor.post(client)

    assert response.status_code == 200
    assert response.headers["X-Sandbox-Fault"] == "status"
    assert vendor.emulator.events == []


def test_latency_is_applied_to_every_ingestion_answer(vendor: Vendor, client: httpx.Client) -> None:
    vendor.emulator.faults.set(latency=0.01, statuses=[503])

    injected = vendor.post(client)
    normal = vendor.post(client)

    assert injected.headers["X-Sandbox-Latency"] == "0.01"
    assert normal.status_code == 200
    assert normal.headers["X-Sandbox-Latency"] == "0.01"
    vendor.emulator.faults.clear()
    assert "X-Sandbox-Latency" not in vendor.post(client).headers


def test_latency_comes_before_the_answer(vendor: Vendor) -> None:
    # Ordering, not timing: the client gives up before an answer that is held back for longer.
    vendor.emulator.faults.set(latency=30.0)
    with httpx.Client(timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
        vendor.post(impatient)

    vendor.emulator.faults.clear()
    with httpx.Client(timeout=10.0) as patient:
        assert vendor.post(patient).status_code == 200


def test_dropped_connection_is_a_transport_error_then_recovery(
    vendor: Vendor, client: httpx.Client
) -> None:
    em = vendor.emulator
    em.faults.set(drop_connections=1)

    with pytest.raises(httpx.TransportError):
        vendor.post(client)
    response = vendor.post(client)

    assert response.status_code == 200
    assert len(em.events) == 1
    assert [r.status for r in em.request_log] == [None, 200]
    assert em.request_log[0].fault == "dropped connection"


def test_drops_come_before_statuses(vendor: Vendor, client: httpx.Client) -> None:
    vendor.emulator.faults.set(statuses=[503], drop_connections=2)

    outcomes: list[int | str] = []
    for _ in range(4):
        try:
            outcomes.append(vendor.post(client).status_code)
        except httpx.TransportError:
            outcomes.append("dropped")

    assert outcomes == ["dropped", "dropped", 503, 200]


def test_each_fault_is_consumed_once_across_threads(vendor: Vendor) -> None:
    em = vendor.emulator
    em.faults.set(statuses=[503] * 10)
    statuses: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(timeout=10.0) as own:
            for _ in range(5):
                code = vendor.post(own).status_code
                with lock:
                    statuses.append(code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(statuses) == [200] * 10 + [503] * 10
    assert len(em.events) == 10


def test_viewer_reads_do_not_consume_faults(vendor: Vendor, client: httpx.Client) -> None:
    vendor.emulator.faults.set(statuses=[503], drop_connections=0)

    assert client.get(f"{vendor.emulator.url}/_events").status_code == 200
    assert vendor.post(client).status_code == 503


def test_reset_clears_faults(vendor: Vendor, client: httpx.Client) -> None:
    vendor.emulator.faults.set(statuses=[503], latency=0.5, drop_connections=3, retry_after=1)

    vendor.emulator.reset()

    assert vendor.post(client).status_code == 200
    assert repr(vendor.emulator.faults) == (
        "Faults(statuses=[], latency=0.0, retry_after=None, drop_connections=0)"
    )


def test_set_replaces_every_setting() -> None:
    faults = Faults()
    faults.set(statuses=[503], latency=1.0, retry_after=3, drop_connections=2)

    faults.set(statuses=[429])

    assert faults.pending_statuses == (429,)
    assert faults.latency == 0.0
    assert faults.retry_after is None
    assert faults.pending_drops == 0


def test_take_follows_the_documented_order() -> None:
    faults = Faults()
    faults.set(statuses=[429, 500], drop_connections=1, retry_after=2, latency=0.25)

    actions = [faults.take() for _ in range(4)]

    assert [a.drop for a in actions] == [True, False, False, False]
    assert [a.status for a in actions] == [None, 429, 500, None]
    assert [a.retry_after for a in actions] == [None, "2", None, None]
    assert {a.latency for a in actions} == {0.25}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"statuses": [99]}, ValueError),
        ({"statuses": [600]}, ValueError),
        ({"statuses": [True]}, TypeError),
        ({"statuses": ["503"]}, TypeError),
        ({"latency": -1}, ValueError),
        ({"latency": float("nan")}, ValueError),
        ({"latency": "1"}, TypeError),
        ({"drop_connections": -1}, ValueError),
        ({"drop_connections": 1.5}, TypeError),
        ({"retry_after": -5}, ValueError),
        ({"retry_after": "1\r\nX-Injected: yes"}, ValueError),
        ({"retry_after": ""}, ValueError),
        ({"retry_after": [1]}, TypeError),
    ],
)
def test_bad_fault_settings_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    faults = Faults()
    faults.set(statuses=[503])

    with pytest.raises(error):
        faults.set(**kwargs)

    assert faults.pending_statuses == (503,)  # a refused set() changes nothing

"""router_core.testing: plugin authors unit-test their hooks with respx, no router needed.

Exercised on the README's webhook plugin, the way its author would test it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import respx

from router_core import DeliveryError, Event
from router_core.testing import destination

MODULE = Path(__file__).parent / "fixtures" / "webhook_plugin" / "event_router_webhook"


def _webhook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_under_test", MODULE / "__init__.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


webhook = _webhook()


async def test_a_hook_is_awaited_directly_against_a_mocked_endpoint() -> None:
    event = Event.track("Signed Up", user_id="u1")
    settings = webhook.WebhookSettings(url="https://hooks.example/in", token="tok-5678")
    async with httpx.AsyncClient() as client, respx.mock() as mock:
        route = mock.post("https://hooks.example/in").respond(204)
        target = destination("webhook", settings, client, name="audit", timeout=2.0)
        delivery = await webhook.send_event(target, event)
    assert delivery.status_code == 204
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer tok-5678"
    assert json.loads(request.content)["message_id"] == event.message_id
    assert (target.name, target.plugin, target.timeout) == ("audit", "webhook", 2.0)


async def test_a_refusal_raises_a_classified_delivery_error() -> None:
    settings = webhook.WebhookSettings(url="https://hooks.example/in")
    async with httpx.AsyncClient() as client, respx.mock() as mock:
        mock.post("https://hooks.example/in").respond(503, headers={"Retry-After": "7"})
        target = destination("webhook", settings, client)
        with pytest.raises(DeliveryError) as caught:
            await webhook.send_event(target, Event.identify(user_id="u1"))
    assert caught.value.status_code == 503
    assert caught.value.retryable
    assert caught.value.retry_after == 7.0
    assert target.name == "webhook"

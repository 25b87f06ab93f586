"""A destination's secrets never surface: results, exceptions, reprs, config errors, bodies, logs.

Every test makes its own key: the set of registered secrets is process-wide, so a key another
test registered would be masked here for the wrong reason.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import event_router_posthog
import event_router_segment
import httpx
import pytest
import respx
import structlog
from event_router_posthog import PostHogSettings
from event_router_segment import SegmentSettings
from pydantic import BaseModel, Field, SecretStr, field_validator

from router_core import (
    ConfigError,
    Delivery,
    DeliveryError,
    DeliveryResult,
    Destination,
    DestinationSettings,
    Event,
    PluginRegistry,
    RedactedError,
    Router,
    RouterConfig,
    configure_logging,
    hookimpl,
)
from router_core.http import raise_for_status
from router_core.jobs import Job
from router_core.logs import get_logger
from router_core.secrets import MASK, redact, register_secret, truncate
from router_core.settings import RetrySettings, RoutingSettings


def new_key(prefix: str = "sk_live_") -> str:
    return prefix + secrets.token_hex(10) + "Qz9"


def basic(key: str) -> str:
    return base64.b64encode(f"{key}:".encode()).decode()


def forms(key: str) -> list[str]:
    """The key and the encodings a server might echo it in (HTTP Basic, plain base64)."""
    found = [key]
    for raw in (f"{key}:".encode(), key.encode()):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            found.append(encode(raw).decode().rstrip("="))
    return found


def assert_hidden(key: str, *texts: str) -> None:
    for text in texts:
        for form in forms(key):
            assert form not in text, f"{form!r} leaked in {text!r}"


# -- a third-party plugin that leaks its key every way it can ---------------------------------


class LeakySettings(DestinationSettings):
    api_key: SecretStr
    mode: str = "args"


class AuthFailed(Exception):
    """Builds its text from the settings it holds, not from ``args``."""

    def __init__(self, settings: LeakySettings) -> None:
        super().__init__("authentication failed")
        self.settings = settings

    def __str__(self) -> str:
        return f"authentication failed for {self.settings.api_key.get_secret_value()}"

    def __repr__(self) -> str:
        return f"AuthFailed(key={self.settings.api_key.get_secret_value()!r})"


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _raise(mode: str, settings: LeakySettings) -> None:
    key = settings.api_key.get_secret_value()
    if mode == "args":
        raise RuntimeError(f"bad key {key}")
    if mode == "many_args":
        raise ValueError("rejected", key, {"key": key, "nested": [key]}, (1, key))
    if mode == "custom_str":
        raise AuthFailed(settings)
    if mode == "delivery_error":
        raise DeliveryError(
            f"refused {key}",
            status_code=401,
            body=f'{{"echo": "{key}"}}',
            output={"success": False, "error": f"bad {key}", "seen": [key]},
        )
    if mode == "cause":
        raise RuntimeError("lookup failed") from KeyError(key)
    if mode == "context":
        try:
            raise LookupError(f"no account for {key}")
        except LookupError:
            raise RuntimeError("lookup failed")  # noqa: B904 - the implicit context is the point
    if mode == "notes":
        exc = RuntimeError("failed")
        exc.add_note(f"while sending with {key}")
        raise exc
    if mode == "group":
        raise ExceptionGroup(f"two failures for {key}", [RuntimeError(key), AuthFailed(settings)])
    if mode == "basic":
        raise RuntimeError(f"server said: Authorization: Basic {basic(key)}")
    if mode == "oserror":
        raise PermissionError(13, "denied", f"/keys/{key}")
    if mode == "broken_str":
        raise BrokenStr(key)
    raise AssertionError(mode)


class Leaky:
    @hookimpl
    def destination_settings(self) -> type[LeakySettings]:
        return LeakySettings

    @hookimpl
    async def send_event(self, destination: Destination[LeakySettings], event: Event) -> Delivery:
        settings = destination.settings
        key = settings.api_key.get_secret_value()
        if settings.mode == "output":
            return Delivery(200, {"echo": key, "auth": basic(key), "nested": {"k": [key]}})
        _raise(settings.mode, settings)
        raise AssertionError("unreachable")


@pytest.fixture
def registry() -> PluginRegistry:
    reg = PluginRegistry(entry_points=False)
    reg.register(Leaky(), "leaky")
    return reg


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(format="json", level="debug", stream=stream)
    yield stream
    structlog.reset_defaults()


def _send(registry: PluginRegistry, key: str, mode: str) -> DeliveryResult:
    table = {"plugin": "leaky", "api_key": key, "mode": mode, "retry": {"max_attempts": 1}}
    with Router({"leaky": table}, plugins=registry) as router:
        report = router.send(Event.track("Order Completed", user_id="u1"))
        assert_hidden(key, repr(report), json.dumps(report.to_dict()))
    return report.results["leaky"]


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything a traceback would print with it."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
    return seen


def _shown(value: object) -> list[str]:
    """``str()`` and ``repr()`` of ``value``, as far as they work."""
    texts = []
    for render in (str, repr):
        try:
            texts.append(render(value))
        except Exception:
            continue
    return texts


def _texts(result: DeliveryResult) -> list[str]:
    texts = [repr(result), json.dumps(result.to_dict()), str(result.error), repr(result.output)]
    if result.exception is not None:
        texts.append("".join(traceback.format_exception(result.exception)))
        for exc in _chain(result.exception):
            texts += [*_shown(exc), repr(exc.args), repr(getattr(exc, "__notes__", []))]
            texts += [repr(v) for v in vars(exc).values()] if hasattr(exc, "__dict__") else []
    return texts


MODES = [
    "args",
    "many_args",
    "custom_str",
    "delivery_error",
    "cause",
    "context",
    "notes",
    "group",
    "basic",
    "oserror",
    "broken_str",
    "output",
]


@pytest.mark.parametrize("mode", MODES)
def test_a_third_party_plugin_cannot_leak_its_key(
    registry: PluginRegistry, log_stream: io.StringIO, mode: str
) -> None:
    key = new_key()
    result = _send(registry, key, mode)
    assert result.success is (mode == "output")
    assert_hidden(key, *_texts(result), log_stream.getvalue())


def test_masked_text_still_says_what_happened(registry: PluginRegistry) -> None:
    key = new_key()
    result = _send(registry, key, "args")
    assert result.error == f"plugin raised RuntimeError: bad key {MASK}"
    assert isinstance(result.exception, RuntimeError)
    assert result.exception.args == (f"bad key {MASK}",)


def test_an_exception_with_its_own_str_keeps_its_type(registry: PluginRegistry) -> None:
    key = new_key()
    result = _send(registry, key, "custom_str")
    exc = result.exception
    assert isinstance(exc, AuthFailed)
    assert type(exc).__name__ == "AuthFailed"
    assert str(exc) == f"authentication failed for {MASK}"
    assert repr(exc) == f"AuthFailed(key='{MASK}')"
    formatted = "".join(traceback.format_exception(exc))
    assert f"AuthFailed: authentication failed for {MASK}" in formatted


def test_a_delivery_error_keeps_its_fields_masked(registry: PluginRegistry) -> None:
    key = new_key()
    result = _send(registry, key, "delivery_error")
    exc = result.exception
    assert isinstance(exc, DeliveryError)
    assert (exc.message, exc.body, exc.status_code) == (
        f"refused {MASK}",
        f'{{"echo": "{MASK}"}}',
        401,
    )
    assert result.output == {"success": False, "error": f"bad {MASK}", "seen": [MASK]}


def test_an_exception_that_cannot_be_masked_in_place_is_replaced(
    registry: PluginRegistry,
) -> None:
    key = new_key()
    result = _send(registry, key, "oserror")
    exc = result.exception
    # PermissionError keeps the file name outside args and cannot be subclassed in place.
    assert isinstance(exc, RedactedError)
    assert exc.type_name == "PermissionError"
    assert str(exc) == f"PermissionError: [Errno 13] denied: '/keys/{MASK}'"
    assert result.error == f"plugin raised PermissionError: [Errno 13] denied: '/keys/{MASK}'"


def test_a_chained_cause_and_context_are_masked(registry: PluginRegistry) -> None:
    key = new_key()
    cause = _send(registry, key, "cause").exception
    assert cause is not None
    assert isinstance(cause.__cause__, KeyError)
    assert cause.__cause__.args == (MASK,)
    assert cause.__suppress_context__  # "from" still hides the context, as raised
    context = _send(registry, key, "context").exception
    assert context is not None
    assert isinstance(context.__context__, LookupError)
    assert context.__context__.args == (f"no account for {MASK}",)
    assert not context.__suppress_context__


def test_an_exception_whose_str_raises_is_still_a_result(registry: PluginRegistry) -> None:
    key = new_key()
    result = _send(registry, key, "broken_str")
    assert result.success is False
    assert result.error == "plugin raised BrokenStr: <BrokenStr whose str() failed>"
    assert isinstance(result.exception, BrokenStr)
    assert result.exception.args == (MASK,)


def test_queued_delivery_keeps_keys_out_of_logs_and_the_outbox(
    registry: PluginRegistry, log_stream: io.StringIO, tmp_path: Path
) -> None:
    key = new_key()
    table = {"plugin": "leaky", "api_key": key, "mode": "basic"}
    queue = {"path": str(tmp_path / "outbox.db"), "retry": {"max_attempts": 1}}
    with Router({"leaky": table}, plugins=registry, queue=queue) as router:
        router.send(Event.track("Order Completed", user_id="u1"))
        flushed = router.flush(timeout=10)
    assert flushed.complete
    assert flushed.dead == {"leaky": 1}
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert_hidden(key, log_stream.getvalue(), stored.decode("latin-1"))
    assert MASK in log_stream.getvalue()


# -- HTTP error bodies ------------------------------------------------------------------------

SEGMENT_URL = "https://api.segment.io/v1/batch"


def _segment(registry: PluginRegistry, key: str) -> Router:
    table = {"plugin": "segment", "write_key": key, "retry": {"max_attempts": 1}}
    return Router({"segment": table}, plugins=registry)


@pytest.fixture
def vendors() -> PluginRegistry:
    reg = PluginRegistry(entry_points=False)
    reg.register(event_router_segment, "segment")
    reg.register(event_router_posthog, "posthog")
    return reg


@pytest.mark.parametrize("start", [480, 490, 495, 499])
def test_a_key_straddling_the_body_cut_is_masked_whole(vendors: PluginRegistry, start: int) -> None:
    key = new_key()
    body = ("x" * start + key).ljust(600, "y")
    with respx.mock(assert_all_called=True) as api:
        api.post(SEGMENT_URL).respond(401, text=body)
        with _segment(vendors, key) as router:
            result = router.send(Event.track("X", user_id="u")).results["segment"]
    exc = result.exception
    assert isinstance(exc, DeliveryError)
    assert exc.body is not None
    assert len(exc.body) <= 500
    assert exc.body.startswith("x" * start)
    assert_hidden(key, *_texts(result))
    assert key[:8] not in exc.body  # not even the part before the cut


def test_the_basic_auth_form_of_the_key_is_masked(vendors: PluginRegistry) -> None:
    key = new_key()

    def echo(request: httpx.Request) -> httpx.Response:
        # A proxy that echoes the request headers back, as some error pages do.
        auth = request.headers["authorization"]
        plain = base64.b64encode(key.encode()).decode()
        urlsafe = base64.urlsafe_b64encode(f"{key}:".encode()).decode()
        return httpx.Response(403, text=f"denied: {auth} / {plain} / {urlsafe}")

    with respx.mock(assert_all_called=True) as api:
        api.post(SEGMENT_URL).mock(side_effect=echo)
        with _segment(vendors, key) as router:
            result = router.send(Event.track("X", user_id="u")).results["segment"]
    assert isinstance(result.exception, DeliveryError)
    assert result.exception.body == f"denied: Basic {MASK} / {MASK} / {MASK}"
    assert_hidden(key, *_texts(result))


def test_raise_for_status_masks_before_cutting() -> None:
    key = new_key()
    register_secret(key)
    request = httpx.Request("POST", "https://example.invalid/")
    response = httpx.Response(500, text="a" * 495 + key + "b" * 100, request=request)
    with pytest.raises(DeliveryError) as caught:
        raise_for_status(response)
    assert caught.value.body == "a" * 495 + MASK[:5]
    assert caught.value.retryable


def test_truncate_drops_the_start_of_a_secret_left_at_the_end() -> None:
    key = new_key()
    register_secret(key)
    # The text was cut before it reached us (a capped read): only the key's start is left.
    assert truncate("error: " + key[:12], 500) == "error: "
    assert truncate("error: " + basic(key)[:10], 500) == "error: "
    assert truncate("plain text", 500) == "plain text"
    assert truncate("x" * 10 + key, 12) == "x" * 10 + MASK[:2]


def test_register_secret_masks_its_encoded_forms() -> None:
    key = new_key()
    register_secret(key)
    for form in forms(key):
        assert redact(f"<{form}>") in (f"<{MASK}>", f"<{MASK}=>", f"<{MASK}==>")


# -- reprs of configs built in code -----------------------------------------------------------


def test_reprs_of_configs_built_in_code_hide_keys(vendors: PluginRegistry) -> None:
    write_key, api_key = new_key("wk_"), new_key("phc_")
    tables = {
        "segment": {"plugin": "segment", "write_key": write_key},
        "posthog": {"plugin": "posthog", "api_key": api_key},
    }
    config = RouterConfig.from_dict({"destinations": tables})
    assert_hidden(write_key, repr(config), str(config))
    assert_hidden(api_key, repr(config), str(config))
    assert "'plugin': 'segment'" in repr(config)
    assert f"'write_key': '{MASK}'" in repr(config)
    with Router(tables, plugins=vendors) as router:
        router.send(Event.track("X", user_id="u"))  # builds the destinations
        texts = [repr(router), str(router), repr(router.config)]
        texts += [repr(d) for d in router.config.resolve(vendors)]
        texts += [repr(d) + str(d.settings) for _, d in router._targets]
    assert_hidden(write_key, *texts)
    assert_hidden(api_key, *texts)


class PlainSettings(DestinationSettings):
    """A settings model that forgot ``SecretStr`` for one secret, and echoes another."""

    api_key: SecretStr
    password: str = ""
    label: str = ""
    headers: dict[str, str] = Field(default_factory=dict)


class Plain:
    @hookimpl
    def destination_settings(self) -> type[PlainSettings]:
        return PlainSettings

    @hookimpl
    async def send_event(self, destination: Destination[PlainSettings], event: Event) -> Delivery:
        return Delivery(200)


def test_settings_reprs_mask_secret_named_fields_and_registered_keys() -> None:
    key, password, token = new_key(), new_key("pw_"), new_key("tok_")
    registry = PluginRegistry(entry_points=False)
    registry.register(Plain(), "plain")
    table = {
        "plugin": "plain",
        "api_key": key,
        "password": password,
        "label": f"copy of {key}",
        "headers": {"X-Auth-Token": token, "Accept": "application/json"},
        "events": [key, "Order Completed"],  # valid, if odd: a pattern that is the key
    }
    (resolved,) = RouterConfig.from_dict({"destinations": {"p": table}}).resolve(registry)
    texts = [repr(resolved), str(resolved), repr(resolved.settings), str(resolved.settings)]
    texts += [repr(resolved.routing)]
    for secret in (key, password, token):
        assert_hidden(secret, *texts)
    assert "application/json" in repr(resolved.settings)  # other values are shown as they are


def test_a_url_with_credentials_is_masked_in_reprs() -> None:
    config = RouterConfig.from_dict(
        {"destinations": {"hook": {"plugin": "x", "url": "https://user:pa55word9@hooks.test/"}}}
    )
    assert "pa55word9" not in repr(config)
    assert "https://user:" in repr(config)


def test_a_job_built_in_code_hides_its_keys() -> None:
    key = new_key("wk_")
    job = Job.from_dict(
        {
            "job": {"name": "Track"},
            "input": {"event": "X", "user_id": "u"},
            "destinations": {"segment": {"plugin": "segment", "write_key": key}},
        }
    )
    assert_hidden(key, repr(job), str(job))


# -- validation errors ------------------------------------------------------------------------

VALID = {
    "segment": {"plugin": "segment", "write_key": "wk_valid_key_for_tests"},
    "posthog": {"plugin": "posthog", "api_key": "phc_valid_key_for_tests"},
}
SETTINGS: dict[str, type[BaseModel]] = {"segment": SegmentSettings, "posthog": PostHogSettings}
FIELDS = [
    (plugin, field)
    for plugin, model in SETTINGS.items()
    for field in [*model.model_fields, *RoutingSettings.model_fields]
] + [(plugin, f"retry.{field}") for plugin in SETTINGS for field in RetrySettings.model_fields]


def _paste(table: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    pasted = dict(table)
    if field.startswith("retry."):
        pasted["retry"] = {field.removeprefix("retry."): value}
    else:
        pasted[field] = value
    return pasted


@pytest.mark.parametrize("shape", ["str", "list", "table"])
@pytest.mark.parametrize(("plugin", "field"), FIELDS)
def test_a_key_pasted_into_any_field_is_not_echoed(
    vendors: PluginRegistry, plugin: str, field: str, shape: str
) -> None:
    key = new_key("phc_") if plugin == "posthog" else new_key("wk_")
    value: Any = {"str": key, "list": [key], "table": {"value": key}}[shape]
    # The same key in its own field too, as when a key is pasted in twice; and one typo so
    # that every combination is refused, whether or not the pasted value happens to be valid.
    table = _paste(VALID[plugin], field, value) | {"typo_setting": 1}
    secret_field = "write_key" if plugin == "segment" else "api_key"
    if field != secret_field:
        table[secret_field] = key
    with pytest.raises(ConfigError) as caught:
        Router({"dest": table}, plugins=vendors)
    # Routing keys are checked first; the plugin's own keys once they are valid.
    named = f"destinations.dest.{field.split('.', maxsplit=1)[0]}"
    assert named in str(caught.value) or "typo_setting: unknown setting" in str(caught.value)
    assert_hidden(key, str(caught.value), repr(caught.value), *caught.value.problems)


def test_posthog_host_error_does_not_echo_the_host(vendors: PluginRegistry) -> None:
    key = new_key("phc_")
    table = {"plugin": "posthog", "api_key": "phc_other_valid_key", "host": key}
    with pytest.raises(ConfigError) as caught:
        Router({"posthog": table}, plugins=vendors)
    assert str(caught.value) == (
        "invalid config: destinations.posthog.host: "
        "must be an http(s) URL such as https://us.i.posthog.com"
    )


def test_an_unknown_plugin_name_that_could_be_a_key_is_not_echoed(
    vendors: PluginRegistry,
) -> None:
    key = new_key()
    with pytest.raises(ConfigError) as caught:
        Router({"d": {"plugin": key}}, plugins=vendors)
    assert key not in str(caught.value)
    assert "loaded plugins: posthog, segment" in str(caught.value)
    for typo in ("segmnt", "mixpanel", "my-webhook-2"):  # a typo or another vendor is shown
        with pytest.raises(ConfigError, match=f"unknown plugin '{typo}'"):
            Router({"d": {"plugin": typo}}, plugins=vendors)
    with pytest.raises(ConfigError) as caught:  # a name that says it is a secret is not
        Router({"d": {"plugin": "super-secret-value"}}, plugins=vendors)
    assert "super-secret-value" not in str(caught.value)


class EchoingSettings(DestinationSettings):
    """A third-party model whose validators repeat what they were given."""

    token: SecretStr
    region: str = "us"
    count: int = 0

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value not in ("us", "eu"):
            raise ValueError(f"unknown region {value!r}")
        return value

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise TypeError(f"count must be a number, not {value}")
        return value


class Echoing:
    @hookimpl
    def destination_settings(self) -> type[EchoingSettings]:
        return EchoingSettings

    @hookimpl
    async def send_event(self, destination: Destination[EchoingSettings], event: Event) -> Any:
        return Delivery(200)


@pytest.mark.parametrize("field", ["region", "count"])
def test_a_third_party_validator_that_echoes_is_masked(field: str) -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(Echoing(), "echoing")
    key = new_key()
    with pytest.raises(ConfigError) as caught:
        Router({"e": {"plugin": "echoing", "token": key, field: key}}, plugins=registry)
    assert_hidden(key, str(caught.value))
    # pydantic names the field of a ValueError; a TypeError escapes it, naming only the table.
    named = f"destinations.e.{field}: " if field == "region" else "destinations.e: TypeError"
    assert named in str(caught.value)
    assert MASK in str(caught.value)


# -- log lines and errors made before the router sees them ------------------------------------


def test_log_fields_are_masked_at_any_depth(log_stream: io.StringIO) -> None:
    key = new_key()
    register_secret(key)
    get_logger("event_router.delivery").warning(
        "plugin_said",
        response={"echo": key, "headers": {"Authorization": "Bearer abc"}, "list": [basic(key)]},
        sentry_dsn="https://public@sentry.example/1",
        detail=f"see https://user:{key[:6]}pw@hooks.example/",
    )
    line = json.loads(log_stream.getvalue())
    assert line["response"] == {
        "echo": MASK,
        "headers": {"Authorization": MASK},
        "list": [MASK],
    }
    assert line["sentry_dsn"] == MASK
    assert line["detail"] == f"see https://user:{MASK}@hooks.example/"


def test_a_delivery_error_shows_no_registered_secret_even_before_the_router_sees_it() -> None:
    key = new_key()
    register_secret(key)
    error = DeliveryError(f"refused {key}", status_code=401)
    assert str(error) == f"refused {MASK}"
    assert repr(error) == f"DeliveryError('refused {MASK}', status_code=401)"

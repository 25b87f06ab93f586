"""PostHogSettings: key checks, host mapping, defaults; errors never echo the key."""

from __future__ import annotations

import event_router_posthog
import pytest
from event_router_posthog import PostHogSettings
from pydantic import ValidationError

from router_core import ConfigError, PluginRegistry, Router

PERSONAL_KEY = "phx_personalSecretValue123"


def _settings(**values: object) -> PostHogSettings:
    return PostHogSettings.model_validate({"api_key": "phc_project", **values})


def test_posthog_defaults() -> None:
    settings = _settings()
    assert settings.host == "https://us.i.posthog.com"
    assert settings.batch_url == "https://us.i.posthog.com/batch/"
    assert settings.gzip is False
    assert settings.group_type == "company"


def test_posthog_key_is_secret_in_repr() -> None:
    settings = _settings(api_key="phc_verySecretProjectKey")
    assert "phc_verySecretProjectKey" not in repr(settings)
    assert settings.api_key.get_secret_value() == "phc_verySecretProjectKey"


def test_posthog_key_surrounding_whitespace_is_dropped() -> None:
    assert _settings(api_key="  phc_abc \n").api_key.get_secret_value() == "phc_abc"


def test_posthog_personal_key_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(api_key=PERSONAL_KEY)
    text = str(caught.value)
    assert "personal API key (phx_)" in text
    assert "project API key (phc_)" in text
    assert PERSONAL_KEY not in text
    assert "personalSecretValue" not in text


def test_posthog_personal_key_refused_by_router_config() -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(event_router_posthog, "posthog")
    with pytest.raises(ConfigError) as caught:
        Router({"posthog": {"plugin": "posthog", "api_key": PERSONAL_KEY}}, plugins=registry)
    assert caught.value.problems == (
        "destinations.posthog.api_key: the key is a personal API key (phx_); capture needs a "
        "project API key (phc_), found in PostHog's project settings",
    )
    assert PERSONAL_KEY not in str(caught.value)


@pytest.mark.parametrize("key", ["", "   "])
def test_posthog_empty_key_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="api_key\n  Value error, must not be empty"):
        _settings(api_key=key)


def test_posthog_key_required() -> None:
    with pytest.raises(ValidationError, match="api_key\n  Field required"):
        PostHogSettings.model_validate({})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://us.posthog.com", "https://us.i.posthog.com"),
        ("https://us.posthog.com/", "https://us.i.posthog.com"),
        ("https://app.posthog.com", "https://us.i.posthog.com"),
        ("http://app.posthog.com/", "https://us.i.posthog.com"),
        ("https://eu.posthog.com", "https://eu.i.posthog.com"),
        ("https://EU.posthog.com/", "https://eu.i.posthog.com"),
        ("https://us.i.posthog.com", "https://us.i.posthog.com"),
        ("https://eu.i.posthog.com/", "https://eu.i.posthog.com"),
        ("https://posthog.example.com", "https://posthog.example.com"),
        ("https://posthog.example.com/", "https://posthog.example.com"),
        ("http://127.0.0.1:8000//", "http://127.0.0.1:8000"),
        ("https://example.com/posthog/", "https://example.com/posthog"),
        ("  https://posthog.example.com  ", "https://posthog.example.com"),
    ],
)
def test_posthog_host_mapping(given: str, expected: str) -> None:
    settings = _settings(host=given)
    assert settings.host == expected
    assert settings.batch_url == f"{expected}/batch/"


@pytest.mark.parametrize(
    "host",
    ["us.i.posthog.com", "ftp://posthog.example.com", "https://", "", "https://x.com/?a=1"],
)
def test_posthog_bad_host_refused(host: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(host=host)
    assert "host\n" in str(caught.value)
    assert ("must be an http(s) URL" in str(caught.value)) or (
        "without query or fragment" in str(caught.value)
    )


def test_posthog_unknown_setting_refused() -> None:
    with pytest.raises(ValidationError, match="write_key\n  Extra inputs are not permitted"):
        _settings(write_key="x")


def test_posthog_group_type_must_not_be_empty() -> None:
    with pytest.raises(ValidationError, match="group_type"):
        _settings(group_type="")

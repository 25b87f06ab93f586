"""SegmentSettings: write key, host / region resolution, and secrets kept out of errors."""

from __future__ import annotations

from typing import Any

import event_router_segment
import pytest
from event_router_segment import EU_HOST, US_HOST, SegmentSettings
from pydantic import ValidationError

from router_core import ConfigError, PluginRegistry, Router

KEY = "wk_settings_Zq81vLmP"


def _error_locations(exc: ValidationError) -> list[tuple[str | int, ...]]:
    return [error["loc"] for error in exc.errors()]


def test_defaults_to_the_us_host() -> None:
    settings = SegmentSettings(write_key=KEY)
    assert settings.base_url == US_HOST
    assert settings.batch_url == "https://api.segment.io/v1/batch"
    assert settings.gzip is False
    assert settings.write_key.get_secret_value() == KEY


@pytest.mark.parametrize(
    ("region", "expected"),
    [("us", "https://api.segment.io"), ("eu", "https://events.eu1.segmentapis.com")],
)
def test_region_picks_segment_host(region: str, expected: str) -> None:
    settings = SegmentSettings.model_validate({"write_key": KEY, "region": region})
    assert settings.base_url == expected
    assert settings.batch_url == f"{expected}/v1/batch"


def test_eu_constant_is_segments_eu_endpoint() -> None:
    assert EU_HOST == "https://events.eu1.segmentapis.com"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("https://segment.example.com", "https://segment.example.com"),
        ("https://segment.example.com/", "https://segment.example.com"),
        ("https://proxy.example.com/segment//", "https://proxy.example.com/segment"),
        ("http://127.0.0.1:8088", "http://127.0.0.1:8088"),
        ("  https://api.segment.io/ ", "https://api.segment.io"),
    ],
)
def test_custom_host_is_normalised(host: str, expected: str) -> None:
    settings = SegmentSettings(write_key=KEY, host=host)
    assert settings.host == expected
    assert settings.batch_url == f"{expected}/v1/batch"


@pytest.mark.parametrize(
    "host", ["api.segment.io", "ftp://segment.example.com", "https://", "https://h/?a=1", ""]
)
def test_bad_host_is_refused_naming_the_field(host: str) -> None:
    with pytest.raises(ValidationError) as info:
        SegmentSettings(write_key=KEY, host=host)
    assert _error_locations(info.value) == [("host",)]


def test_missing_write_key_is_an_error() -> None:
    with pytest.raises(ValidationError) as info:
        SegmentSettings.model_validate({})
    errors = info.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(("write_key",), "missing")]


@pytest.mark.parametrize("key", ["", "   ", "\n"])
def test_empty_write_key_is_an_error(key: str) -> None:
    with pytest.raises(ValidationError, match="not an empty string") as info:
        SegmentSettings(write_key=key)
    assert _error_locations(info.value) == [("write_key",)]


def test_write_key_whitespace_is_dropped() -> None:
    settings = SegmentSettings(write_key=f"  {KEY}\n")
    assert settings.write_key.get_secret_value() == KEY


def test_host_and_region_together_is_an_error_naming_both() -> None:
    with pytest.raises(ValidationError) as info:
        SegmentSettings.model_validate(
            {"write_key": KEY, "host": "https://segment.example.com", "region": "eu"}
        )
    message = str(info.value)
    assert "host" in message
    assert "region" in message
    assert "both" in message
    assert KEY not in message


def test_unknown_region_is_an_error() -> None:
    with pytest.raises(ValidationError) as info:
        SegmentSettings.model_validate({"write_key": KEY, "region": "ap"})
    assert _error_locations(info.value) == [("region",)]


def test_unknown_setting_is_an_error() -> None:
    with pytest.raises(ValidationError) as info:
        SegmentSettings.model_validate({"write_key": KEY, "writekey": KEY})
    assert _error_locations(info.value) == [("writekey",)]


def test_repr_and_str_hide_the_write_key() -> None:
    settings = SegmentSettings(write_key=KEY, region="eu", gzip=True)
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    assert "**********" in repr(settings)


@pytest.mark.parametrize(
    "table",
    [
        {"write_key": KEY, "host": "https://segment.example.com", "region": "us"},
        {"write_key": KEY, "host": f"not a url {KEY}"},
        {"write_key": KEY, "region": KEY},
        {"write_key": KEY, "writeKey": KEY},
        {"write_key": KEY, "gzip": KEY},
    ],
)
def test_validation_errors_never_echo_the_write_key(table: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        SegmentSettings.model_validate(table)
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)


def _registry() -> PluginRegistry:
    registry = PluginRegistry(entry_points=False)
    registry.register(event_router_segment, "segment")
    return registry


def test_router_config_error_names_destination_and_field() -> None:
    with pytest.raises(ConfigError) as info:
        Router({"segment": {"plugin": "segment"}}, plugins=_registry())
    assert info.value.problems == ("destinations.segment.write_key: Field required",)


def test_router_config_error_for_host_and_region_hides_the_key() -> None:
    table = {"plugin": "segment", "write_key": KEY, "host": "https://s.example.com", "region": "eu"}
    with pytest.raises(ConfigError) as info:
        Router({"eu_workspace": table}, plugins=_registry())
    (problem,) = info.value.problems
    assert problem.startswith(
        "destinations.eu_workspace.region: host and region ('eu') are both set"
    )
    assert KEY not in str(info.value)

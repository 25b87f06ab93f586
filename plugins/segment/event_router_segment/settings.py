"""The settings of one Segment destination, validated from its config table."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, PrivateAttr, SecretStr, ValidationInfo, field_validator

from router_core import DestinationSettings

__all__ = ["BATCH_PATH", "EU_HOST", "REGION_HOSTS", "US_HOST", "SegmentSettings"]

US_HOST = "https://api.segment.io"
EU_HOST = "https://events.eu1.segmentapis.com"
REGION_HOSTS: dict[str, str] = {"us": US_HOST, "eu": EU_HOST}
BATCH_PATH = "/v1/batch"


class SegmentSettings(DestinationSettings):
    """``[destinations.NAME]`` keys of a ``plugin = "segment"`` destination.

    ``write_key`` is the Segment source's write key (surrounding whitespace, such as a newline
    read from a secrets file, is dropped). ``host`` is any http(s) base URL, for self-hosted or
    Segment-compatible servers; ``region`` picks Segment's ``"us"`` or ``"eu"`` endpoint. Give
    one of the two, or neither for the US host. ``gzip`` compresses request bodies.
    """

    # Validation errors must never echo the input: it may hold the write key.
    model_config = ConfigDict(hide_input_in_errors=True)

    write_key: SecretStr
    host: str | None = None
    region: Literal["us", "eu"] | None = None
    gzip: bool = False

    _base_url: str = PrivateAttr(default=US_HOST)
    _batch_url: str = PrivateAttr(default=US_HOST + BATCH_PATH)

    @field_validator("write_key")
    @classmethod
    def _non_empty_key(cls, value: SecretStr) -> SecretStr:
        key = value.get_secret_value()
        stripped = key.strip()
        if not stripped:
            raise ValueError("must be the write key of your Segment source, not an empty string")
        return value if stripped == key else SecretStr(stripped)

    @field_validator("host")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The value is not echoed: a write key pasted into the wrong field must not leak.
            raise ValueError(f"must be an http(s) URL such as {US_HOST!r}")
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL, without a query or fragment")
        # The API path is appended to it, so "https://host/" and "https://host" are one host.
        return url.rstrip("/")

    @field_validator("region")
    @classmethod
    def _not_with_host(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Fields validate in order, so a valid host is already in info.data here.
        if value is not None and info.data.get("host") is not None:
            raise ValueError(
                f"host and region ({value!r}) are both set; give only one: "
                "host for a self-hosted or Segment-compatible server, region for Segment's "
                "us or eu endpoint"
            )
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._base_url = self.host or REGION_HOSTS[self.region or "us"]
        self._batch_url = self._base_url + BATCH_PATH

    @property
    def base_url(self) -> str:
        """The host requests go to, without a trailing slash (the US host by default)."""
        return self._base_url

    @property
    def batch_url(self) -> str:
        """The ``/v1/batch`` endpoint every request is posted to."""
        return self._batch_url
